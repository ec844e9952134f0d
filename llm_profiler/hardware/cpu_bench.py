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
from .roofline import GLIBC_MMAP_THRESHOLD_MAX, Allocator

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


# ---------------------------------------------------------------- the device model of this CPU (issue 18)
#
# ``measure_cpu_model`` measures the rates of the kernels a transformers forward runs, in their layouts,
# each as the median of repeated calls after a warm-up call, at the current torch thread count:
#
# - ``gemm[dtype]``: x (M x K) @ W.T with W stored (N x K) as nn.Linear stores it, K = N = ``GEMM_K``, at
#   M in ``GEMM_M``: FLOP/s by M (the tokens a projection multiplies);
# - ``bmm[dtype]``: attention's batched matmul, ``BMM_BATCH`` x (M x ``BMM_K``) @ (``BMM_K`` x ``BMM_N``), at
#   M in ``BMM_M`` (the query rows);
# - ``gemv_bandwidth[dtype]``: x (1 x K) @ W.T with a weight larger than the last-level cache
#   (``GEMV_SHAPE``): weight bytes per second;
# - ``elementwise_bandwidth[dtype]``: ``torch.mul(a, b, out=c)`` over ``ELEMENTWISE_NUMEL`` elements: bytes
#   read and written (3 x numel x itemsize) per second;
# - ``vector_flops[dtype]``: a cache-resident softmax, at the op table's 5 FLOP per element (max, subtract,
#   exp, sum, divide: ``ops.softmax``) per second;
# - ``attention_bandwidth[dtype]``: a decode step's attention matmuls over keys and values larger than the
#   last-level cache (``ATTENTION_HEADS`` heads of ``BMM_K`` x ``ATTENTION_STREAM_BYTES``, cycled through
#   distinct copies): ``q @ K.transpose(2, 3)`` and ``p @ V`` of one query row, as eager attention calls them;
#   the keys' and values' bytes per second;
# - ``copy_bandwidth[dtype]``: eager attention's data copies: repeat_kv's expansion of ``ATTENTION_KV_HEADS``
#   heads to ``ATTENTION_HEADS`` and DynamicCache's ``torch.cat`` of one token onto the cache, into outputs
#   already mapped; bytes written per second;
# - ``per_op_s``: the time of one eager op: a decode step of a tiny transformers Llama
#   (``tiny_transformers_step``, hidden ``TINY_HIDDEN``, one token: nothing to compute; without
#   transformers a pure-torch decoder-layer step, ``tiny_layer_step``) over the aten ops it dispatches
#   (counted once with a ``TorchDispatchMode``, views and copies included, as ``kernels.eager_ops`` counts
#   a node's). transformers' Python around each op costs about as much again as the op's own dispatch.
#
# The result is cached per machine in a JSON file named by a fingerprint of what it depends on (CPU model,
# logical CPUs, memory, torch version, thread count, this benchmark's version); ``refresh=True`` measures
# again. The load average at the time is recorded in ``source``.

BENCH_VERSION = 3
GEMM_M = (1, 4, 16, 64, 256, 1024)
GEMM_K = 2048
BMM_M = (1, 16, 128, 512)
BMM_BATCH, BMM_K, BMM_N = 16, 64, 1024
GEMV_K = 1024
GEMV_CURVE_BYTES = (2**18, 2**20, 2**22, 2**24, 2**26, 2**28)  # 256 KiB to 256 MiB weight matrices
GEMV_STREAM_BYTES = 2**28  # the distinct copies cycled through at each size: far past any L3
FRESH_OUTPUT_BYTES = 2**26  # 64 MiB: above glibc's DEFAULT_MMAP_THRESHOLD_MAX (32 MiB on 64-bit)
GEMV_SHAPE = (4096, 8192)  # (N, K): 128 MiB in fp32, 64 MiB in bf16, larger than the 32 MiB L3 of issue 18's CPU
ELEMENTWISE_NUMEL = 2**23  # 32 MiB per fp32 operand
ATTENTION_HEADS, ATTENTION_KV_HEADS = 16, 2
ATTENTION_STREAM_BYTES = 2**26  # 64 MiB of keys (or values) per call, past the L3 of issue 18's CPU
ATTENTION_COPIES = 4  # distinct key / output sets cycled through: each call streams from memory
# glibc told to keep what it frees: no mmap for any block (freed memory returns to the heap, not the kernel)
# and a trim threshold no forward reaches (the heap's top is not given back); ``process_allocator`` reads it
RETAINING_GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
_RETAINING_TRIM = 2**30
_RETAINING_PRELOADS = ("jemalloc", "tcmalloc")
SOFTMAX_SHAPE = (64, 1024)
TINY_HIDDEN = 64
MODEL_DTYPES = ("fp32", "bf16")
_MODEL_REPEATS = 5
# whole passes over every figure, their median kept: a memory-bound figure swings by up to 2x within minutes on a
# shared host (one run of benchmarks/measured_vs_predicted.py measured a 16 MiB fp32 GEMV at 7.7, then 14.1 GB/s)
MODEL_PASSES = 3


def _median_time(run: Callable[[], Any], repeats: int = _MODEL_REPEATS) -> float:
    """Median seconds of ``repeats`` timed calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tiny_layer_step(hidden: int = TINY_HIDDEN, dtype: Any = None) -> Callable[[], Any]:
    """One decode step of a tiny Llama-style decoder layer in eager torch (RMSNorm, q / k / v / o projections,
    rotary embedding, a cache concatenation, repeat-free attention, softmax, gated MLP, residual adds), one
    token at ``hidden`` features: what it costs is the dispatch of its ops, not their arithmetic."""
    import torch

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(0)
    heads, head_dim = 4, hidden // 4
    linears = {name: torch.nn.Linear(i, o, bias=False).to(dtype)
               for name, (i, o) in {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
                                    "o": (hidden, hidden), "gate": (hidden, 2 * hidden), "up": (hidden, 2 * hidden),
                                    "down": (2 * hidden, hidden)}.items()}
    norm_w = torch.ones(hidden, dtype=dtype)
    x0 = torch.randn(1, 1, hidden, generator=gen).to(dtype)
    k_cache = torch.randn(1, heads, 8, head_dim, generator=gen).to(dtype)
    v_cache = torch.randn(1, heads, 8, head_dim, generator=gen).to(dtype)
    cos = torch.randn(1, 1, 1, head_dim, generator=gen).to(dtype)
    sin = torch.randn(1, 1, 1, head_dim, generator=gen).to(dtype)

    def norm(x: Any) -> Any:
        var = x.pow(2).mean(-1, keepdim=True)
        return norm_w * (x * torch.rsqrt(var + 1e-6))

    def rotate_half(x: Any) -> Any:
        return torch.cat((-x[..., head_dim // 2:], x[..., :head_dim // 2]), dim=-1)

    def step() -> Any:
        with torch.no_grad():
            x = x0
            h = norm(x)
            q = linears["q"](h).view(1, 1, heads, head_dim).transpose(1, 2)
            k = linears["k"](h).view(1, 1, heads, head_dim).transpose(1, 2)
            v = linears["v"](h).view(1, 1, heads, head_dim).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            keys, values = torch.cat([k_cache, k], dim=-2), torch.cat([v_cache, v], dim=-2)
            scores = torch.matmul(q, keys.transpose(2, 3)) * (head_dim ** -0.5)
            probs = torch.softmax(scores, dim=-1)
            ctx = torch.matmul(probs, values).transpose(1, 2).contiguous().reshape(1, 1, hidden)
            x = x + linears["o"](ctx)
            h = norm(x)
            return x + linears["down"](torch.nn.functional.silu(linears["gate"](h)) * linears["up"](h))

    return step


def tiny_transformers_step() -> Callable[[], Any] | None:
    """One decode step (one token after 8 cached) of a tiny transformers Llama (hidden 64, 2 layers, eager
    attention, random weights), then the cache cropped back: transformers' own Python around each op (module
    calls, the attention interface, the cache update) is in it, as it is in a real model's step. None without
    transformers."""
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return None
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=TINY_HIDDEN, intermediate_size=2 * TINY_HIDDEN, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    cfg._attn_implementation = "eager"  # the reference's attention (validation.measure.build_model does the same)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        cache = model(input_ids=torch.zeros(1, 8, dtype=torch.long), use_cache=True).past_key_values
    token = torch.zeros(1, 1, dtype=torch.long)

    def step() -> Any:
        with torch.no_grad():
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache.crop(-1)
        return out

    return step


def dispatched_ops(run: Callable[[], Any]) -> int:
    """The aten ops one call of ``run`` dispatches (computing ops, views, copies and creations alike)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            _Count.calls += 1
            return func(*args, **(kwargs or {}))

    with _Count():
        run()
    return _Count.calls


def _cache_dir() -> str:
    base = os.environ.get("LLM_PROFILER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "llm_profiler")
    return base


def machine_fingerprint(threads: int) -> str:
    """A short hash of what the measurements depend on: CPU model, logical CPUs, memory, torch version,
    ``threads`` and the benchmark's version."""
    import hashlib

    import torch

    model, vendor = _cpuinfo()
    key = f"{model}|{vendor}|{os.cpu_count()}|{_memory_bytes()}|torch {torch.__version__}|{threads} threads|v{BENCH_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def _measure_dtype(name: str) -> dict[str, Any]:
    import torch

    dt = _torch_dtype(name)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(GEMM_K, GEMM_K, generator=gen).to(dt)
    gemm = []
    for m in GEMM_M:
        x = torch.randn(m, GEMM_K, generator=gen).to(dt)
        gemm.append(2.0 * m * GEMM_K * GEMM_K / _median_time(functools.partial(linear_matmul_torch, x, weight)))
    keys = torch.randn(BMM_BATCH, BMM_K, BMM_N, generator=gen).to(dt)
    bmm = []
    for m in BMM_M:
        q = torch.randn(BMM_BATCH, m, BMM_K, generator=gen).to(dt)
        bmm.append(2.0 * BMM_BATCH * m * BMM_K * BMM_N / _median_time(functools.partial(torch.bmm, q, keys)))
    n, k = GEMV_SHAPE
    big = torch.randn(n, k, generator=gen).to(dt)
    x1 = torch.randn(1, k, generator=gen).to(dt)
    gemv = big.numel() * big.element_size() / _median_time(lambda: linear_matmul_torch(x1, big))
    gemv_curve = [gemv_rate(size, dt) for size in GEMV_CURVE_BYTES]
    a = torch.randn(ELEMENTWISE_NUMEL, generator=gen).to(dt)
    b, c = torch.randn(ELEMENTWISE_NUMEL, generator=gen).to(dt), torch.empty(ELEMENTWISE_NUMEL, dtype=dt)
    elementwise = 3.0 * a.numel() * a.element_size() / _median_time(lambda: torch.mul(a, b, out=c))
    attention, copy = attention_rates(dt)
    s = torch.randn(*SOFTMAX_SHAPE, generator=gen).to(dt)
    # as eager attention runs it: softmax(scores, dtype=float32), upcast below fp32
    vector = 5.0 * s.numel() / _median_time(lambda: torch.softmax(s, dim=-1, dtype=torch.float32))
    return {"gemm": gemm, "bmm": bmm, "gemv": gemv, "gemv_curve": gemv_curve, "elementwise": elementwise,
            "vector": vector, "attention": attention, "copy": copy}


def attention_rates(dtype: Any) -> tuple[float, float]:
    """(attention bandwidth, copy bandwidth) in bytes/s at ``dtype``, as eager attention runs a decode step
    at a long context (see the table above ``BENCH_VERSION``): the scores and context matmuls of one query
    row streaming ``ATTENTION_STREAM_BYTES`` of keys or values, and the repeat_kv expansion and cache
    ``torch.cat`` into outputs already mapped (the fresh-page cost is ``fresh_output_cost``'s)."""
    import torch

    item = torch.tensor([], dtype=dtype).element_size()
    heads, kv_heads, depth = ATTENTION_HEADS, ATTENTION_KV_HEADS, BMM_K
    tokens = ATTENTION_STREAM_BYTES // (heads * depth * item)
    keys = [torch.randn(1, heads, tokens, depth).to(dtype) for _ in range(ATTENTION_COPIES)]
    query, probs = torch.randn(1, heads, 1, depth).to(dtype), torch.randn(1, heads, 1, tokens).to(dtype)
    held = torch.randn(1, kv_heads, tokens, depth).to(dtype)
    new = torch.randn(1, kv_heads, 1, depth).to(dtype)
    # zeros, not empty: written once here, so the timed copies find their pages mapped
    expanded = [torch.zeros(1, kv_heads, heads // kv_heads, tokens, depth, dtype=dtype)
                for _ in range(ATTENTION_COPIES)]
    concatenated = [torch.zeros(1, kv_heads, tokens + 1, depth, dtype=dtype) for _ in range(ATTENTION_COPIES)]
    turn = [0]

    def attention() -> Any:
        turn[0] = (turn[0] + 1) % ATTENTION_COPIES
        torch.matmul(query, keys[turn[0]].transpose(2, 3))
        return torch.matmul(probs, keys[turn[0]])

    def copies() -> Any:
        turn[0] = (turn[0] + 1) % ATTENTION_COPIES
        view = held[:, :, None].expand(1, kv_heads, heads // kv_heads, tokens, depth)
        expanded[turn[0]].copy_(view)  # repeat_kv's reshape of the expanded view, into a mapped output
        return torch.cat([held, new], dim=-2, out=concatenated[turn[0]])

    streamed = 2.0 * heads * tokens * depth * item
    copied = (heads * tokens + kv_heads * (tokens + 1)) * depth * item  # the two outputs' bytes
    return streamed / _median_time(attention), copied / _median_time(copies)


def _tunables(env: Any) -> dict[str, str]:
    return dict(item.split("=", 1) for item in env.get("GLIBC_TUNABLES", "").split(":") if "=" in item)


def process_mmap_threshold(environ: Any = None) -> int:
    """The size from which glibc's malloc maps every block afresh in this process: the ``mmap_threshold``
    tunable where set (a fixed threshold: the dynamic rise is off), else the cap the dynamic threshold rises to
    (``roofline.GLIBC_MMAP_THRESHOLD_MAX``)."""
    value = _tunables(os.environ if environ is None else environ).get("glibc.malloc.mmap_threshold", "")
    return int(value) if value.isdigit() and int(value) > 0 else GLIBC_MMAP_THRESHOLD_MAX


def process_allocator(environ: Any = None) -> Allocator:
    """This process's allocator as the device model charges fresh pages (``roofline.ALLOCATORS``):
    ``retaining`` when jemalloc or tcmalloc is preloaded or glibc is told to keep freed memory (mmap_max=0
    and a trim threshold of at least 1 GiB in ``GLIBC_TUNABLES``, e.g. ``RETAINING_GLIBC_TUNABLES``), else
    ``glibc``. Tunables are read when the process starts: set them in the environment of a new process."""
    env = os.environ if environ is None else environ
    preload = env.get("LD_PRELOAD", "")
    if any(name in preload for name in _RETAINING_PRELOADS):
        return "retaining"
    tunables = _tunables(env)
    trim = tunables.get("glibc.malloc.trim_threshold", "0")
    if tunables.get("glibc.malloc.mmap_max") == "0" and trim.isdigit() and int(trim) >= _RETAINING_TRIM:
        return "retaining"
    return "glibc"


def median_figures(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure of ``_measure_dtype``'s passes, the median: of each number, or of each entry of a list."""
    out: dict[str, Any] = {}
    for key, first in passes[0].items():
        values = [p[key] for p in passes]
        out[key] = ([statistics.median(column) for column in zip(*values)] if isinstance(first, list)
                    else statistics.median(values))
    return out


def gemv_rate(size_bytes: int, dtype: Any) -> float:
    """Bytes/s of ``F.linear`` of one token over a weight matrix of ``size_bytes`` (GEMV_K input features),
    cycling through enough distinct copies (GEMV_STREAM_BYTES in all) that each call streams its matrix from
    memory, as a decode step streams each layer's weights once."""
    import torch

    x = torch.randn(1, GEMV_K).to(dtype)
    rows = max(1, size_bytes // (GEMV_K * x.element_size()))
    copies = max(1, GEMV_STREAM_BYTES // (rows * GEMV_K * x.element_size()))
    weights = [torch.randn(rows, GEMV_K).to(dtype) for _ in range(copies)]
    turn = [0]

    def run() -> Any:
        turn[0] = (turn[0] + 1) % copies
        return linear_matmul_torch(x, weights[turn[0]])

    run()  # warm-up: the first call's one-off costs
    times = []
    for _ in range(max(_MODEL_REPEATS, copies)):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return rows * GEMV_K * x.element_size() / statistics.median(times)


def fresh_output_cost(repeats: int = 9) -> float:
    """Seconds per byte that writing into freshly mapped pages costs beyond writing into pages already
    mapped: a new private anonymous FRESH_OUTPUT_BYTES mapping (as glibc's malloc maps a large block) filled
    by torch (at the current thread count, as the
    eager op that writes an output) minus the same fill again, the median of ``repeats`` mappings. The mapping
    is advised MADV_NOHUGEPAGE, so the kernel backs it with 4 KiB pages, as it does most of glibc's mappings
    (a transparent huge page needs a free, aligned 2 MiB block): a stable figure where a plain allocation's
    cost swings with the huge pages the kernel happens to find. Without ``mmap.MADV_NOHUGEPAGE`` (not Linux):
    ``x * 2`` into a new output against a preallocated one."""
    import mmap

    import numpy as np
    import torch

    if not hasattr(mmap, "MADV_NOHUGEPAGE"):  # pragma: no cover - Linux has it
        n = FRESH_OUTPUT_BYTES // 4
        x, out = torch.ones(n), torch.empty(n)
        fresh = _median_time(lambda: torch.mul(x, 2.0))
        reused = _median_time(lambda: torch.mul(x, 2.0, out=out))
        return max(0.0, (fresh - reused) / FRESH_OUTPUT_BYTES)
    costs = []
    for _ in range(repeats):
        # private, as malloc maps: Python's default MAP_SHARED anonymous memory is shmem, whose faults cost
        # about twice as much (0.59 - 0.63 against 0.34 - 0.40 ns/B here at 1 thread)
        mapping = mmap.mmap(-1, FRESH_OUTPUT_BYTES, flags=mmap.MAP_PRIVATE)
        mapping.madvise(mmap.MADV_NOHUGEPAGE)
        t = torch.from_numpy(np.frombuffer(mapping, dtype=np.float32))
        t0 = time.perf_counter()
        t.fill_(1.0)
        t1 = time.perf_counter()
        t.fill_(2.0)
        t2 = time.perf_counter()
        costs.append(max(0.0, ((t1 - t0) - (t2 - t1)) / FRESH_OUTPUT_BYTES))
        del t
        mapping.close()
    return statistics.median(costs)


def measure_cpu_model(refresh: bool = False, dtypes: tuple[str, ...] = MODEL_DTYPES) -> Any:
    """This CPU's device model (``roofline.DeviceModel``) at the current torch thread count: measured, or read
    from the per-machine cache (``refresh``: measure again and rewrite it). Needs torch."""

    import torch

    from .roofline import BandwidthCurve, DeviceModel, RateCurve

    threads = torch.get_num_threads()
    fingerprint = machine_fingerprint(threads)
    path = os.path.join(_cache_dir(), f"device-model-{fingerprint}.json")
    if not refresh and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                cached = DeviceModel.model_validate_json(fh.read())
            if set(dtypes) <= set(cached.gemm):
                return cached.model_copy(update={"allocator": process_allocator(),
                                                 "fresh_output_threshold": process_mmap_threshold()})
        except (OSError, ValueError):
            pass  # an unreadable cache is measured again
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    passes = [{name: _measure_dtype(name) for name in dtypes} for _ in range(MODEL_PASSES)]
    per = {name: median_figures([p[name] for p in passes]) for name in dtypes}
    step = tiny_transformers_step()
    what = "a tiny transformers Llama decode step"
    if step is None:
        step, what = tiny_layer_step(), "a tiny eager decoder-layer step"
    ops = dispatched_ops(step)
    per_op = _median_time(step, repeats=3 * _MODEL_REPEATS) / ops
    model_name, _ = _cpuinfo()
    model = DeviceModel(
        gemm={d: RateCurve(m=GEMM_M, flops_per_s=tuple(v["gemm"])) for d, v in per.items()},
        bmm={d: RateCurve(m=BMM_M, flops_per_s=tuple(v["bmm"])) for d, v in per.items()},
        gemv_bandwidth={d: v["gemv"] for d, v in per.items()},
        gemv_curve={d: BandwidthCurve(size_bytes=GEMV_CURVE_BYTES, bytes_per_s=tuple(v["gemv_curve"]))
                    for d, v in per.items()},
        fresh_output_s_per_byte=fresh_output_cost(),
        elementwise_bandwidth={d: v["elementwise"] for d, v in per.items()},
        vector_flops={d: v["vector"] for d, v in per.items()},
        attention_bandwidth={d: v["attention"] for d, v in per.items()},
        copy_bandwidth={d: v["copy"] for d, v in per.items()},
        allocator=process_allocator(), fresh_output_threshold=process_mmap_threshold(),
        per_op_s=per_op, captured_op_s=per_op, threads=threads, fingerprint=fingerprint,
        source=(f"measured by llm_profiler.hardware.cpu_bench.measure_cpu_model on {model_name} "
                f"({os.cpu_count()} logical CPUs), torch {torch.__version__}, {threads} threads, medians of "
                f"{_MODEL_REPEATS} calls after a warm-up, the median of {MODEL_PASSES} passes; per-op cost: "
                f"{what} of {ops} aten ops; "
                f"load average {load:.2f} when measured"),
    )
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(model.model_dump_json(indent=1))
    except OSError:
        pass  # a read-only home: measured, not cached
    return model
