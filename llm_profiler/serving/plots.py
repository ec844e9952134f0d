"""Serving plots (the ``plot`` extra, matplotlib imported lazily): latency CDFs of one run, and throughput and
p99 TTFT against the arrival rate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..report.plots import plot_target, pyplot, save_figure

if TYPE_CHECKING:
    from .simulator import RatePoint, ServeResult

_SERIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "inter-token"), ("e2e", "end-to-end"))


def plot_serving(result: ServeResult, path: str | Path, points: list[RatePoint] | None = None,
                 slo_ttft_s: float | None = None, saturation_rate: float | None = None) -> Path:
    """Latency CDFs of ``result`` (log time axis); with ``points``, also output tokens/s and p99 TTFT against
    the arrival rate (the SLO as a dashed line, the saturation rate as a dotted one)."""
    target = plot_target(path)
    plt = pyplot()
    panels = 3 if points else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    for key, label in _SERIES:
        values = np.sort(np.asarray(result.raw.get(key, np.zeros(0)), dtype=np.float64))
        values = values[values > 0]
        if values.size:
            ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("fraction of requests (tokens for inter-token)")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("latency CDFs" + (f" at {result.requests_per_s:.3g} requests/s served" if result.duration_s else ""),
                 fontsize=9)
    fig.suptitle(f"{result.model} on {result.device} ({result.engine}): {result.workload}", fontsize=8)
    if points:
        rates = [p.rate for p in points]
        ax2 = axes[1]
        ax2.plot(rates, [p.output_tokens_per_s for p in points], "o-", label="output tokens/s")
        ax2.set_xlabel("arrival rate (requests/s)")
        ax2.set_ylabel("output tokens/s")
        ax2.grid(alpha=0.3)
        ax2.set_title("throughput against arrival rate", fontsize=9)
        ax3 = axes[2]
        ax3.plot(rates, [p.ttft_p99_s for p in points], "o-", color="#C44E52", label="p99 TTFT")
        if slo_ttft_s is not None:
            ax3.axhline(slo_ttft_s, ls="--", color="gray", label=f"SLO {slo_ttft_s:g} s")
        ax3.set_yscale("log")
        ax3.set_xlabel("arrival rate (requests/s)")
        ax3.set_ylabel("p99 TTFT (s)")
        ax3.grid(alpha=0.3)
        ax3.legend(fontsize=8)
        ax3.set_title("p99 time to first token against arrival rate", fontsize=9)
        if saturation_rate:
            for a in (ax2, ax3):
                a.axvline(saturation_rate, ls=":", color="gray", label=f"saturation {saturation_rate:.3g}/s")
            ax2.legend(fontsize=8)
            ax3.legend(fontsize=8)
    return save_figure(fig, plt, target)


__all__ = ["plot_serving"]
