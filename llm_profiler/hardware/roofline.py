"""The roofline model: the time of a piece of work is bounded by compute or by memory traffic.

    compute_time = flops / (peak_flops[dtype] * flops_efficiency)
    memory_time  = bytes / (memory_bandwidth * bandwidth_efficiency)
    time         = max(compute_time, memory_time)
    bound        = "compute" if compute_time >= memory_time (and there is work) else "memory"
    intensity    = flops / bytes                                  (FLOP per byte)

The work is compute-bound exactly when its intensity reaches the device's ridge point
``peak * flops_efficiency / (bandwidth * bandwidth_efficiency)``; at the ridge both times are equal and the
bound is reported as "compute". Efficiency factors are explicit inputs in (0, 1]: the fraction of the
datasheet peak a real kernel reaches (e.g. 0.7 of peak FLOP/s for a large GEMM, 0.8 of peak bandwidth for a
streaming kernel). They default to 1: the roofline is then a lower bound on the time.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import QueryError
from .devices import DeviceSpec, get_device


class RooflinePoint(BaseModel):
    """One piece of work on one device: its FLOPs, bytes moved, roofline time and what bounds it."""

    model_config = ConfigDict(frozen=True)

    flops: int
    bytes: int
    time_s: float
    bound: Literal["compute", "memory"]
    intensity: float  # FLOP per byte; inf when no bytes move, 0 when nothing happens
    compute_time_s: float
    memory_time_s: float


def _check_efficiency(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise QueryError(f"{what} must be in (0, 1], got {value!r}")
    return float(value)


def _check_amount(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def ridge_point(
    device: DeviceSpec | str,
    dtype: str,
    flops_efficiency: float = 1.0,
    bandwidth_efficiency: float = 1.0,
) -> float:
    """Arithmetic intensity (FLOP/byte) above which work on ``device`` at ``dtype`` is compute-bound."""
    dev = get_device(device)
    fe = _check_efficiency("flops_efficiency", flops_efficiency)
    be = _check_efficiency("bandwidth_efficiency", bandwidth_efficiency)
    return dev.peak(dtype) * fe / (dev.memory_bandwidth * be)


def roofline_time(
    flops: int,
    bytes_moved: int,
    device: DeviceSpec | str,
    compute_dtype: str,
    flops_efficiency: float = 1.0,
    bandwidth_efficiency: float = 1.0,
) -> RooflinePoint:
    """Roofline time of ``flops`` FLOPs moving ``bytes_moved`` bytes on ``device`` computing in ``compute_dtype``."""
    _check_amount("flops", flops)
    _check_amount("bytes_moved", bytes_moved)
    dev = get_device(device)
    fe = _check_efficiency("flops_efficiency", flops_efficiency)
    be = _check_efficiency("bandwidth_efficiency", bandwidth_efficiency)
    compute_time = flops / (dev.peak(compute_dtype) * fe)
    memory_time = bytes_moved / (dev.memory_bandwidth * be)
    if bytes_moved:
        intensity = flops / bytes_moved
    else:
        intensity = math.inf if flops else 0.0
    return RooflinePoint(
        flops=flops,
        bytes=bytes_moved,
        time_s=max(compute_time, memory_time),
        bound="compute" if compute_time >= memory_time and flops else "memory",
        intensity=intensity,
        compute_time_s=compute_time,
        memory_time_s=memory_time,
    )


def utilization(
    measured_time_s: float,
    flops: int,
    bytes_moved: int,
    device: DeviceSpec | str,
    dtype: str,
) -> tuple[float, float]:
    """(MFU, MBU) of a measured run: achieved FLOP/s over peak, achieved bytes/s over peak bandwidth."""
    if (
        isinstance(measured_time_s, bool)
        or not isinstance(measured_time_s, (int, float))
        or not measured_time_s > 0
    ):
        raise QueryError(f"measured_time_s must be a positive number of seconds, got {measured_time_s!r}")
    _check_amount("flops", flops)
    _check_amount("bytes_moved", bytes_moved)
    dev = get_device(device)
    mfu = flops / measured_time_s / dev.peak(dtype)
    mbu = bytes_moved / measured_time_s / dev.memory_bandwidth
    return mfu, mbu
