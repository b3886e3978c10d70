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
    """A distinct (colour, marker) per name, stable in order: tab10's strong colours for up
    to 10 names, tab20 (pairs of a strong and a light shade) beyond."""
    plt = _plt()
    names = list(names)
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    markers = "osD^v<>ph*"
    return {n: (colours[i % len(colours)], markers[i % len(markers)])
            for i, n in enumerate(names)}


def _merge_identical(lines: dict) -> dict:
    """{label: points} with identical point lists merged under "a = b" so that a line
    hidden under another still shows in the legend."""
    groups = []                 # [labels, points], in the order of first appearance
    for label, pts in lines.items():
        same = next((g for g in groups if g[1] == pts), None)
        if same is None:
            groups.append([[label], pts])
        else:
            same[0].append(label)
    return {" = ".join(labels): pts for labels, pts in groups}


def _bytes_axis(ax):
    """Log byte axis (y) labelled in decimal SI units (kB, MB, GB, TB) at decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    from reports.format import nbytes
    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: nbytes(v)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _time_axis(ax, axis="y"):
    """Log time axis labelled in s / ms / µs at 1-2-5 steps."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    a.set_major_formatter(FuncFormatter(lambda v, _: _fmt_s(v)))
    a.set_minor_formatter(NullFormatter())


def _legend_right(ax, **kw):
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              borderaxespad=0, **kw)


# ---- the roofline --------------------------------------------------------------------------

def roofline_ceilings(gpu) -> tuple[dict, dict]:
    """(memory ceilings in B/s, compute ceilings in FLOP/s) the roofline draws, read from the
    GPU's fields in this one place: the achievable rates the timing model prices with
    (datasheet peak x the measured fraction of each source in hwmodels/gpus.py: HBM copy
    and L2 read bandwidth, large-GEMM throughput per dtype and path, FP32 lanes at the
    sustained clock)."""
    memory = {"HBM": gpu.hbm_bandwidth_bytes_per_s * gpu.hbm_achievable_fraction,
              "L2": gpu.l2_bytes_per_s()}
    fp16 = gpu.tensor_fp16_flops_per_s * gpu.gemm_fraction("fp16")
    compute = {}
    if gpu.has_wgmma:
        compute["fp16 tensor, wgmma"] = fp16
    compute["fp16 tensor, mma.sync"] = fp16 * gpu.mma_sync_fraction_of_peak
    if gpu.tensor_fp8_flops_per_s:
        compute["fp8 tensor"] = gpu.tensor_fp8_flops_per_s * gpu.gemm_fraction("fp8")
    compute["fp32 CUDA cores"] = 2 * gpu.fp32_lanes * gpu.sm_count * gpu.sustained_clock
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
        ax.loglog(x, [min(bw * v, top) for v in x], color="black", linestyle=ls, lw=1.2,
                  label=f"{label} roof, {bw / 1e12:.3g} TB/s")
    for label, peak in compute.items():
        ax.axhline(peak, color="grey", linestyle="--", lw=0.8)
        ax.annotate(f"{label}: {peak / 1e12:.0f} TFLOP/s", (hi / 1.1, peak * 1.06),
                    fontsize=7, ha="right", color="dimgray")
    for name, fwd, train in points:
        colour, marker = styles[name]
        ax.loglog([fwd.arithmetic_intensity], [fwd.flops / fwd.time.predicted_s], marker,
                  color=colour, ms=7, label=name, linestyle="none")
        if train is not None:
            ax.loglog([train.arithmetic_intensity], [train.flops / train.time.predicted_s],
                      marker, ms=8, linestyle="none", markerfacecolor="none", color=colour,
                      markeredgewidth=1.5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(min(min(compute.values()), min(f.flops / f.time.predicted_s
                                               for _, f, _ in points)) / 3, top * 2)
    ax.set_xlabel("arithmetic intensity (FLOP per HBM byte requested)")
    ax.set_ylabel("predicted throughput (FLOP/s)")
    ax.set_title(f"Roofline at achievable rates, {gpu.full_name}: filled = forward, hollow = "
                 f"forward + backward",
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
    groups = _merge_identical({s.name: (s.seqs, s.hbm_bytes) for s in drawn})
    first = {s.name: s for s in drawn}
    styles = _styles(groups)
    fig, ax = plt.subplots(figsize=WIDE)
    for label in groups:
        s = first[label.split(" = ")[0]]
        colour, marker = styles[label]
        fit, bound = s.fitted_exponent(), s.bound_exponent()
        slope = (f" (slope {fit:.2f}, bound {bound:.2f})" if fit is not None and bound
                 is not None else "")
        ax.loglog(s.seqs, s.hbm_bytes, marker=marker, color=colour, ms=4, lw=1.2,
                  label=label + slope)
        scale = s.hbm_bytes[-1] / s.io_bound_bytes[-1]
        ax.loglog(s.seqs, [b * scale for b in s.io_bound_bytes], linestyle="--",
                  color=colour, alpha=0.5, lw=1)
    _log2_ticks(ax, drawn[0].seqs if len(drawn) == 1 else sorted({n for s in drawn
                                                                   for n in s.seqs}))
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("HBM traffic (read + write)")
    _bytes_axis(ax)
    ax.set_title(f"HBM traffic against N, {gpu.full_name}\n(dashed: each IO bound, scaled "
                 "to meet the counts at the largest N; slopes fitted over the upper half)",
                 fontsize=10)
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
    groups = _merge_identical({s.name: (s.seqs, s.predicted_s) for s in drawn})
    styles = _styles(groups)
    fig, ax = plt.subplots(figsize=WIDE)
    for label, (seqs, times) in groups.items():
        colour, marker = styles[label]
        ax.loglog(seqs, times, marker=marker, color=colour, ms=4, lw=1.2, label=label)
    _log2_ticks(ax, sorted({n for s in drawn for n in s.seqs}))
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("predicted time")
    _time_axis(ax, "y")
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
    # colour and marker per algorithm, line style per dtype
    styles = _styles(dict.fromkeys(r["algorithm"] for r in records))
    dashes = dict(zip(dict.fromkeys(r["dtype"] for r in records), ("-", "--", ":", "-.")))
    for r in records:
        colour, marker = styles[r["algorithm"]]
        ax.semilogx(r["seqs"], [v / 1e12 for v in r["flops_per_s"]], marker=marker,
                    color=colour, linestyle=dashes[r["dtype"]],
                    label=f"{r['algorithm']} {r['dtype']}", lw=1.5)
    for dtype in sorted({r["dtype"] for r in records}):
        peak = gpu.tensor_flops_per_s(dtype)
        ax.axhline(peak / 1e12, color="grey", linestyle=":", lw=0.8)
        ax.annotate(f"{dtype} tensor peak {peak / 1e12:.0f} TFLOP/s",
                    (max(n for r in records for n in r["seqs"]), peak / 1e12),
                    xytext=(0, 3), textcoords="offset points", fontsize=8, ha="right",
                    va="bottom", color="dimgray")
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


def predicted_split(breakdown) -> dict:
    """The predicted time split exactly: per kernel, its body time goes to the resource that
    bounds it, the wave-quantization loss (body × (q − 1)) to "waves", per-CTA fixed costs
    to "fixed", launch overhead to "launch". The values sum to ``breakdown.predicted_s``."""
    split = defaultdict(float)
    for k in breakdown.kernels:
        split["launch" if k.bound == "launch" else k.bound] += k.body_s
        split["waves"] += k.body_s * (k.quantization - 1.0)
        split["fixed"] += getattr(k, "fixed_s", 0.0)
        split["launch"] += k.launch_s
    return dict(split)


def time_terms_figure(rows, gpu):
    """Per algorithm two bars, as fractions of its predicted time (written beside them):
    the upper splits the prediction by the resource bounding each kernel, plus the
    wave-quantization loss and launch overhead (it ends at 1); the lower stacks every term
    of the timing model alone (``timing_terms``), so what the overlap hides shows past 1."""
    results = [row.result for row in rows if row.result is not None]
    if not results:
        return None
    plt = _plt()
    terms = [timing_terms(r.time) for r in results]
    splits = [predicted_split(r.time) for r in results]
    names = [k for k in terms[0] if any(t.get(k, 0) > 0 for t in terms)]
    names += [k for sp in splits for k in sp if k not in names and k != "waves"]
    # the model has a dozen terms: ten distinct colours, then more from a second palette
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)
    colours = dict(zip(names, palette))
    colours["waves"] = "lightgrey"
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(results) + 1.7))
    y = list(range(len(results)))[::-1]
    seen = set()
    for r, t, sp, yi in zip(results, terms, splits, y):
        for bar_y, height, parts, alpha in ((yi + 0.17, 0.34, sp, 1.0),
                                            (yi - 0.19, 0.26, t, 0.55)):
            left = 0.0
            for k in names + ["waves"]:
                width = parts.get(k, 0.0) / r.time.predicted_s
                if width <= 0:
                    continue
                ax.barh(bar_y, width, left=left, height=height, color=colours[k],
                        alpha=alpha, edgecolor="white", lw=0.4,
                        hatch="//" if k == "waves" else None)
                seen.add(k)
                left += width
        right = max(1.0, sum(t.values()) / r.time.predicted_s)
        ax.annotate(f"{_fmt_s(r.time.predicted_s)}, {r.time.bound}", (right, yi),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([r.algorithm for r in results], fontsize=8)
    ax.set_xlim(0, max(max(1.0, sum(t.values()) / r.time.predicted_s)
                       for r, t in zip(results, terms)) * 1.22)
    ax.set_xlabel("fraction of the predicted time  (upper bar: the prediction, split by "
                  "bounding resource; lower bar: each term alone)")
    ax.set_title(f"Where the time goes, {gpu.full_name}", fontsize=10)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(facecolor=colours[k], hatch="//" if k == "waves" else None,
                             label=k) for k in names + ["waves"] if k in seen],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
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
    lines = _merge_identical({k: sorted(v) for k, v in lines.items()})
    styles = _styles(list(lines))
    fig, ax = plt.subplots(figsize=WIDE)
    for label, pts in lines.items():
        colour, marker = styles[label]
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour,
                  label=label, lw=1.3)
    _log2_ticks(ax, sorted({c for pts in lines.values() for c, _ in pts}))
    ax.set_xlabel("context length (cached tokens)")
    ax.set_ylabel("attention time per token, all layers")
    _time_axis(ax, "y")
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
    _time_axis(ax, "x")
    ax.set_xlabel("predicted time on the report's workload")
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
    ax.set_ylabel("resident HBM")
    _bytes_axis(ax)
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
