"""Plots (matplotlib, optional: ``pip install 'attnsim[plot]'``)."""
from __future__ import annotations


def growth_plot(series, gpu, path: str) -> None:
    """HBM traffic against N on log-log axes, one line per algorithm, its bound dashed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'attnsim[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in series:
        if not s.seqs:
            continue
        line, = ax.loglog(s.seqs, s.hbm_bytes, marker="o", label=f"{s.name}")
        scale = s.hbm_bytes[-1] / s.io_bound_bytes[-1]
        ax.loglog(s.seqs, [b * scale for b in s.io_bound_bytes], linestyle="--",
                  color=line.get_color(), alpha=0.5)
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("HBM bytes (read + write)")
    ax.set_title(f"HBM traffic vs N on {gpu.full_name}\n(dashed: each algorithm's IO bound, "
                 "scaled to meet it at the largest N)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
