"""Rate-distortion plots (matplotlib, optional: `pip install nnr[rd]`)."""
from nnr.errors import NNRError


class PlotUnavailableError(NNRError, ImportError):
    """matplotlib is not installed."""


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError("plots need matplotlib: pip install 'nnr[rd]' (or pip install matplotlib)") from None
    return plt


def plot_rd(points, path, metric_name=None, title=None, extra=None):
    """Write a PNG: bits/parameter against PSNR (and the metric in a second panel when the points
    carry one). Points are grouped into curves by label suffix (DQ / URQ) unless `extra` gives more
    curves as {name: [RDPoint]}."""
    plt = _pyplot()
    curves = {}
    for p in points:
        curves.setdefault("DQ on" if p.dq else "DQ off", []).append(p)
    for name, pts in (extra or {}).items():
        curves[name] = list(pts)
    has_metric = metric_name is not None and any(p.metric is not None for pts in curves.values() for p in pts)
    fig, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(11 if has_metric else 6, 4.2), squeeze=False)
    ax = axes[0][0]
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p.bits_per_param)
        ax.plot([p.bits_per_param for p in pts], [p.psnr for p in pts], marker="o", label=name)
    ax.set_xlabel("bits per parameter")
    ax.set_ylabel("weight PSNR (dB, peak = max |w| per tensor)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if has_metric:
        ax = axes[0][1]
        for name, pts in curves.items():
            pts = sorted((p for p in pts if p.metric is not None), key=lambda p: p.bits_per_param)
            ax.plot([p.bits_per_param for p in pts], [p.metric for p in pts], marker="o", label=name)
        ax.set_xlabel("bits per parameter")
        ax.set_ylabel(metric_name)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
