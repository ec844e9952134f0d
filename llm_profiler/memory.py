"""Memory fit: weights + KV cache + the peak live activations of one forward, against a device.

- weights: every parameter once at its storage dtype (``traffic.ModelTraffic.weight_storage``: matrices
  at the weight dtype with int4 group metadata, norms and biases at the activation dtype).
- KV cache: the graph's ``cache`` elements (K and V of every layer, sliding layers holding their window)
  after ``context`` tokens, at the KV dtype.
- peak activations of one forward (B sequences of S new tokens after P cached ones): the largest set of
  tensors alive at once in the eager transformers forward, modelled from the tensors' lifetimes:

  - always alive: the causal mask, B*S*keys at the activation dtype (built once, used by every layer;
    one per attention type, keys = P + S, or Min(P, w-1) + S for sliding layers).
  - attention, at the softmax: the residual stream and its normed copy (2*B*S*h), the rotated queries
    (B*S*H*D), K and V expanded to H heads by ``repeat_kv`` when KV < H (2*B*H*keys*D), the masked
    scores (B*H*S*keys) and the fp32 probabilities eager softmax writes (B*H*S*keys x 4 bytes); below fp32
    also the fp32 copy of the scores that ``softmax(dtype=float32)`` converts its input to first (another
    B*H*S*keys x 4 bytes; measured by ``validation.peak``).
  - MLP, at the gate product: residual and normed input (2*B*S*h), act(gate), up and their product
    (3*B*S*I; 2*B*S*I without a gate).
  - head: the final hidden states (B*S*h) and the logits (B*S*V, or B*V on the last position only).

  peak = mask + max(attention, MLP, head). Tensors the allocator caches or fragments are not modelled.
  ``attention="fused"`` models flash / SDPA kernels: no scores, probabilities or expanded K / V (the
  mask is still counted, as transformers builds it for SDPA too).

The fit solves the largest batch (or context) with weights + KV(batch, context) + max(activations of the
prompt's prefill, activations of the last decode step) <= usable bytes (capacity x memory_fraction -
overhead_bytes), exactly: the total is monotone, so a doubling then a binary search over integers finds
the boundary (the answer fits, one more does not).
"""

from __future__ import annotations

from typing import Any

from . import metrics as M
from .checks import check_float, check_int
from .engines import HF_EAGER, VLLM, ExecutionProfile, get_engine, paged_tokens
from .errors import QueryError
from .formula import B, Formula, P, S, compile_formula, fmin, total
from .hardware import DeviceSpec, get_device
from .hardware.dtypes import DType
from .phases import LM_HEAD_ALL, LM_HEAD_LAST, check_lm_head
from .profile import ModelProfile, profile_model
from .results import FitResult, MemoryUsage
from .spec import SLIDING_ATTENTION
from .traffic import Dtypes, dtypes, model_traffic

_MAX = 1 << 40  # no batch or context beyond this


def _model(source: Any) -> ModelProfile:
    return source if isinstance(source, ModelProfile) else profile_model(source)


def _keys(spec: Any) -> list[Formula]:
    """Keys of each attention type the model has (full: P + S; sliding: Min(P, w-1) + S)."""
    types = set(spec.layer_types) or {"full_attention"}
    out = []
    if types - {SLIDING_ATTENTION}:
        out.append(P + S)
    if SLIDING_ATTENTION in types and spec.sliding_window:
        out.append(fmin(P, spec.sliding_window - 1) + S)
    return out


def activation_expr(model: ModelProfile, dt: Dtypes, lm_head: str = LM_HEAD_ALL, attention: str = "eager") -> Any:
    """Peak live activation bytes of one forward, as a sympy expression in B, S, P (the model of the module
    docstring). ``attention="fused"`` (flash / SDPA kernels) keeps no scores, probabilities or expanded K/V."""
    import sympy

    mask, candidates = activation_formulas(model, dt, lm_head, attention)
    return mask.to_sympy() + sympy.Max(*(c.to_sympy() for c in candidates))


def activation_formulas(model: ModelProfile, dt: Dtypes, lm_head: str = LM_HEAD_ALL,
                        attention: str = "eager") -> tuple[Formula, list[Formula]]:
    """(mask, [attention, MLP, head]): the peak is mask + the largest of the three (module docstring)."""
    attention_kind = attention
    if attention_kind not in ("eager", "fused"):
        raise QueryError(f"attention must be 'eager' or 'fused', got {attention_kind!r}")
    spec = model.spec
    a = dt.act.bits // 8
    h, H, KV, D, inter, V = (spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim,
                             spec.intermediate_size, spec.vocab_size)
    keys = _keys(spec)
    widest = keys[0]  # full-attention keys (P + S) are never fewer than a window's
    mask = total(B * S * k * a for k in keys)
    scores = B * H * S * widest
    repeated = 2 * B * H * widest * D * a if KV < H else 0
    attn = 2 * B * S * h * a + B * S * H * D * a
    if attention_kind == "eager":
        # softmax(x, dim, dtype=float32) runs _softmax(x.to(float32)): below fp32 the converted copy (4 bytes
        # a score) is alive with x (a) and the fp32 output (4); at fp32 .to returns x itself (CUDA fp16 alone
        # skips the copy: half_to_float, so this over-counts it by 4 bytes a score)
        converted = scores * 4 if a < 4 else 0
        attn += repeated + scores * a + converted + scores * 4
    mlp = 2 * B * S * h * a + (3 if spec.gated_mlp else 2) * B * S * inter * a
    rows = B if check_lm_head(lm_head) == LM_HEAD_LAST else B * S
    head = B * S * h * a + rows * V * a
    return mask, [attn, mlp, head]


def _dtypes(source: Any, weight_dtype: Any, act_dtype: Any, kv_dtype: Any, quantization: Any) -> tuple[Dtypes, list[str]]:
    """The storage dtypes with the weights as ``quantization`` says (``quantization.resolve``: the config's
    ``quantization_config`` unless an explicit ``weight_dtype`` overrides it), and the notes saying so."""
    from .quantization import resolve

    quant, notes = resolve(source, weight_dtype, quantization)
    return dtypes(weight_dtype or "bf16", act_dtype, kv_dtype, quant), notes


def weights_bytes(source: Any, weight_dtype: str | None = None, act_dtype: str = "bf16",
                  quantization: Any = "config") -> int:
    """Bytes the weights occupy: at ``weight_dtype`` when given, else as the config's
    ``quantization_config`` stores them (bf16 without one; ``quantization="none"``: bf16 regardless)."""
    model = _model(source)
    dt, _ = _dtypes(source, weight_dtype, act_dtype, None, quantization)
    return model_traffic(model, dt).weight_storage()


def kv_cache_bytes(source: Any, batch: int, context: int, kv_dtype: str = "bf16") -> int:
    """KV-cache bytes of ``batch`` sequences holding ``context`` tokens (elements after a prefill of them)."""
    model = _model(source)
    d = dtypes("bf16", kv_dtype)
    return model.count(M.CACHE, "model", batch, context, 0) * (d.kv.bits // 8)


class _Usage:
    """The memory formulas of one model, dtypes and execution profile, evaluated at (batch, seq, context).

    Under a paged KV cache (``engine.kv_block``) each sequence holds whole pages; under a step token budget
    (``engine.max_batched_tokens``, chunked prefill) the prompt is prefilled in chunks of at most that many
    tokens, so the activations are those of one chunk, not of batch x seq tokens at once."""

    def __init__(self, model: ModelProfile, dt: Dtypes, lm_head: str, attention: str = "eager",
                 engine: ExecutionProfile | None = None) -> None:
        self.model, self.dt, self.lm_head = model, dt, lm_head
        self.engine = engine or get_engine(HF_EAGER)
        self.weights = model_traffic(model, dt).weight_storage()
        mask, candidates = activation_formulas(model, dt, lm_head, attention)
        if not self.engine.builds_mask:
            mask = Formula()
        self._mask, self._candidates = compile_formula(mask), [compile_formula(c) for c in candidates]

    def _act_fn(self, batch: int, seq: int, past: int) -> int:
        return int(self._mask(batch, seq, past)) + max(int(c(batch, seq, past)) for c in self._candidates)

    def at(self, batch: int, seq: int, context: int, capacity: int) -> MemoryUsage:
        held = paged_tokens(context, self.engine)
        kv = self.model.count(M.CACHE, "model", batch, held, 0) * (self.dt.kv.bits // 8)
        budget = self.engine.max_batched_tokens
        if budget is None:
            act = int(self._act_fn(batch, seq, 0))
        else:  # chunked prefill: one step holds at most `budget` prompt tokens
            act = int(self._act_fn(1, min(batch * seq, budget), 0))
        if context > seq:  # the last decode step attends to the whole context
            act = max(act, int(self._act_fn(batch if budget is None else min(batch, budget), 1, context - 1)))
        total = self.weights + kv + act
        return MemoryUsage(batch=batch, seq=seq, context=context, weights=self.weights, kv_cache=kv,
                           activations=act, total=total, capacity=capacity, fits=total <= capacity)


def _capacity(dev: DeviceSpec, memory_fraction: float, overhead_bytes: int) -> int:
    fraction = check_float(memory_fraction, "memory_fraction", minimum=0, maximum=1, min_open=True)
    overhead = check_int(overhead_bytes, "overhead_bytes", minimum=0)
    return int(dev.memory_bytes * fraction) - overhead


_USAGES: dict[tuple[int, Dtypes, str, str, str], tuple[ModelProfile, _Usage]] = {}


def _usage(model: ModelProfile, dt: Dtypes, lm_head: str, attention: str, eng: ExecutionProfile) -> _Usage:
    """The compiled memory formulas of a model, dtypes and scenario (built once: the roofline asks per call)."""
    key = (id(model), dt, lm_head, attention, eng.name)
    if key not in _USAGES:  # the model is kept beside its formulas, so its id is not reused
        _USAGES[key] = (model, _Usage(model, dt, lm_head, attention, eng))
    return _USAGES[key][1]


def _scenario(engine: str | ExecutionProfile | None, lm_head: str | None,
              attention: str | None) -> tuple[ExecutionProfile, str, str]:
    """The execution profile (default ``vllm``: what a serving user expects) and the lm_head / attention
    kinds it implies unless given."""
    eng = get_engine(engine, default=VLLM)
    return eng, check_lm_head(lm_head or eng.lm_head), attention or eng.memory_attention


def memory_usage(source: Any, batch: int, seq: int, context: int | None = None,
                 device: DeviceSpec | str = "a100-80gb", *, weight_dtype: str | DType | None = None,
                 act_dtype: str | DType = "bf16", kv_dtype: str | DType | None = None, lm_head: str | None = None,
                 memory_fraction: float = 1.0, overhead_bytes: int = 0, attention: str | None = None,
                 engine: str | ExecutionProfile | None = VLLM, quantization: Any = "config") -> MemoryUsage:
    """Bytes needed to prefill ``seq`` tokens of ``batch`` sequences and hold ``context`` (default seq),
    under ``engine`` (default ``vllm``; ``hf-eager`` for the transformers forward)."""
    model, dev = _model(source), get_device(device)
    context = seq if context is None else context
    _check(batch, seq, context)
    eng, lm_head, attention = _scenario(engine, lm_head, attention)
    dt, _ = _dtypes(source, weight_dtype, act_dtype, kv_dtype, quantization)
    usage = _usage(model, dt, lm_head, attention, eng)
    return usage.at(batch, seq, context, _capacity(dev, memory_fraction, overhead_bytes))


def _check(batch: int, seq: int, context: int) -> None:
    for name, v in (("batch", batch), ("seq", seq), ("context", context)):
        check_int(v, name, minimum=1, maximum=_MAX)
    if context < seq:
        raise QueryError(f"context ({context}) must be at least the prompt length seq ({seq})")


def largest_fitting(fits: Any) -> int:
    """The largest n >= 0 with fits(n) (fits(0) is True, fits monotone decreasing), by doubling + bisection."""
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > _MAX:
            raise QueryError("no memory limit reached below 2**40: check the device capacity")
    while hi - lo > 1:  # invariant: fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


class _Ranks:
    """The memory of one rank of a parallel plan (``llm_profiler.parallel``): every pipeline stage's rank
    (sharded weights, its KV heads, activations of the full model: an upper bound), at batch / dp each; the
    stage that needs the most is the answer."""

    def __init__(self, model: ModelProfile, plan: Any, dt: Dtypes, lm_head: str, attention: str,
                 eng: ExecutionProfile) -> None:
        from .parallel.plan import check_plan
        from .parallel.shard import rank_model

        check_plan(plan, model.spec)
        self.plan = plan
        last = lm_head == LM_HEAD_LAST
        self.stages = [_usage(rank_model(model, plan, s, last), dt, lm_head, attention, eng) for s in range(plan.pp)]
        self.engine, self.lm_head = eng, lm_head

    def at(self, batch: int, seq: int, context: int, capacity: int) -> MemoryUsage:
        """The usage of the busiest rank when each of the dp replicas holds ``batch`` sequences."""
        return max((u.at(batch, seq, context, capacity) for u in self.stages), key=lambda u: u.total)


def _plan_and_device(device: DeviceSpec | str, plan: Any, system: Any) -> tuple[Any, DeviceSpec]:
    """(ParallelPlan or None, the device one rank runs on): a system's device replaces ``device``."""
    if plan is None and system is None:
        return None, get_device(device)
    from .hardware.systems import get_system
    from .parallel.plan import ParallelPlan, make_plan

    pl = plan if isinstance(plan, ParallelPlan) else make_plan(**(plan or {}))
    dev = get_system(system).device if system is not None else get_device(device)
    return pl, dev


def largest_batch(source: Any, device: DeviceSpec | str = "a100-80gb", seq: int = 2048, context: int | None = None, *,
                  weight_dtype: str | None = None, act_dtype: str = "bf16", kv_dtype: str | None = None,
                  lm_head: str | None = None, memory_fraction: float = 1.0, overhead_bytes: int = 0,
                  attention: str | None = None, engine: str | ExecutionProfile | None = VLLM,
                  quantization: Any = "config", plan: Any = None, system: Any = None) -> FitResult:
    """The largest batch whose prompt (``seq``) prefill and KV cache at ``context`` (default seq) fit, under
    ``engine`` (default ``vllm``: paged KV, chunked prefill, fused attention; ``hf-eager``: one transformers
    forward of the whole batch). ``plan`` (a ``parallel.ParallelPlan`` or a dict of ``make_plan``'s
    arguments) / ``system``: per rank of the plan (the answer is the global batch, dp x a rank's); when not
    even one sequence fits, ``smallest_plan`` names the smallest plan whose ranks hold one."""
    model = _model(source)
    pl, dev = _plan_and_device(device, plan, system)
    context = seq if context is None else context
    _check(1, seq, context)
    dt, quant_notes = _dtypes(source, weight_dtype, act_dtype, kv_dtype, quantization)
    eng, lm_head, attention = _scenario(engine, lm_head, attention)
    cap = _capacity(dev, memory_fraction, overhead_bytes)
    usage: Any = _usage(model, dt, lm_head, attention, eng) if pl is None else _Ranks(model, pl, dt, lm_head, attention, eng)
    best = largest_fitting(lambda b: usage.at(b, seq, context, cap).fits)
    result = _fit(model, dev, "batch", best, dt, usage.at(best, seq, context, cap) if best else None,
                  usage.at(best + 1, seq, context, cap), usage, quant_notes)
    dp = 1 if pl is None else pl.dp
    update: dict[str, Any] = {"value": best * dp}
    if pl is not None:
        update["plan"] = pl.describe()
        update["notes"] = [*result.notes, f"per rank of {pl.describe()} ({pl.devices} x {dev.name}): each of the "
                           f"{dp} data-parallel replica{'s' if dp > 1 else ''} holds batch {best}"]
    if not best and (pl is None or pl.devices == 1):
        from .parallel.search import smallest_plan

        found = smallest_plan(model, lambda p: _Ranks(model, p, dt, lm_head, attention, eng).at(1, seq, context, cap).fits)
        if found is not None:
            update["smallest_plan"] = found.describe()
            update["notes"] = [*update.get("notes", result.notes),
                               f"the smallest plan that fits batch 1: {found.describe()} ({found.devices} x {dev.name}); "
                               f"`fit --tp {found.tp} --pp {found.pp}` gives its largest batch"]
    return result.model_copy(update=update)


def largest_context(source: Any, device: DeviceSpec | str = "a100-80gb", batch: int = 1, seq: int | None = None, *,
                    weight_dtype: str | None = None, act_dtype: str = "bf16", kv_dtype: str | None = None,
                    lm_head: str | None = None, memory_fraction: float = 1.0, overhead_bytes: int = 0,
                    attention: str | None = None, engine: str | ExecutionProfile | None = VLLM,
                    quantization: Any = "config", plan: Any = None, system: Any = None) -> FitResult:
    """The longest context that fits ``batch`` sequences: prefilled (``seq`` None), or a prompt of ``seq``
    tokens generated on to that context; under ``engine`` as ``largest_batch``; ``plan`` / ``system``: per
    rank, each data-parallel replica holding batch / dp sequences."""
    model = _model(source)
    pl, dev = _plan_and_device(device, plan, system)
    _check(batch, seq or 1, seq or 1)
    dt, quant_notes = _dtypes(source, weight_dtype, act_dtype, kv_dtype, quantization)
    eng, lm_head, attention = _scenario(engine, lm_head, attention)
    cap = _capacity(dev, memory_fraction, overhead_bytes)
    usage: Any = _usage(model, dt, lm_head, attention, eng) if pl is None else _Ranks(model, pl, dt, lm_head, attention, eng)
    rank_batch = batch
    if pl is not None:
        from .parallel.plan import PlanError

        if batch % pl.dp:
            raise PlanError(f"batch {batch} is not divisible by dp={pl.dp}; use a multiple of {pl.dp}")
        rank_batch = batch // pl.dp

    def at(c: int) -> MemoryUsage:
        return usage.at(rank_batch, c if seq is None else min(seq, c), c, cap)

    best = largest_fitting(lambda c: at(c).fits)
    result = _fit(model, dev, "context", best, dt, at(best) if best else None, at(best + 1), usage, quant_notes)
    return result if pl is None else result.model_copy(update={"plan": pl.describe()})


def describe(usage: Any) -> str:
    """The scenario a memory answer solved, in words."""
    eng = usage.engine
    prefill = (f"prompts prefilled in chunks of at most {eng.max_batched_tokens} tokens"
               if eng.max_batched_tokens else "the whole batch prefilled in one forward")
    kv = f"KV in pages of {eng.kv_block} tokens" if eng.kv_block else "KV exactly the context"
    lm = "logits on the last position" if usage.lm_head == LM_HEAD_LAST else "logits on every position"
    return f"engine {eng.name}: {prefill}, {kv}, {lm}"


def _fit(model: ModelProfile, dev: DeviceSpec, what: str, value: int, dt: Dtypes, at_value: MemoryUsage | None,
         at_next: MemoryUsage, usage: Any, quant_notes: list[str] | None = None) -> FitResult:
    notes = [describe(usage), *(quant_notes or [])]
    if not value:
        notes.append(f"not even {what} 1 fits: {at_next.total} bytes needed, {at_next.capacity} usable")
    return FitResult(model=model.spec.name or model.spec.model_type, device=dev.name, solved_for=what, value=value,
                     dtypes=dt.as_dict(), at_value=at_value, at_next=at_next, notes=notes, engine=usage.engine.name)


def activation_bytes(source: Any, batch: int, seq: int, past: int = 0, act_dtype: str = "bf16",
                     lm_head: str = LM_HEAD_ALL, attention: str = "eager") -> int:
    """Peak live activation bytes of one forward (the model of the module docstring)."""
    model = _model(source)
    mask, candidates = activation_formulas(model, dtypes("bf16", act_dtype), lm_head, attention)
    return int(mask(batch, seq, past)) + max(int(c(batch, seq, past)) for c in candidates)


__all__ = ["activation_bytes", "activation_expr", "kv_cache_bytes", "largest_batch", "largest_context", "largest_fitting",
           "memory_usage", "weights_bytes"]
