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
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


# ---------------------------------------------------------------- the device model (issue 18)
#
# A roofline whose rates are those of the kernels a forward runs, not one peak and one copy bandwidth:
#
#     time(node) = max(matmul FLOPs / gemm_rate(class, dtype, M) + other FLOPs / vector rate,
#                      bytes / bandwidth(class, dtype))
#                  + ops(node) x per_op_s
#
# ``gemm_rate`` interpolates measured (or datasheet-derived) FLOP/s at a grid of M (rows of the activation
# operand: the tokens of a projection, the query rows of an attention matmul) linearly in log2(M), clamped
# to the ends of the grid. Kernel classes: ``linear`` (a weight matmul in nn.Linear's layout, weights
# streamed at the GEMV bandwidth), ``bmm`` (attention's batched matmuls, head_dim-deep), ``elementwise``
# (everything else: norms, rope, softmax, residuals, copies, at the elementwise bandwidth).

KERNEL_CLASSES = ("linear", "bmm", "elementwise")
# glibc's malloc serves a request of at least M_MMAP_THRESHOLD bytes with a fresh mmap and unmaps it on free;
# the threshold, 128 KiB at first, rises to the largest such block freed, up to DEFAULT_MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 *
# sizeof(long) = 32 MiB on 64-bit (mallopt(3), "M_MMAP_THRESHOLD"): in a process that has run a forward
# before, its outputs of 32 MiB or more are written into new pages on every call, smaller ones into reused heap.
GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
# Which outputs of an eager forward land in freshly mapped pages depends on the process's allocator:
# ``glibc``, glibc's default dynamic malloc (the steady state above: outputs of at least the threshold; what
# a smaller block gets depends on the heap's history: a trimmed top maps it afresh, a free hole reuses pages);
# ``retaining``, an allocator that keeps freed memory mapped (jemalloc or tcmalloc preloaded, or glibc told so:
# ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...``): nothing fresh after a warm-up.
Allocator = Literal["glibc", "retaining"]
ALLOCATORS: tuple[str, ...] = get_args(Allocator)


class _Curve(BaseModel):
    """Positive rates at an ascending grid of positive points, checked when built (a QueryError naming it)."""

    model_config = ConfigDict(frozen=True)

    WHAT: ClassVar[str]  # "rate curve"
    POINTS: ClassVar[str]  # what the grid holds: "M values"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:  # a QueryError raised in the check arrives wrapped: unwrap it
            raise QueryError(f"bad {self.WHAT}: {err.errors()[0]['msg']}") from None

    def grid(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        raise NotImplementedError  # pragma: no cover - each curve names its fields

    def model_post_init(self, _: object) -> None:
        points, rates = self.grid()
        if not points or len(points) != len(rates):
            raise QueryError(f"a {self.WHAT} needs as many {self.POINTS} as rates, at least one")
        if any(b <= a for a, b in zip(points, points[1:])) or points[0] < 1:
            raise QueryError(f"a {self.WHAT}'s {self.POINTS} must be positive and ascending, got {points}")
        if any(not r > 0 for r in rates):
            raise QueryError(f"a {self.WHAT}'s rates must be positive, got {rates}")


class RateCurve(_Curve):
    """FLOP/s at a grid of M (ascending, distinct, positive); interpolated linearly in log2(M)."""

    WHAT: ClassVar[str] = "rate curve"
    POINTS: ClassVar[str] = "M values"

    m: tuple[int, ...]
    flops_per_s: tuple[float, ...]

    def grid(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        return self.m, self.flops_per_s

    def at(self, m: float) -> float:
        """The rate at M = ``m``: clamped outside the grid, linear in log2(M) between grid points."""
        return float(log2_interp(self.m, self.flops_per_s, m))

    def at_array(self, m: Any) -> Any:
        """``at`` over a numpy array of M values."""
        return log2_interp(self.m, self.flops_per_s, m)


def log2_interp(grid: tuple[int, ...], values: tuple[float, ...], x: Any) -> Any:
    """``values`` at ``x`` (a number or a numpy array): clamped to the grid's ends, linear in log2 between."""
    import numpy as np

    at = np.log2(np.clip(np.asarray(x, dtype=np.float64), grid[0], grid[-1]))
    return np.interp(at, np.log2(np.asarray(grid, dtype=np.float64)), np.asarray(values, dtype=np.float64))


class BandwidthCurve(_Curve):
    """Bytes/s of a weight matmul streaming a matrix of a given size (the GEMV bandwidth by weight bytes:
    small matrices stay in the caches or pay the call's fixed cost, large ones stream from DRAM); the sizes
    ascending, interpolated linearly in log2(size), clamped to the grid's ends."""

    WHAT: ClassVar[str] = "bandwidth curve"
    POINTS: ClassVar[str] = "sizes"

    size_bytes: tuple[int, ...]
    bytes_per_s: tuple[float, ...]

    def grid(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        return self.size_bytes, self.bytes_per_s

    def at(self, size: Any) -> Any:
        """Bytes/s at ``size`` bytes (a number or a numpy array)."""
        return log2_interp(self.size_bytes, self.bytes_per_s, size)


class DeviceModel(BaseModel):
    """The rates a device reaches on each kernel class, per compute dtype, and its per-op cost.

    ``gemm[dtype]`` / ``bmm[dtype]``: FLOP/s by M; ``gemv_bandwidth[dtype]``: bytes/s a weight matmul streams
    at small M; ``elementwise_bandwidth[dtype]``: bytes/s (read + written) of an elementwise op on tensors
    larger than the caches; ``vector_flops[dtype]``: FLOP/s of the non-matmul arithmetic when it, not the
    bytes, bounds a node; ``per_op_s``: the dispatch / launch cost of one eager op; ``captured_op_s``: the
    cost of one op when the engine replays a captured graph (CUDA graphs: 0); ``gemv_curve[dtype]``: the GEMV
    bandwidth by the weight matrix's bytes (where measured; else ``gemv_bandwidth`` at every size);
    ``fresh_output_s_per_byte``: what writing an eager op's output into freshly mapped pages costs beyond
    the write itself (the page faults and the kernel's zeroing), charged to outputs of at least
    ``fresh_output_threshold`` bytes (``kernels.fresh_output_bytes``: glibc's malloc maps those afresh on
    every call; 0 on a GPU, whose caching allocator reuses its blocks) when the process's ``allocator`` is
    glibc's default (``ALLOCATORS``: a ``retaining`` allocator maps nothing afresh once warm);
    ``attention_bandwidth[dtype]``: bytes/s of attention's batched matmuls streaming the keys or values from
    memory (a decode step's scores and context: batched GEMVs), the ``bmm`` class's bandwidth where measured;
    ``copy_bandwidth[dtype]``: bytes/s written by the eager data copies, repeat_kv's expansion and
    DynamicCache's ``torch.cat`` (else the elementwise bandwidth).
    """

    model_config = ConfigDict(frozen=True)

    gemm: dict[str, RateCurve]
    bmm: dict[str, RateCurve] = {}
    gemv_bandwidth: dict[str, float]
    elementwise_bandwidth: dict[str, float]
    vector_flops: dict[str, float] = {}
    per_op_s: float = 0.0
    captured_op_s: float = 0.0
    gemv_curve: dict[str, BandwidthCurve] = {}
    fresh_output_s_per_byte: float = Field(default=0.0, ge=0.0)
    fresh_output_threshold: int = Field(default=GLIBC_MMAP_THRESHOLD_MAX, gt=0)
    allocator: Allocator = "glibc"
    attention_bandwidth: dict[str, float] = {}
    copy_bandwidth: dict[str, float] = {}
    threads: int | None = None
    fingerprint: str = ""
    source: str = ""

    def _dtype(self, table: dict[str, Any], dtype: str, what: str) -> Any:
        from .dtypes import compute_dtype_name

        key = compute_dtype_name(dtype)
        if key not in table:
            raise QueryError(f"the device model has no {what} for compute dtype {key!r}; it has: {', '.join(table)}")
        return table[key]

    def has(self, dtype: str) -> bool:
        from .dtypes import compute_dtype_name

        return compute_dtype_name(dtype) in self.gemm

    def matmul_rate(self, kernel: str, dtype: str, m: float) -> float:
        """FLOP/s of a matmul of class ``kernel`` ("linear" or "bmm") with ``m`` rows at ``dtype``."""
        if kernel == "bmm" and self.has(dtype):
            from .dtypes import compute_dtype_name

            curve = self.bmm.get(compute_dtype_name(dtype))
            if curve is not None:
                return float(curve.at(m))
        return float(self._dtype(self.gemm, dtype, "GEMM curve").at(m))

    def bandwidth(self, kernel: str, dtype: str, weight_bytes: Any = None) -> Any:
        """Bytes/s of kernel class ``kernel``: the GEMV bandwidth for weight matmuls (by ``weight_bytes``, a
        number or a numpy array, where the model has a curve for the dtype), else elementwise."""
        if kernel not in KERNEL_CLASSES:
            raise QueryError(f"kernel class must be one of {', '.join(KERNEL_CLASSES)}, got {kernel!r}")
        if kernel == "linear":
            from .dtypes import compute_dtype_name

            curve = self.gemv_curve.get(compute_dtype_name(dtype))
            if curve is not None and weight_bytes is not None:
                return curve.at(weight_bytes)
            return float(self._dtype(self.gemv_bandwidth, dtype, "GEMV bandwidth"))
        if kernel == "bmm" and self._measured(self.attention_bandwidth, dtype):
            return float(self._dtype(self.attention_bandwidth, dtype, "attention bandwidth"))
        return float(self._dtype(self.elementwise_bandwidth, dtype, "elementwise bandwidth"))

    def copy_rate(self, dtype: str) -> float:
        """Bytes/s written by an eager data copy: ``copy_bandwidth``, else the elementwise bandwidth."""
        if self._measured(self.copy_bandwidth, dtype):
            return float(self._dtype(self.copy_bandwidth, dtype, "copy bandwidth"))
        return float(self._dtype(self.elementwise_bandwidth, dtype, "elementwise bandwidth"))

    def fresh_pages(self) -> bool:
        """Whether eager outputs are charged the fresh-page cost: measured, under glibc's default allocator."""
        return self.fresh_output_s_per_byte > 0 and self.allocator == "glibc"

    @staticmethod
    def _measured(table: dict[str, float], dtype: str) -> bool:
        from .dtypes import compute_dtype_name

        return compute_dtype_name(dtype) in table

    def vector_rate(self, dtype: str) -> float:
        """FLOP/s of non-matmul arithmetic (default: the GEMM curve's largest rate)."""
        from .dtypes import compute_dtype_name

        key = compute_dtype_name(dtype)
        if key in self.vector_flops:
            return self.vector_flops[key]
        return max(self._dtype(self.gemm, dtype, "GEMM curve").flops_per_s)

    def op_cost(self, captured: bool) -> float:
        """Seconds per op: eager dispatch / launch, or replay of a captured graph."""
        return self.captured_op_s if captured else self.per_op_s


class KernelTime(BaseModel):
    """One node's time under a device model: the roofline part and the per-op part."""

    model_config = ConfigDict(frozen=True)

    compute_time_s: float
    memory_time_s: float
    op_time_s: float
    time_s: float
    bound: Literal["compute", "memory"]


def kernel_time(model: DeviceModel, kernel: str, dtype: str, matmul_flops: float, other_flops: float,
                bytes_moved: float, m: float, ops: float, captured: bool = False) -> KernelTime:
    """time = max(matmul FLOPs / rate(kernel, dtype, M) + other FLOPs / vector rate, bytes / bandwidth(kernel))
    + ops x the per-op cost (``captured``: the captured-graph cost)."""
    for what, value in (("matmul_flops", matmul_flops), ("other_flops", other_flops), ("bytes_moved", bytes_moved),
                        ("ops", ops)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise QueryError(f"{what} must be a non-negative number, got {value!r}")
    compute = 0.0
    if matmul_flops:
        compute += matmul_flops / model.matmul_rate("bmm" if kernel == "bmm" else "linear", dtype, max(m, 1))
    if other_flops:
        compute += other_flops / model.vector_rate(dtype)
    memory = bytes_moved / model.bandwidth(kernel, dtype) if bytes_moved else 0.0
    op_time = ops * model.op_cost(captured)
    return KernelTime(compute_time_s=compute, memory_time_s=memory, op_time_s=op_time,
                      time_s=max(compute, memory) + op_time,
                      bound="compute" if compute >= memory and compute > 0 else "memory")
