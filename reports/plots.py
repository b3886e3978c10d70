"""The report's figures (matplotlib, optional: ``pip install -e '.[plot]'``).

Each ``*_figure`` function takes plain data (results, records) and returns a matplotlib
Figure, or None when there is nothing to draw; ``reports.document.write_document`` saves
them. matplotlib is imported inside the functions, so importing this module never needs it.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

WIDE = (10, 5.2)            # figures with a legend outside the axes, on the right


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("figures need matplotlib: pip install -e '.[plot]'") from None
    return plt


def _styles(names):
    """A distinct (colour, marker) per name: 20 colours × 4 markers, stable in order."""
    plt = _plt()
    colours = plt.get_cmap("tab20").colors
    markers = "osD^v<>ph*"
    return {n: (colours[i % 20], markers[i % len(markers)]) for i, n in enumerate(names)}


def _legend_right(ax, **kw):
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              borderaxespad=0, **kw)


# ---- the roofline --------------------------------------------------------------------------

def roofline_ceilings(gpu) -> tuple[dict, dict]:
    """(memory ceilings in B/s, compute ceilings in FLOP/s or op/s) the roofline draws, read
    from the GPU's fields in this one place. Today these are datasheet peaks and the
    mma.sync derate; point this function at achievable rates where the GPU model has them."""
    memory = {"HBM": gpu.hbm_bandwidth_bytes_per_s, "L2": gpu.l2_bandwidth_bytes_per_s}
    fp16 = gpu.tensor_fp16_flops_per_s
    compute = {}
    if gpu.has_wgmma:
        compute["fp16 tensor, wgmma"] = fp16
        compute["fp16 tensor, mma.sync"] = fp16 * gpu.mma_sync_fraction_of_peak
    else:
        compute["fp16 tensor, mma.sync"] = fp16 * gpu.mma_sync_fraction_of_peak
    if gpu.tensor_fp8_flops_per_s:
        compute["fp8 tensor"] = gpu.tensor_fp8_flops_per_s
    compute["fp32 CUDA cores"] = gpu.fp32_flops_per_s
    compute["exp (SFU), op/s"] = gpu.sfu_ops_per_s
    return memory, compute


def roofline_figure(gpu, rows):
    """Every algorithm placed by arithmetic intensity (FLOPs ÷ HBM bytes requested) and
    predicted throughput (FLOPs ÷ predicted time): filled marker the forward pass, hollow
    the forward + backward; lines the memory roofs and dashed the compute ceilings."""
    points = [(row.name, row.result, row.training) for row in rows if row.result is not None]
    if not points:
        return None
    plt = _plt()
    styles = _styles([p[0] for p in points])
    memory, compute = roofline_ceilings(gpu)
    fig, ax = plt.subplots(figsize=WIDE)
    intensities = [r.arithmetic_intensity for _, f, t in points for r in (f, t) if r]
    lo = min(0.5, min(intensities) / 2)
    hi = max(4e3, max(intensities) * 2)
    x = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    top = max(compute.values())
    for (label, bw), ls in zip(memory.items(), ("-", "-.")):
        ax.loglog(x, [min(bw * v, top) for v in x], color="black", linestyle=ls, lw=1.2)
        ax.annotate(f"{label} {bw / 1e12:.3g} TB/s", (lo * 1.15, bw * lo * 1.4), fontsize=8,
                    rotation=0)
    for label, peak in compute.items():
        ax.axhline(peak, color="grey", linestyle="--", lw=0.8)
        ax.annotate(f"{label}: {peak / 1e12:.3g} T", (hi / 1.1, peak * 1.06), fontsize=7,
                    ha="right", color="dimgray")
    for name, fwd, train in points:
        colour, marker = styles[name]
        ax.loglog([fwd.arithmetic_intensity], [fwd.flops / fwd.time.predicted_s], marker,
                  color=colour, ms=7, label=name, linestyle="none")
        if train is not None:
            ax.loglog([train.arithmetic_intensity], [train.flops / train.time.predicted_s],
                      marker, ms=8, linestyle="none", markerfacecolor="none", color=colour,
                      markeredgewidth=1.5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(min(gpu.sfu_ops_per_s, min(f.flops / f.time.predicted_s
                                          for _, f, _ in points)) / 3, top * 2)
    ax.set_xlabel("arithmetic intensity (FLOP per HBM byte requested)")
    ax.set_ylabel("predicted throughput (FLOP/s)")
    ax.set_title(f"Roofline, {gpu.full_name}: filled = forward, hollow = forward + backward",
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return fig


# ---- HBM traffic, time and throughput against N ---------------------------------------------

def _series_names(series):
    return [s.name for s in series if s.seqs]


def growth_figure(series, gpu):
    """HBM traffic against N on log-log axes, one line per algorithm; dashed: its IO bound
    scaled to meet it at the largest N; the legend gives the fitted and the bound's slope."""
    drawn = [s for s in series if s.seqs]
    if not drawn:
        return None
    plt = _plt()
    styles = _styles(_series_names(series))
    fig, ax = plt.subplots(figsize=WIDE)
    for s in drawn:
        colour, marker = styles[s.name]
        fit, bound = s.fitted_exponent(), s.bound_exponent()
        slope = (f" (slope {fit:.2f}, bound {bound:.2f})" if fit is not None and bound
                 is not None else "")
        ax.loglog(s.seqs, s.hbm_bytes, marker=marker, color=colour, ms=4, lw=1.2,
                  label=s.name + slope)
        scale = s.hbm_bytes[-1] / s.io_bound_bytes[-1]
        ax.loglog(s.seqs, [b * scale for b in s.io_bound_bytes], linestyle="--",
                  color=colour, alpha=0.5, lw=1)
    _log2_ticks(ax, drawn[0].seqs if len(drawn) == 1 else sorted({n for s in drawn
                                                                   for n in s.seqs}))
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("HBM bytes (read + write)")
    ax.set_title(f"HBM traffic against N, {gpu.full_name} (dashed: each IO bound, scaled to "
                 "meet the counts at the largest N)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return fig


def _log2_ticks(ax, seqs):
    ax.set_xticks(seqs)
    ax.set_xticklabels([f"{n // 1024}K" if n % 1024 == 0 else str(n) for n in seqs])
    ax.minorticks_off()


def time_vs_n_figure(series, gpu):
    """Predicted time against N (log-log), one line per algorithm."""
    drawn = [s for s in series if s.seqs and s.predicted_s]
    if not drawn:
        return None
    plt = _plt()
    styles = _styles(_series_names(series))
    fig, ax = plt.subplots(figsize=WIDE)
    for s in drawn:
        colour, marker = styles[s.name]
        ax.loglog(s.seqs, s.predicted_s, marker=marker, color=colour, ms=4, lw=1.2,
                  label=s.name)
    _log2_ticks(ax, sorted({n for s in drawn for n in s.seqs}))
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("predicted time (s)")
    ax.set_title(f"Predicted time against N, {gpu.full_name}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return fig


def throughput_figure(records, gpu):
    """Predicted TFLOP/s against N at a fixed number of tokens (records of
    ``attnsim.suite.throughput_sweep``); dashed: the dtype's tensor peak."""
    if not records:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    styles = _styles([f"{r['algorithm']} {r['dtype']}" for r in records])
    for r in records:
        key = f"{r['algorithm']} {r['dtype']}"
        colour, marker = styles[key]
        ax.semilogx(r["seqs"], [v / 1e12 for v in r["flops_per_s"]], marker=marker,
                    color=colour, label=key, lw=1.5)
    for dtype in sorted({r["dtype"] for r in records}):
        peak = gpu.tensor_flops_per_s(dtype)
        ax.axhline(peak / 1e12, color="grey", linestyle="--", lw=0.8)
        ax.annotate(f"{dtype} tensor peak {peak / 1e12:.0f} TFLOP/s",
                    (records[0]["seqs"][0], peak / 1e12), fontsize=8, va="bottom",
                    color="dimgray")
    _log2_ticks(ax, sorted({n for r in records for n in r["seqs"]}))
    ax.set_ylim(0, max(gpu.tensor_flops_per_s(r["dtype"]) for r in records) / 1e12 * 1.12)
    ax.set_xlabel("sequence length N (tokens; batch × N fixed)")
    ax.set_ylabel("predicted TFLOP/s")
    ax.set_title(f"FlashAttention-2/3 throughput against N, {gpu.full_name}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return fig


# ---- where the time goes -------------------------------------------------------------------

def timing_terms(breakdown) -> dict:
    """The timing model's additive terms of a breakdown, read generically: every float field
    named ``*_s`` except the total, so terms the model gains appear without a change here."""
    return {f.name[:-2]: getattr(breakdown, f.name) for f in dataclasses.fields(breakdown)
            if f.name.endswith("_s") and f.name != "predicted_s"
            and isinstance(getattr(breakdown, f.name), float)}


def time_terms_figure(rows, gpu):
    """Per algorithm, a horizontal bar stacking the timing model's terms, each divided by
    the predicted time: a bar past 1 shows how much the model overlaps (max, not sum); the
    predicted time is written beside it."""
    results = [row.result for row in rows if row.result is not None]
    if not results:
        return None
    plt = _plt()
    terms = [timing_terms(r.time) for r in results]
    names = [k for k in terms[0] if any(t.get(k, 0) > 0 for t in terms)]
    colours = dict(zip(names, plt.get_cmap("Set2").colors))
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(results) + 1.6))
    y = list(range(len(results)))[::-1]
    for r, t, yi in zip(results, terms, y):
        left = 0.0
        for k in names:
            width = t.get(k, 0.0) / r.time.predicted_s
            ax.barh(yi, width, left=left, color=colours[k], edgecolor="white", lw=0.5,
                    label=k if yi == y[0] else None)
            left += width
        ax.annotate(f"{_fmt_s(r.time.predicted_s)}, {r.time.bound}", (left, yi),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([r.algorithm for r in results], fontsize=8)
    ax.set_xlim(0, max(sum(t.values()) / r.time.predicted_s for r, t in zip(results, terms))
                * 1.25)
    ax.set_xlabel("term ÷ predicted time (each kernel's unoverlapped terms, summed; "
                  "the line at 1 is the prediction)")
    ax.set_title(f"Where the time goes, {gpu.full_name}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, ncol=len(names))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} µs"


# ---- decoding ------------------------------------------------------------------------------

def decode_figure(records, gpu):
    """Attention time per generated token against the context length, one line per model
    and decoder — whatever the decode section's records hold (``model``, ``algorithm``,
    ``context``, ``decode.attention_only_s``)."""
    lines = defaultdict(list)
    for rec in records:
        t = (rec.get("decode") or {}).get("attention_only_s")
        if t:
            lines[f"{rec['model']} ({rec['algorithm']})"].append((rec["context"], t))
    if not lines:
        return None
    plt = _plt()
    styles = _styles(list(lines))
    fig, ax = plt.subplots(figsize=WIDE)
    for label, pts in lines.items():
        pts.sort()
        colour, marker = styles[label]
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour,
                  label=label, lw=1.3)
    _log2_ticks(ax, sorted({c for pts in lines.values() for c, _ in pts}))
    ax.set_xlabel("context length (cached tokens)")
    ax.set_ylabel("attention time per token, all layers (s)")
    ax.set_title(f"Decoding, batch 1: attention per generated token, {gpu.full_name}",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return fig


# ---- approximations: error against cost ----------------------------------------------------

def approx_figure(records, gpu, exact_label=None, exact_s=None):
    """Relative error against exact attention vs predicted time, one line per approximate
    algorithm through its knob's values (records of ``attnsim.suite.approx_cost_accuracy``);
    the dotted vertical line: an exact kernel's time on the same workload."""
    lines = defaultdict(list)
    for rec in records:
        lines[(rec["algorithm"], rec["option"])].append(rec)
    if not lines:
        return None
    plt = _plt()
    styles = _styles([a for a, _ in lines])
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for (name, option), recs in lines.items():
        recs.sort(key=lambda r: r["value"])
        colour, marker = styles[name]
        xs, ys = [r["predicted_s"] for r in recs], [r["error_vs_exact"] for r in recs]
        ax.loglog(xs, ys, marker=marker, color=colour, label=f"{name} ({option})", lw=1.3)
        for r, x_, y_ in zip(recs, xs, ys):
            ax.annotate(str(r["value"]), (x_, y_), xytext=(4, 3), textcoords="offset points",
                        fontsize=7, color=colour)
    if exact_s:
        ax.axvline(exact_s, color="black", linestyle=":", lw=1)
        ax.annotate(f"{exact_label} (exact)", (exact_s, ax.get_ylim()[1]), xytext=(-4, -12),
                    textcoords="offset points", ha="right", fontsize=8)
    ax.set_xlabel("predicted time on the report's workload (s)")
    ax.set_ylabel("relative error vs exact attention")
    ax.set_title(f"Approximations: error against cost (labels: features or hashes), "
                 f"{gpu.full_name}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return fig


# ---- resident HBM (the footprint model's figure) -------------------------------------------

def resident_hbm_figure(series: dict, capacity_bytes: float, gpu_name: str):
    """Resident HBM bytes against N, one line per algorithm, with the GPU's capacity drawn.

    Arguments:
        series: {algorithm: [(N, resident bytes), ...]}.
        capacity_bytes: the GPU's HBM capacity (``gpu.hbm_bytes``).
        gpu_name: for the title.
    """
    series = {k: sorted(v) for k, v in series.items() if v}
    if not series:
        return None
    plt = _plt()
    styles = _styles(list(series))
    fig, ax = plt.subplots(figsize=WIDE)
    for name, pts in series.items():
        colour, marker = styles[name]
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour,
                  label=name, lw=1.3)
    ax.axhline(capacity_bytes, color="red", lw=1.2)
    ax.annotate(f"HBM capacity {capacity_bytes / 2**30:.0f} GiB",
                (min(p[0] for pts in series.values() for p in pts), capacity_bytes),
                xytext=(2, 4), textcoords="offset points", color="red", fontsize=8)
    _log2_ticks(ax, sorted({p[0] for pts in series.values() for p in pts}))
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("resident HBM (bytes)")
    ax.set_title(f"Resident HBM against N, {gpu_name}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend_right(ax)
    fig.tight_layout()
    return fig


# ---- the historical --plot ---------------------------------------------------------------

def growth_plot(series, gpu, path: str) -> None:
    """``report --plot FILE``: the HBM-traffic figure written to ``path``."""
    fig = growth_figure(series, gpu)
    if fig is None:
        raise ValueError("--plot: no algorithm ran on this workload, nothing to plot")
    fig.savefig(path, dpi=120)
    _plt().close(fig)
