"""A short micro-benchmark of the local CPU, as a ``DeviceSpec`` the roofline can use.

What it measures, in about ``seconds`` of work (plus a fraction of a second to allocate the copy buffers;
importing torch the first time costs more and is not counted):

- matmul FLOP/s: square ``n x n`` matmuls (2 * n**3 FLOP each), fp32, and bf16 when torch is importable;
  ``n`` doubles from 256 while the next size would take under a fifth of the time slice (at most 2048); the best rate wins.
- copy bandwidth: one large buffer copied into another, bytes read + written (2 * nbytes) per copy; the
  best of several copies. Write-allocate reads and caches make this a practical, not a theoretical, figure.
- memory capacity: MemTotal from /proc/meminfo, else ``os.sysconf`` pages * page size.

torch is used when importable (multi-threaded matmul and copy, bf16 support), numpy otherwise (fp32 only;
numpy's copy is single-threaded, so the bandwidth is an underestimate). The result is cached per process.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable

from ..errors import QueryError
from .devices import DeviceSpec

_MAX_N = 2048
_COPY_BYTES = 128 * 2**20  # per buffer: larger than most caches a process can hold on its own
_SOURCE = "measured by llm_profiler.hardware.cpu_bench.measure_local_cpu"


def _cpuinfo() -> tuple[str, str]:
    """(model name, vendor) from /proc/cpuinfo where there is one."""
    model, vendor = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and value:
                    model = value
                elif key == "vendor_id" and value:
                    vendor = value
                elif not line.strip():
                    break  # the first processor's block is enough
    except OSError:
        pass
    vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(vendor, vendor or platform.machine())
    return model, vendor


def _memory_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # reported in kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _best_rate(run: Callable[[], None], work: float, budget_s: float) -> float:
    """Best ``work / seconds`` over repeated calls of ``run`` within ``budget_s`` (one warm-up call first)."""
    run()
    best, deadline = 0.0, time.perf_counter() + budget_s
    while True:
        t0 = time.perf_counter()
        run()
        elapsed = time.perf_counter() - t0
        if elapsed > 0:
            best = max(best, work / elapsed)
        if time.perf_counter() >= deadline:
            return best


def _matmul_rate(make: Callable[[int], Callable[[], None]], budget_s: float) -> tuple[float, int]:
    """Best FLOP/s of square matmuls, ``n`` doubled while the next size (8x the work) fits a fifth of the budget."""
    n = 256
    run = make(n)
    while n < _MAX_N:
        t0 = time.perf_counter()
        run()
        if 8 * (time.perf_counter() - t0) > budget_s / 5:
            break
        n *= 2
        run = make(n)
    return _best_rate(run, 2.0 * n**3, budget_s), n


def _bench_torch(seconds: float) -> tuple[dict[str, float], float, str]:
    import torch

    def matmul(dtype: torch.dtype) -> Callable[[int], Callable[[], None]]:
        def make(n: int) -> Callable[[], None]:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            return lambda: torch.mm(a, b)

        return make

    fp32, n32 = _matmul_rate(matmul(torch.float32), 0.35 * seconds)
    bf16, n16 = _matmul_rate(matmul(torch.bfloat16), 0.25 * seconds)
    src = torch.ones(_COPY_BYTES // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    bandwidth = _best_rate(lambda: dst.copy_(src), 2.0 * _COPY_BYTES, 0.4 * seconds)
    how = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul n={n32} (fp32), n={n16} (bf16); "
        f"copy of {_COPY_BYTES // 2**20} MiB"
    )
    return {"fp32": fp32, "bf16": bf16}, bandwidth, how


def _bench_numpy(seconds: float) -> tuple[dict[str, float], float, str]:
    import numpy as np

    def make(n: int) -> Callable[[], None]:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        return lambda: np.matmul(a, b)

    fp32, n32 = _matmul_rate(make, 0.5 * seconds)
    src = np.ones(_COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    bandwidth = _best_rate(lambda: np.copyto(dst, src), 2.0 * _COPY_BYTES, 0.5 * seconds)
    how = f"numpy {np.__version__} (no torch: fp32 only, single-threaded copy); matmul n={n32}"
    return {"fp32": fp32}, bandwidth, how


@functools.cache
def measure_local_cpu(seconds: float = 0.5) -> DeviceSpec:
    """Measure this machine's CPU (matmul FLOP/s, copy bandwidth, RAM) as a ``DeviceSpec``; cached per process."""
    if not 0 < seconds <= 60:
        raise QueryError(f"seconds must be in (0, 60], got {seconds!r}")
    try:
        import torch  # noqa: F401
    except ImportError:
        peak, bandwidth, how = _bench_numpy(seconds)
    else:
        peak, bandwidth, how = _bench_torch(seconds)
    model, vendor = _cpuinfo()
    return DeviceSpec(
        name="local-cpu",
        vendor=vendor,
        memory_bytes=max(_memory_bytes(), 1),
        memory_bandwidth=bandwidth,
        peak_flops=peak,
        notes=f"{model}; {os.cpu_count()} logical CPUs; {how}",
        source=_SOURCE,
    )
