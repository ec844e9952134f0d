"""Measured runs: time a real ``transformers`` ``generate`` and set it beside the roofline prediction.

``run_generate(config, batch, prompt, new_tokens)`` builds the transformers causal LM of a config (random
weights; ``tiny=True`` for the family's tiny variant), or takes a built one, and times a greedy
``generate`` of exactly ``new_tokens`` tokens (``min_new_tokens`` = ``max_new_tokens``):

- timing: forward pre / post hooks on the model record when each forward starts and ends (on CUDA after a
  synchronize). TTFT = the end of the first forward (the prefill) minus the start of ``generate``;
  the later intervals (end to end) are the per-token times, TPOT their mean; tokens/s = B * N / total.
- memory per forward: CUDA ``torch.cuda.max_memory_allocated`` (reset at each forward's start); CPU has no
  per-forward peak counter, so the resident set size (/proc/self/statm) at each forward's end is reported.
- prediction: ``perf.phase_report`` of the same generation (lm_head on the last position only, as
  ``generate`` passes ``logits_to_keep=1``) under the ``hf-eager`` profile, with weights, activations, KV
  cache and compute all at the run's dtype, on the local CPU measured by
  ``hardware.cpu_bench.measure_local_cpu`` (or a named device for CUDA runs). With ``device_model`` (a
  ``hardware.roofline.DeviceModel``, e.g. ``cpu_bench.measure_cpu_model()``) each node runs at its kernel
  class's measured rate at its shape plus its ops x the per-op cost (``llm_profiler.kernels``). Achieved
  FLOP/s and bandwidth are the predicted FLOPs and bytes over the measured times.
- memory (``RunMemory``): the resident set before the model was built (the runtime's baseline, when
  ``build_reference`` built it), after (+ the weights) and its peak during ``generate`` (Linux: VmHWM,
  reset through /proc/self/clear_refs before the run; elsewhere the largest per-forward sample); the growth
  during ``generate`` is compared with the predicted KV cache at the final context + the peak activations
  (``memory.memory_usage`` under hf-eager); CUDA: ``torch.cuda`` allocated bytes the same way.

torch and transformers are imported inside the functions (the validate extra).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from ..config import load_config
from ..errors import QueryError
from ..hardware import DeviceSpec, get_device, measure_local_cpu
from ..perf import phase_report, settings
from ..phases import LM_HEAD_LAST, Phase
from ..results import MeasuredRun, RunMemory

_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux: "5" to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    """VmHWM of /proc/self/status (the resident-set high-water mark), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class _StepClock:
    """Forward hooks on the model: start / end time and peak memory of every forward."""

    def __init__(self, model: Any, cuda: bool) -> None:
        import torch

        self.torch, self.model, self.cuda = torch, model, cuda
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.memory: list[int] = []
        self._handles: list[Any] = []

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def __enter__(self) -> _StepClock:
        def pre(module: Any, args: Any, kwargs: Any) -> None:
            self._sync()
            if self.cuda:
                self.torch.cuda.reset_peak_memory_stats()
            self.starts.append(time.perf_counter())

        def post(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            self._sync()
            self.ends.append(time.perf_counter())
            self.memory.append(int(self.torch.cuda.max_memory_allocated()) if self.cuda else _rss_bytes())

        self._handles = [self.model.register_forward_pre_hook(pre, with_kwargs=True),
                         self.model.register_forward_hook(post, with_kwargs=True)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()


def _generate(model: Any, batch: int, prompt: int, new_tokens: int, seed: int,
              past_cache: Any = None) -> tuple[float, list[float], list[int], float]:
    """One timed generate: (start, forward ends, memory per forward, end); the peak memory of the run is
    ``_last_peak`` (VmHWM after a reset on Linux, CUDA's max allocated)."""
    import torch

    dev = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(seed)
    past = past_cache.get_seq_length() if past_cache is not None else 0
    ids = torch.randint(0, vocab, (batch, past + prompt), generator=gen).to(dev)
    extra = {} if past_cache is None else {"past_key_values": past_cache}
    cuda = dev.type == "cuda"
    global _last_peak
    hwm = False if cuda else _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), _StepClock(model, cuda) as clock:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, num_beams=1, use_cache=True, pad_token_id=0,
                       **extra)
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
    if past_cache is not None:
        past_cache.crop(-(past_cache.get_seq_length() - past))  # back to the filled context for the next run
    peak = _peak_rss_bytes() if hwm else None
    _last_peak = max(clock.memory + ([peak] if peak is not None else []))
    _last_peak_how[0] = ("torch.cuda.max_memory_allocated" if cuda else
                         "VmHWM (resident-set high-water mark, reset before the run)" if peak is not None else
                         "the largest resident set at a forward's end")
    return t0, clock.ends, clock.memory, t1


_last_peak = 0
_last_peak_how = [""]


def build_reference(config: Any, *, tiny: bool = False, dtype: str = "fp32", torch_device: str = "cpu",
                    as_family: str | None = None, seed: int = 0) -> tuple[Any, Any]:
    """(transformers model with random weights at ``dtype`` on ``torch_device``, the config it profiles)."""
    import torch

    from .reference import reference

    ref = reference(config, tiny=tiny, as_family=as_family)
    baseline = _rss_bytes() if torch_device == "cpu" else int(torch.cuda.memory_allocated())
    model = ref.build(device="cpu", seed=seed)  # real weights, even at full size
    model = model.to(device=torch_device, dtype=getattr(torch, _TORCH_DTYPES[dtype]))
    model._llm_profiler_baseline = baseline  # the runtime before the model: RunMemory.baseline
    return model, ref.data


def random_cache(model: Any, batch: int, past: int, seed: int = 0) -> Any:
    """A ``DynamicCache`` holding ``past`` tokens of random keys and values in every layer, at the model's dtype
    and device: a long context without running its prefill (an 8k bf16 prefill takes minutes on a CPU)."""
    import torch
    from transformers import DynamicCache

    cfg = model.config.get_text_config()
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    p = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    cache = DynamicCache(config=model.config)
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(batch, heads, past, head_dim, generator=gen).to(device=p.device, dtype=p.dtype)
        v = torch.randn(batch, heads, past, head_dim, generator=gen).to(device=p.device, dtype=p.dtype)
        cache.update(k, v, layer)
    return cache


def dispatched_ops_by_module(model: Any, batch: int, seq: int, past: int = 0) -> dict[str, int]:
    """Aten ops one forward of ``seq`` new tokens after an uncounted ``past``-token prefill dispatches, per
    innermost module path (every op: compute, views, copies, creations; the root model is ""), on whatever
    device the model is (meta: full size at no cost). What ``kernels.EAGER_OPS`` predicts per node."""
    from collections import Counter

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from .measure import _cache_argument, _ModuleStack, _returned_cache

    dev = next(model.parameters()).device
    calls: Counter[str] = Counter()

    def tokens(n: int) -> Any:
        return torch.zeros(batch, n, dtype=torch.long, device=dev)

    with torch.no_grad():
        cache = _returned_cache(model(input_ids=tokens(past), use_cache=True)) if past else None
        with _ModuleStack(model) as stack:
            class _Count(TorchDispatchMode):
                def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                    calls[stack.current] += 1
                    return func(*args, **(kwargs or {}))

            with _Count():
                model(input_ids=tokens(seq), use_cache=True, **{_cache_argument(model): cache})
    return dict(calls)


def run_generate(config: Any, batch: int = 1, prompt: int = 16, new_tokens: int = 8, *, tiny: bool = False,
                 dtype: str = "fp32", torch_device: str = "cpu", device: DeviceSpec | str | None = None,
                 model: Any = None, repeats: int = 1, warmup: bool = True, bench_seconds: float = 0.5,
                 as_family: str | None = None, name: str | None = None, device_model: Any = None,
                 engine: str = "hf-eager", past_cache: Any = None) -> MeasuredRun:
    """Time ``generate`` of ``new_tokens`` tokens after a ``prompt``-token prompt for ``batch`` sequences and
    compare with the roofline prediction. ``model``: an already built transformers model for ``config``
    (e.g. from ``build_reference``); ``repeats``: timed runs, the per-forward median is reported;
    ``device_model``: the prediction's ``hardware.roofline.DeviceModel`` (None: the plain roofline);
    ``engine``: the execution profile predicted (the run is transformers eager: ``hf-eager``);
    ``past_cache``: a filled transformers cache (``random_cache``) of P tokens the run continues from
    (the prompt then follows P cached tokens; the cache is cropped back to P after each run)."""
    try:
        import torch
    except ImportError as err:  # pragma: no cover - the validate extra
        from ..errors import ValidationUnavailableError

        raise ValidationUnavailableError(f"measured runs need torch and transformers ({err.name} is missing)") from None
    from ..hardware.cpu_bench import process_allocator
    from ..profile import profile_model

    if dtype not in _TORCH_DTYPES:
        raise QueryError(f"dtype must be one of {', '.join(_TORCH_DTYPES)}, got {dtype!r}")
    if new_tokens < 2 or repeats < 1:
        raise QueryError("a measured run needs new_tokens >= 2 (a prefill and at least one decode) and repeats >= 1")
    past = past_cache.get_seq_length() if past_cache is not None else 0
    phase = Phase.generate(batch, prompt, new_tokens, past, LM_HEAD_LAST)
    name = name or load_config(config).name + (" (tiny)" if tiny else "")
    if model is None:
        model, data = build_reference(config, tiny=tiny, dtype=dtype, torch_device=torch_device, as_family=as_family)
    else:
        from .reference import reference

        data = reference(config, tiny=tiny, as_family=as_family).data
    profile = profile_model(data, as_family=as_family)
    torch_dev = next(model.parameters()).device
    if device is None:
        if torch_dev.type != "cpu":
            raise QueryError("a run on an accelerator needs device= (its spec, e.g. 'h100') for the prediction")
        device = measure_local_cpu(bench_seconds)
    dev = get_device(device)
    st = settings(dev, weight_dtype=dtype, act_dtype=dtype, kv_dtype=dtype, compute_dtype=dtype,
                  device_model=device_model)
    predicted = phase_report(profile, phase, st, engine=engine)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cuda_run = torch_dev.type == "cuda"
    loaded = int(torch.cuda.memory_allocated()) if cuda_run else _rss_bytes()

    notes: list[str] = []
    torch.manual_seed(0)
    if warmup:
        _generate(model, batch, prompt, 2, seed=1, past_cache=past_cache)
    runs = []
    peak_memory = 0
    for r in range(repeats):
        t0, ends, memory, t1 = _generate(model, batch, prompt, new_tokens, seed=2 + r, past_cache=past_cache)
        peak_memory = max(peak_memory, _last_peak)
        if len(ends) != new_tokens:
            notes.append(f"run {r}: {len(ends)} forwards for {new_tokens} new tokens")
        steps = [ends[0] - t0] + [b - a for a, b in zip(ends, ends[1:])]
        runs.append((steps, memory, t1 - t0))
    step_s = [statistics.median(col) for col in zip(*(s for s, _, _ in runs))]
    memory = [max(col) for col in zip(*(m for _, m, _ in runs))]
    total = statistics.median(t for _, _, t in runs)
    ttft, tpot = step_s[0], statistics.fmean(step_s[1:])

    pre, dec = predicted.prefill, predicted.decode
    assert pre is not None and dec is not None and predicted.ttft_s and predicted.tpot_s
    decode_steps = new_tokens - 1
    dec_flops, dec_bytes = dec.flops.total // decode_steps, dec.io.total // decode_steps
    peak, bw = dev.peak(st.compute_dtype), dev.memory_bandwidth
    cuda = torch_dev.type == "cuda"
    usage = predicted.memory
    assert usage is not None
    run_memory = RunMemory(baseline=getattr(model, "_llm_profiler_baseline", None), loaded=loaded, peak=peak_memory,
                           weights=usage.weights, kv_cache=usage.kv_cache, activations=usage.activations,
                           how=_last_peak_how[0], allocator=None if cuda_run else process_allocator())
    return MeasuredRun(
        model=name, device=dev.name, torch_device=str(torch_dev),
        dtype=dtype, batch=batch, prompt=prompt, new_tokens=new_tokens, ttft_s=ttft, tpot_s=tpot, step_s=step_s,
        tokens_per_s=batch * new_tokens / total, total_s=total, peak_memory_bytes=memory,
        memory_note="torch.cuda.max_memory_allocated per forward" if cuda else
                    "resident set size at each forward's end (the CPU allocator has no per-forward peak)",
        predicted_ttft_s=predicted.ttft_s, predicted_tpot_s=predicted.tpot_s,
        predicted_tokens_per_s=predicted.tokens_per_s, ttft_ratio=ttft / predicted.ttft_s,
        tpot_ratio=tpot / predicted.tpot_s, prefill_flops=pre.flops.total, prefill_bytes=pre.io.total,
        decode_flops=dec_flops, decode_bytes=dec_bytes,
        prefill_achieved_flops_per_s=pre.flops.total / ttft, prefill_achieved_bytes_per_s=pre.io.total / ttft,
        decode_achieved_flops_per_s=dec_flops / tpot, decode_achieved_bytes_per_s=dec_bytes / tpot,
        prefill_mfu=pre.flops.total / ttft / peak, prefill_mbu=pre.io.total / ttft / bw,
        decode_mfu=dec_flops / tpot / peak, decode_mbu=dec_bytes / tpot / bw,
        notes=notes + list(predicted.notes), memory=run_memory, load_average=load,
    )


def format_run(run: MeasuredRun) -> str:
    """A small measured-vs-predicted table."""
    def ms(x: float) -> str:
        return f"{x * 1e3:10.2f} ms"

    lines = [
        f"{run.model}: batch {run.batch}, prompt {run.prompt}, {run.new_tokens} new tokens, {run.dtype} on "
        f"{run.torch_device} (prediction: {run.device})",
        f"{'':22}{'measured':>13}{'predicted':>13}{'ratio':>8}",
        f"{'TTFT (prefill)':22}{ms(run.ttft_s):>13}{ms(run.predicted_ttft_s):>13}{run.ttft_ratio:8.2f}",
        f"{'TPOT (decode step)':22}{ms(run.tpot_s):>13}{ms(run.predicted_tpot_s):>13}{run.tpot_ratio:8.2f}",
        f"{'tokens/s':22}{run.tokens_per_s:13.1f}{run.predicted_tokens_per_s:13.1f}"
        f"{run.tokens_per_s / run.predicted_tokens_per_s:8.2f}",
        f"prefill: {run.prefill_flops / 1e9:.2f} GFLOP, {run.prefill_bytes / 1e6:.1f} MB -> achieved "
        f"{run.prefill_achieved_flops_per_s / 1e9:.1f} GFLOP/s (MFU {run.prefill_mfu:.1%}), "
        f"{run.prefill_achieved_bytes_per_s / 1e9:.2f} GB/s (MBU {run.prefill_mbu:.1%})",
        f"decode step: {run.decode_flops / 1e9:.3f} GFLOP, {run.decode_bytes / 1e6:.1f} MB -> achieved "
        f"{run.decode_achieved_flops_per_s / 1e9:.1f} GFLOP/s (MFU {run.decode_mfu:.1%}), "
        f"{run.decode_achieved_bytes_per_s / 1e9:.2f} GB/s (MBU {run.decode_mbu:.1%})",
        f"memory per forward ({run.memory_note}): first {run.peak_memory_bytes[0] / 2**20:.0f} MiB, "
        f"last {run.peak_memory_bytes[-1] / 2**20:.0f} MiB",
    ]
    if run.memory is not None:
        lines.append(format_memory(run.memory))
    if run.load_average is not None:
        lines.append(f"load average when the run started: {run.load_average:.2f}")
    return "\n".join(lines + [f"note: {n}" for n in run.notes])


def format_memory(mem: RunMemory) -> str:
    """One line: the measured memory beside weights + KV + activations (+ the runtime baseline)."""
    mib = 2**20
    base = f"baseline {mem.baseline / mib:.0f} MiB + " if mem.baseline is not None else ""
    loaded = (f"loaded {mem.loaded / mib:.0f} MiB ({base}weights {mem.weights / mib:.0f} MiB predicted"
              + (f" = {(mem.baseline + mem.weights) / mib:.0f} MiB" if mem.baseline is not None else "") + ")")
    return (f"memory: {loaded}; peak during generate {mem.peak / mib:.0f} MiB ({mem.how}): growth "
            f"{mem.growth / mib:.1f} MiB against KV {mem.kv_cache / mib:.1f} + activations "
            f"{mem.activations / mib:.1f} = {mem.predicted_growth / mib:.1f} MiB predicted (ratio {mem.growth_ratio:.2f})"
            + ("; allocator retaining: memory freed earlier stays resident and is reused first"
               if mem.allocator == "retaining" else ""))


__all__ = ["build_reference", "dispatched_ops_by_module", "random_cache", "format_memory", "format_run", "run_generate"]
