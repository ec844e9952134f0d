"""A short micro-benchmark of the local CPU, as a ``DeviceSpec`` the roofline can use.

What it measures, in about ``seconds`` of work (plus a fraction of a second to allocate the copy buffers;
importing torch the first time costs more and is not counted):

- matmul FLOP/s, in the layout ``nn.Linear`` uses: activations ``x`` (n x n) times a weight stored
  (out x in) and used transposed, ``torch.mm(x, w.t())`` (``np.matmul(x, w.T)`` without torch); 2 * n**3 FLOP
  per call. fp32, and bf16 when torch is importable. (A plain ``torch.mm(a, b)`` can take a different,
  much slower kernel for bf16 on CPUs without native bf16 matmul; the Linear layout is what a model runs.)
  Each size is timed as the median of 3 - 5 calls after one warm-up call; ``n`` doubles from 256 while the
  rate still improves by at least 5% and the next size (8x the work per call, run at least 4 times)
  fits the time left, up to 4096. The best median rate wins.
- copy bandwidth: one large buffer copied into another, bytes read + written (2 * nbytes) per copy; the
  median of several copies after a warm-up copy. Write-allocate reads and caches make this a practical,
  not a theoretical, figure.
- memory capacity: MemTotal from /proc/meminfo, else ``os.sysconf`` pages * page size.

torch is used when importable (multi-threaded matmul and copy, bf16 support), numpy otherwise (fp32 only;
numpy's copy is single-threaded, so the bandwidth is an underestimate). The thread count, the sizes tried
and their rates are recorded in ``notes``. The result is cached per process.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from ..errors import QueryError
from .devices import DeviceSpec

_MIN_N = 256
_MAX_N = 4096
_GAIN = 0.05  # a larger size must beat the best rate so far by this fraction to keep growing
_REPEATS = 5  # timed calls per size at most (after one warm-up call) ...
_MIN_REPEATS = 3  # ... and at least, even when the time slice has run out
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


def _median_rate(run: Callable[[], Any], work: float, budget_s: float) -> tuple[float, float]:
    """(median ``work / seconds`` over timed calls of ``run``, seconds spent): one warm-up call, then up to
    ``_REPEATS`` timed calls while within ``budget_s``, at least ``_MIN_REPEATS``."""
    start = time.perf_counter()
    run()  # warm-up: first-touch page faults, kernel selection, thread-pool start
    deadline = start + budget_s
    times: list[float] = []
    while len(times) < _REPEATS and (len(times) < _MIN_REPEATS or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    elapsed = statistics.median(times)
    return (work / elapsed if elapsed > 0 else 0.0), time.perf_counter() - start


def _matmul_rate(make: Callable[[int], Callable[[], Any]], budget_s: float) -> tuple[float, int, list[tuple[int, float]]]:
    """(best median FLOP/s, its n, every (n, FLOP/s) tried): ``n`` doubles from ``_MIN_N`` while the rate
    improves by ``_GAIN`` and the next size (8x the work per call) fits the time left. The first size is
    always timed, whatever the budget."""
    deadline = time.perf_counter() + budget_s
    n, best, best_n = _MIN_N, 0.0, _MIN_N
    tried: list[tuple[int, float]] = []
    while True:
        rate, _ = _median_rate(make(n), 2.0 * n**3, max(deadline - time.perf_counter(), 0.0))
        tried.append((n, rate))
        improved = rate > best * (1 + _GAIN)
        if rate > best:
            best, best_n = rate, n
        # the next size: a warm-up and _MIN_REPEATS calls of 8x the work each, at the rate just measured
        next_cost = (1 + _MIN_REPEATS) * 2.0 * (2 * n) ** 3 / rate if rate > 0 else float("inf")
        if not improved or 2 * n > _MAX_N or next_cost > deadline - time.perf_counter():
            return best, best_n, tried
        n *= 2


def linear_operands_torch(n: int, dtype: Any) -> tuple[Any, Any]:
    """The operands the torch benchmark multiplies: activations ``x`` (n tokens x n in-features) and a weight
    stored as ``nn.Linear`` stores it, (n out x n in), contiguous. Seeded, so every run times the same data."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, n, generator=gen).to(dtype)
    weight = torch.randn(n, n, generator=gen).to(dtype)
    return x, weight


def linear_matmul_torch(x: Any, weight: Any) -> Any:
    """``x @ weight.T``: what ``nn.functional.linear(x, weight)`` computes (no bias), in its layout."""
    import torch

    return torch.mm(x, weight.t())


def linear_operands_numpy(n: int) -> tuple[Any, Any]:
    """The numpy fallback's operands: fp32 ``x`` (n x n) and a (out x in) weight, C-contiguous."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def linear_matmul_numpy(x: Any, weight: Any) -> Any:
    """``x @ weight.T`` with numpy."""
    import numpy as np

    return np.matmul(x, weight.T)


def _sizes(tried: list[tuple[int, float]]) -> str:
    return ", ".join(f"n={n}: {rate / 1e9:.3g}" for n, rate in tried)


def _bench_torch(seconds: float) -> tuple[dict[str, float], float, str]:
    import torch

    def linear(dtype: torch.dtype) -> Callable[[int], Callable[[], Any]]:
        def make(n: int) -> Callable[[], Any]:
            x, weight = linear_operands_torch(n, dtype)
            return lambda: linear_matmul_torch(x, weight)

        return make

    threads = torch.get_num_threads()
    fp32, n32, tried32 = _matmul_rate(linear(torch.float32), 0.35 * seconds)
    bf16, n16, tried16 = _matmul_rate(linear(torch.bfloat16), 0.25 * seconds)
    src = torch.ones(_COPY_BYTES // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    bandwidth, _ = _median_rate(lambda: dst.copy_(src), 2.0 * _COPY_BYTES, 0.4 * seconds)
    how = (
        f"torch {torch.__version__}, {threads} threads; Linear-layout matmul x @ W.T (W stored out x in), "
        f"median of up to {_REPEATS} calls per size, GFLOP/s: fp32 [{_sizes(tried32)}] -> n={n32}, "
        f"bf16 [{_sizes(tried16)}] -> n={n16}; copy of {_COPY_BYTES // 2**20} MiB (median)"
    )
    return {"fp32": fp32, "bf16": bf16}, bandwidth, how


def _bench_numpy(seconds: float) -> tuple[dict[str, float], float, str]:
    import numpy as np

    def make(n: int) -> Callable[[], Any]:
        x, weight = linear_operands_numpy(n)
        return lambda: linear_matmul_numpy(x, weight)

    fp32, n32, tried = _matmul_rate(make, 0.5 * seconds)
    src = np.ones(_COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    bandwidth, _ = _median_rate(lambda: np.copyto(dst, src), 2.0 * _COPY_BYTES, 0.5 * seconds)
    how = (
        f"numpy {np.__version__} (no torch: fp32 only, single-threaded copy, BLAS threads as numpy's BLAS "
        f"chooses); Linear-layout matmul x @ W.T, GFLOP/s [{_sizes(tried)}] -> n={n32}"
    )
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
