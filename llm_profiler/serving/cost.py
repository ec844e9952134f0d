"""Dollars and joules per token.

**Price.** $ per GPU-hour, user-supplied (``cost_per_hour``) or a default for three devices: the middle of
the "specialty cloud" on-demand range of Mercatus' cloud GPU pricing guide (May 2026,
https://www.mercatus-ai.com/blog/cloud-gpu-pricing: A100 80GB $1.10-1.50, H100 SXM5 $2.50-3.50,
H200 SXM5 $3.50-4.50 per GPU-hour), which agrees with pricegpu's early-2026 on-demand ranges
(https://pricegpu.pages.dev/blog/h100-vs-a100-cloud-price: A100 80GB $1.49-2.49, H100 SXM $2.49-3.99).
Prices move by 2-5x between providers and terms (spot, reserved, hyperscaler); pass your own. Devices
without a default get no dollar figures unless a price is given.

$ per million tokens = price x simulated hours / tokens x 1e6. The time of each step is split between its
prefill (input) and decode (output) tokens by their share of the step's FLOPs (a pure decode step is all
output, a pure prefill step all input); idle time is split the same way as the busy time. Also reported:
$ per million tokens of either kind with the whole bill charged to it (how price lists quote one side).

**Energy.** Busy time (engine steps) at the device's board power (TDP, the table below, from the vendors'
datasheets: "max thermal design power"), idle time (no request in the system) at an idle floor,
``idle_fraction`` x TDP (default 0.15: an assumption, not a measurement; datacenter GPUs idle at roughly
10-20% of their TDP). The roofline runs every node at the peak of its bound resource, so a busy device is
modelled at full board power: an upper bound for memory-bound decode, which draws less in practice.
Joules per token = energy / tokens.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import QueryError

_MERCATUS = "Mercatus cloud GPU pricing guide, May 2026, specialty-cloud on-demand range midpoint, https://www.mercatus-ai.com/blog/cloud-gpu-pricing"
GPU_HOUR_USD: dict[str, tuple[float, str]] = {
    "A100-80GB": (1.30, _MERCATUS + " ($1.10-1.50)"),
    "H100-SXM": (3.00, _MERCATUS + " ($2.50-3.50)"),
    "H200": (4.00, _MERCATUS + " ($3.50-4.50)"),
}

_NV = "NVIDIA datasheet, max thermal design power"
_AMD = "AMD Instinct data sheet, total board power"
# device name (llm_profiler.hardware.devices) -> (watts, source)
TDP_W: dict[str, tuple[float, str]] = {
    "A100-40GB": (400, _NV + " (A100 SXM: 400 W)"),
    "A100-80GB": (400, _NV + " (A100 80GB SXM: 400 W)"),
    "A100-80GB-PCIe": (300, _NV + " (A100 80GB PCIe: 300 W)"),
    "H100-SXM": (700, _NV + " (H100 SXM: up to 700 W)"),
    "H100-PCIe": (350, _NV + " (H100 PCIe: 300-350 W; the upper figure)"),
    "H100-NVL": (400, _NV + " (H100 NVL: 350-400 W; the upper figure)"),
    "H200": (700, _NV + " (H200 SXM: up to 700 W)"),
    "H200-NVL": (600, _NV + " (H200 NVL: up to 600 W)"),
    "L4": (72, _NV + " (L4: 72 W)"),
    "L40": (300, _NV + " (L40: 300 W)"),
    "L40S": (350, _NV + " (L40S: 350 W)"),
    "A10": (150, _NV + " (A10: 150 W)"),
    "RTX-4090": (450, "NVIDIA GeForce RTX 4090 specifications, total graphics power 450 W"),
    "MI300X": (750, _AMD + " (MI300X: 750 W)"),
    "MI325X": (1000, _AMD + " (MI325X: 1000 W)"),
}
IDLE_FRACTION = 0.15


def _positive(value: Any, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise QueryError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return float(value)


def gpu_hour_price(device_name: str, cost_per_hour: float | None = None) -> tuple[float | None, str]:
    """($ per GPU-hour or None, its source)."""
    if cost_per_hour is not None:
        return _positive(cost_per_hour, "cost_per_hour ($ per GPU-hour)"), "user-supplied"
    if device_name in GPU_HOUR_USD:
        return GPU_HOUR_USD[device_name]
    return None, f"no default price for {device_name}; pass cost_per_hour (--cost-per-hour)"


def tdp_watts(device_name: str, tdp: float | None = None) -> tuple[float | None, str]:
    if tdp is not None:
        return _positive(tdp, "tdp_watts"), "user-supplied"
    if device_name in TDP_W:
        return TDP_W[device_name]
    return None, f"no TDP on record for {device_name}; pass tdp_watts (--tdp)"


class CostReport(BaseModel):
    """Dollars and energy of a simulated run (see the module docstring for the model and sources)."""

    model_config = ConfigDict(frozen=True)

    gpus: int = 1
    usd_per_gpu_hour: float | None = None
    price_source: str = ""
    usd_total: float | None = None
    usd_per_million_input: float | None = None  # input's share of the time (by FLOPs per step)
    usd_per_million_output: float | None = None  # output's share of the time
    usd_per_million_tokens: float | None = None  # input + output tokens, the whole bill
    usd_per_million_output_all: float | None = None  # the whole bill over the output tokens only
    tdp_watts: float | None = None
    idle_watts: float | None = None
    power_source: str = ""
    energy_j: float | None = None
    joules_per_output_token: float | None = None
    joules_per_token: float | None = None  # input + output tokens


def cost_report(device_name: str, *, busy_s: float, idle_s: float, input_tokens: int, output_tokens: int,
                input_share: float, cost_per_hour: float | None = None, tdp: float | None = None,
                idle_fraction: float = IDLE_FRACTION, gpus: int = 1) -> CostReport:
    """Dollars and joules of ``busy_s`` seconds of steps and ``idle_s`` idle seconds on ``gpus`` devices;
    ``input_share``: the fraction of the busy time attributed to the input (prefill) tokens."""
    _positive(busy_s, "busy_s", allow_zero=True)
    _positive(idle_s, "idle_s", allow_zero=True)
    frac = _positive(idle_fraction, "idle_fraction", allow_zero=True)
    if frac > 1:
        raise QueryError(f"idle_fraction must be in [0, 1], got {idle_fraction}")
    if not 0 <= input_share <= 1:
        raise QueryError(f"input_share must be in [0, 1], got {input_share}")
    price, price_source = gpu_hour_price(device_name, cost_per_hour)
    watts, power_source = tdp_watts(device_name, tdp)
    hours = (busy_s + idle_s) / 3600
    out: dict[str, Any] = {"gpus": gpus, "usd_per_gpu_hour": price, "price_source": price_source,
                           "power_source": power_source}
    tokens = input_tokens + output_tokens
    if price is not None:
        usd = price * hours * gpus
        out["usd_total"] = usd
        if input_tokens:
            out["usd_per_million_input"] = usd * input_share / input_tokens * 1e6
        if output_tokens:
            out["usd_per_million_output"] = usd * (1 - input_share) / output_tokens * 1e6
            out["usd_per_million_output_all"] = usd / output_tokens * 1e6
        if tokens:
            out["usd_per_million_tokens"] = usd / tokens * 1e6
    if watts is not None:
        idle = watts * frac
        energy = (watts * busy_s + idle * idle_s) * gpus
        out.update(tdp_watts=watts, idle_watts=idle, energy_j=energy)
        if output_tokens:
            out["joules_per_output_token"] = energy / output_tokens
        if tokens:
            out["joules_per_token"] = energy / tokens
    return CostReport(**out)


__all__ = ["GPU_HOUR_USD", "IDLE_FRACTION", "TDP_W", "CostReport", "cost_report", "gpu_hour_price", "tdp_watts"]
