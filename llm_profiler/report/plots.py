"""Plots (optional extra ``llm-profiler[plot]``): matplotlib is imported lazily, with the Agg backend.

Every function writes one file (``.png``, ``.svg`` or ``.pdf``, chosen by the suffix) and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import metrics as M
from ..errors import ProfilerError, QueryError
from ..graph.node import ATTN, MLP, NodeKind
from ..scopes import TRANSFORMER
from .units import human

if TYPE_CHECKING:
    from ..hardware import DeviceSpec
    from ..profile import ModelProfile, Profile

SUFFIXES = (".png", ".svg", ".pdf")
PARTS = ("attn", "mlp", "norms", "other")
_COLORS = {"attn": "#4C72B0", "mlp": "#DD8452", "norms": "#55A868", "other": "#8C8C8C"}


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ProfilerError("plots need matplotlib: pip install 'llm-profiler[plot]'") from None
    matplotlib.use("Agg")  # files only, never a window (works headless)
    import matplotlib.pyplot as plt

    return plt


def plot_target(path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() not in SUFFIXES:
        raise QueryError(f"plot file {str(out)!r} must end in one of {', '.join(SUFFIXES)}")
    if not out.parent.exists():
        raise QueryError(f"cannot write plot {str(out)!r}: folder {str(out.parent)!r} does not exist")
    return out


def save_figure(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as err:
        raise ProfilerError(f"cannot write plot {str(path)!r}: {err.strerror or err}") from None
    finally:
        plt.close(fig)
    return path


def _human_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: human(int(value), digits=1) if value >= 1 else f"{value:g}")


def _part(block: str | None, kind: str) -> str:
    if block == ATTN:
        return "attn"
    if block == MLP:
        return "mlp"
    return "norms" if kind == NodeKind.NORM else "other"


def layer_parts(profile: Profile, metric: str) -> dict[int, dict[str, int]]:
    """layer -> part (attn, mlp, norms, other) -> exact count: the data of ``plot_layers``."""
    metric = M.canonical(metric)
    out: dict[int, dict[str, int]] = {}
    for node in profile.model.nodes:
        if node.layer is None:
            continue
        parts = out.setdefault(node.layer, dict.fromkeys(PARTS, 0))
        parts[_part(node.block, node.kind)] += profile.values[node.path][metric]
    return out


def plot_layers(profile: Profile, metric: str, path: str | Path) -> Path:
    """Stacked bars per decoder layer: attention, MLP, norms and the rest (residual adds, ...)."""
    metric = M.canonical(metric)
    target = plot_target(path)
    data = layer_parts(profile, metric)
    plt = pyplot()
    layers = sorted(data)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(layers) + 3), 4))
    bottom = [0.0] * len(layers)
    for part in PARTS:
        heights = [float(data[i][part]) for i in layers]
        if any(heights):
            ax.bar(layers, heights, bottom=bottom, label=part, color=_COLORS[part], width=0.8)
            bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xlabel("layer")
    ax.set_ylabel(M.LABELS[metric])
    ax.set_title(f"{profile.spec.name}: {M.LABELS[metric]} per layer "
                 f"(B={profile.batch}, S={profile.seq}, P={profile.past})", fontsize=10)
    ax.yaxis.set_major_formatter(_human_formatter())
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # outside: bars reach the top
    ax.margins(x=0.01)
    return save_figure(fig, plt, target)


def plot_seq_curve(model_profile: ModelProfile, metric: str, seqs: Sequence[int], path: str | Path,
                   batch: int = 1, scope: str | None = TRANSFORMER) -> Path:
    """``metric`` against sequence length: prefill (S=seq, P=0) and one decode step (S=1, P=seq)."""
    metric = M.canonical(metric)
    target = plot_target(path)
    xs = sorted({int(s) for s in seqs})
    if not xs:
        raise QueryError("plot_seq_curve needs at least one sequence length")
    # Exact Python ints (count), converted to float only for drawing.
    prefill = [float(model_profile.count(metric, scope, batch, s, 0)) for s in xs]
    decode = [float(model_profile.count(metric, scope, batch, 1, s)) for s in xs]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(xs, prefill, marker="o", label="prefill (S = seq, P = 0)")
    ax.plot(xs, decode, marker="s", label="decode step (S = 1, P = seq)")
    if len(xs) > 1 and xs[-1] / xs[0] >= 16:
        ax.set_xscale("log", base=2)
    if min(prefill + decode) > 0:
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_human_formatter())
    ax.set_xlabel("sequence length")
    ax.set_ylabel(f"{M.LABELS[metric]} ({scope or TRANSFORMER})")
    ax.set_title(f"{model_profile.spec.name}: {M.LABELS[metric]} vs sequence length (B={batch})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, plt, target)


def plot_roofline(points: Sequence[tuple[str, int, int]], device: DeviceSpec | str, compute_dtype: str,
                  path: str | Path, flops_efficiency: float = 1.0, bandwidth_efficiency: float = 1.0) -> Path:
    """A roofline chart: attainable FLOP/s against arithmetic intensity, with each (label, flops, bytes)
    point placed at its intensity on the roof (the best the device can do for it). Points sharing a label
    share a colour and one legend entry (e.g. every node of one kind)."""
    from ..hardware import get_device, ridge_point

    target = plot_target(path)
    dev = get_device(device)
    peak = dev.peak(compute_dtype) * flops_efficiency
    bandwidth = dev.memory_bandwidth * bandwidth_efficiency
    ridge = ridge_point(dev, compute_dtype, flops_efficiency, bandwidth_efficiency)
    placed = []
    for label, flops, nbytes in points:
        if flops <= 0 or nbytes <= 0:
            raise QueryError(f"roofline point {label!r} needs positive flops and bytes, got {flops} and {nbytes}")
        intensity = flops / nbytes
        placed.append((label, intensity, min(peak, bandwidth * intensity)))
    plt = pyplot()
    lo = min([ridge / 100, *(i / 2 for _, i, _ in placed)])
    hi = max([ridge * 100, *(i * 2 for _, i, _ in placed)])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.loglog([lo, ridge, hi], [bandwidth * lo, peak, peak], color="black", linewidth=1.5, label="roof")
    ax.axvline(ridge, color="gray", linestyle="--", linewidth=0.8)
    ax.annotate(f"ridge {ridge:.0f} FLOP/B", (ridge, peak), textcoords="offset points", xytext=(4, -14), fontsize=8)
    for label in dict.fromkeys(label for label, _, _ in placed):
        mine = [(i, a) for name, i, a in placed if name == label]
        ax.plot([i for i, _ in mine], [a for _, a in mine], marker="o", linestyle="none", label=label, alpha=0.8)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.set_title(f"roofline: {dev.name}, {compute_dtype}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, plt, target)


__all__ = ["layer_parts", "plot_layers", "plot_roofline", "plot_seq_curve", "plot_target", "pyplot", "save_figure"]
