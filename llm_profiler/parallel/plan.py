"""A parallel plan: how many ranks each kind of parallelism uses, validated against a model.

``ParallelPlan`` (frozen pydantic): ``tp`` tensor parallel ranks (Megatron-LM column / row sharding of the
linears, heads split), ``pp`` pipeline stages (layers staged), ``dp`` data-parallel replicas (the batch
split), ``ep`` expert-parallel ranks (routed experts placed over ``ep`` of the ``dp`` replicas, DeepSpeed-MoE /
GShard style: every rank keeps its own tokens and exchanges them with all-to-all), ``sp`` Megatron sequence
parallelism inside the TP group (norms and residuals on S/tp tokens; reduce-scatter + all-gather instead of
all-reduce), ``cp`` context parallelism for a prefill (each of ``cp`` ranks runs S/cp of the prompt's tokens
and keeps their K / V; the keys and values are all-gathered per layer, as Llama 3's context parallelism
does), ``micro_batches`` for the pipeline, and ``embedding``: ``vocab`` (vocab-parallel embedding, as
Megatron-LM and vLLM's VocabParallelEmbedding) or ``replicated`` (transformers' ``base_model_tp_plan`` leaves
the embedding whole). Devices = tp x cp x pp x dp.

``make_plan(...)`` is the one place the defaults live (the CLI options take theirs from it);
``check_plan(plan, spec)`` says why a plan does not apply to a model, naming the argument and what is
allowed (``PlanError``, a ``ProfilerError``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ArgumentError
from ..spec import ArchSpec

TP_MIXERS = frozenset({"attention", "sliding_attention", "chunked_attention", "mla", "sparse_attention"})
# Token mixers split by heads / channels under tp (vLLM's sharding): gated DeltaNet, Mamba-2, LFM2's short conv.
LINEAR_MIXERS = frozenset({"linear_attention", "state_space"})


def linear_mixer_error(spec: ArchSpec, tp: int) -> str | None:
    """Why ``tp`` cannot split the linear-attention / state-space mixers of ``spec`` (None: it can), as vLLM
    shards them: a gated DeltaNet by its key and value heads (qwen3_next.py's Qwen3NextGatedDeltaNet), a
    Mamba-2 mixer by its heads with its B / C groups split too (mamba_mixer2.py; n_groups not divisible by
    tp are replicated there, with an all-reduce inside the gated norm: not modelled), a Mamba-1 mixer by its
    channels (mamba_mixer.py: x_proj row-parallel, so its small output is all-reduced, dt_proj column-parallel),
    LFM2's short conv by its hidden channels (lfm2.py's ShortConv). Other linear mixers are not modelled."""
    from ..graph.linear_attention import DeltaNet
    from ..graph.ssm import Mamba1, Mamba2

    name = spec.name or spec.model_type
    kinds = {layer.mixer.kind for layer in spec.layers} & LINEAR_MIXERS
    delta, mamba = getattr(spec, "delta_net", None), getattr(spec, "mamba", None) or getattr(spec, "mixer", None)
    conv = getattr(spec, "conv_kernel", None)
    if "linear_attention" in kinds:
        if isinstance(delta, DeltaNet):
            for count, what in ((delta.key_heads, "linear-attention key heads"),
                                (delta.value_heads, "linear-attention value heads")):
                if count % tp:
                    allowed = ", ".join(str(d) for d in divisors(delta.key_heads) if delta.value_heads % d == 0)
                    return f"tp={tp} does not divide the {count} {what} of {name}; allowed tp: {allowed}"
        elif isinstance(conv, int) and delta is None:  # LFM2's short convolution over the hidden channels
            if spec.hidden_size % tp:
                return f"tp={tp} does not divide the {spec.hidden_size} short-conv channels of {name}"
        else:
            return f"tp={tp}: tensor parallelism of {name}'s linear-attention layers is not modelled; use tp=1 with pp / dp"
    if "state_space" in kinds:
        if isinstance(mamba, Mamba1):
            if mamba.inner % tp:
                allowed = ", ".join(str(d) for d in divisors(mamba.inner) if d <= 64)
                return f"tp={tp} does not divide the {mamba.inner} Mamba channels of {name}; allowed tp: {allowed}"
            return None
        if not isinstance(mamba, Mamba2):
            return f"tp={tp}: tensor parallelism of {name}'s state-space layers is not modelled; use tp=1 with pp / dp"
        for count, what in ((mamba.heads, "Mamba-2 heads"), (mamba.groups, "Mamba-2 B / C groups"),
                            (mamba.norm_groups, "Mamba-2 gated-norm groups")):
            if count % tp:
                allowed = ", ".join(str(d) for d in divisors(mamba.heads)
                                    if mamba.groups % d == 0 and mamba.norm_groups % d == 0)
                return (f"tp={tp} does not divide the {count} {what} of {name} (groups that do not divide tp are "
                        f"replicated by vLLM, with an all-reduce in the gated norm: not modelled); allowed tp: {allowed}")
    return None


def has_attention(spec: ArchSpec) -> bool:
    """Whether any layer attends (a pure state-space stack's head fields are placeholders)."""
    return any(layer.mixer.kind in TP_MIXERS for layer in spec.layers)


class PlanError(ArgumentError):
    """A parallel plan that is malformed or does not apply to the model: names the argument and the values
    that are allowed."""


class ParallelPlan(BaseModel):
    """tp x cp x pp x dp devices; ep of the dp replicas share the routed experts; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tp: int = Field(default=1, ge=1, le=4096)
    pp: int = Field(default=1, ge=1, le=4096)
    dp: int = Field(default=1, ge=1, le=1 << 20)
    ep: int = Field(default=1, ge=1, le=4096)
    cp: int = Field(default=1, ge=1, le=4096)
    sp: bool = False
    micro_batches: int = Field(default=1, ge=1, le=1 << 20)
    embedding: Literal["vocab", "replicated"] = "vocab"

    @property
    def devices(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    def describe(self) -> str:
        """``tp=8``, ``tp=2 pp=2 m=4``, ``dp=8 ep=8``: the parts that are not 1 (``single device``)."""
        parts = [f"{k}={v}" for k, v in (("tp", self.tp), ("cp", self.cp), ("pp", self.pp), ("dp", self.dp),
                                                         ("ep", self.ep)) if v > 1]
        if self.sp:
            parts.append("sp")
        if self.micro_batches > 1:
            parts.append(f"m={self.micro_batches}")
        return " ".join(parts) or "single device"


def make_plan(tp: int = 1, pp: int = 1, dp: int = 1, ep: int = 1, sp: bool = False, micro_batches: int = 1,
              embedding: str = "vocab", cp: int = 1) -> ParallelPlan:
    """A validated plan (the defaults every entry point shares: one device, nothing split)."""
    values: dict[str, Any] = {"tp": tp, "pp": pp, "dp": dp, "ep": ep, "cp": cp, "sp": sp,
                              "micro_batches": micro_batches, "embedding": embedding}
    for name in ("tp", "pp", "dp", "ep", "cp", "micro_batches"):
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, int):
            raise PlanError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(sp, bool):
        raise PlanError(f"sp must be True or False, got {sp!r}")
    try:
        plan = ParallelPlan(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise PlanError(f"{field}: {err['msg']} (got {values.get(field)!r}); tp, pp, dp, ep, cp, micro_batches are "
                        "integers >= 1, embedding is 'vocab' or 'replicated'") from None
    if plan.ep > 1 and plan.dp % plan.ep:
        raise PlanError(f"ep={plan.ep} must divide dp={plan.dp}: the routed experts are placed over ep of the "
                        f"data-parallel replicas (allowed ep: {', '.join(map(str, divisors(plan.dp)))})")
    if plan.sp and plan.tp == 1:
        raise PlanError("sp (sequence parallelism) splits the tokens inside the tensor-parallel group: it needs tp > 1")
    return plan


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def kv_heads_per_rank(kv_heads: int, tp: int) -> int:
    """KV heads each rank holds: kv_heads / tp, or 1 when tp > kv_heads (each KV head replicated on tp /
    kv_heads ranks, as vLLM does)."""
    return kv_heads // tp if tp <= kv_heads else 1


def check_plan(plan: ParallelPlan, spec: ArchSpec) -> list[str]:
    """Why ``plan`` cannot shard ``spec`` (a ``PlanError`` naming the argument and the allowed values), or the
    notes it implies (replicated KV heads, a padded vocabulary)."""
    name, notes = spec.name or spec.model_type, []
    tp = plan.tp
    if tp > 1:
        mixers = sorted({layer.mixer.kind for layer in spec.layers} - TP_MIXERS - LINEAR_MIXERS)
        if mixers:
            raise PlanError(f"tp={tp}: tensor parallelism of {', '.join(mixers)} layers is not modelled "
                            f"({name}); use tp=1 with pp / dp")
        error = linear_mixer_error(spec, tp)
        if error:
            raise PlanError(error)
        attends = has_attention(spec)
        if attends and spec.num_heads % tp:
            allowed = ", ".join(str(d) for d in divisors(spec.num_heads))
            raise PlanError(f"tp={tp} does not divide the {spec.num_heads} attention heads of {name}; allowed tp: {allowed}")
        kv = spec.num_kv_heads
        if attends and kv % tp and tp % kv:
            allowed = ", ".join(str(d) for d in divisors(spec.num_heads) if kv % d == 0 or d % kv == 0)
            raise PlanError(f"tp={tp}: the {kv} KV heads of {name} can neither be split nor replicated evenly "
                            f"(tp must divide {kv} or be a multiple of it); allowed tp: {allowed}")
        if attends and tp > kv:
            notes.append(f"tp={tp} > {kv} KV heads: each KV head is replicated on {tp // kv} ranks (as vLLM does), "
                         "each rank holds 1")
        widths = {layer.ffn.intermediate for layer in spec.layers if layer.ffn.kind != "none"}
        widths |= {layer.ffn.shared_intermediate for layer in spec.layers if layer.ffn.shared_intermediate}
        for width in sorted(widths):
            if width % tp:
                raise PlanError(f"tp={tp} does not divide the MLP / expert intermediate size {width} of {name}; "
                                f"allowed tp: {', '.join(str(d) for d in divisors(spec.num_heads) if width % d == 0)}")
        if plan.embedding == "vocab" and spec.vocab_size % tp:
            notes.append(f"vocabulary {spec.vocab_size} padded to {-(-spec.vocab_size // tp) * tp} "
                         f"({-(-spec.vocab_size // tp)} rows per rank) for the vocab-parallel embedding and lm_head")
    if plan.pp > spec.num_layers:
        raise PlanError(f"pp={plan.pp} exceeds the {spec.num_layers} layers of {name}; allowed pp: 1 to {spec.num_layers}")
    experts = {layer.ffn.experts for layer in spec.layers if layer.moe}
    if plan.ep > 1:
        if not experts:
            raise PlanError(f"ep={plan.ep}: {name} has no routed experts; allowed ep: 1")
        for e in sorted(experts):
            if e % plan.ep:
                raise PlanError(f"ep={plan.ep} does not divide the {e} routed experts of {name}; allowed ep: "
                                f"{', '.join(str(d) for d in divisors(e) if plan.dp % d == 0)} (ep must also divide dp)")
    return notes


def check_seq(plan: ParallelPlan, seq: int, phase: str = "prefill") -> int:
    """The prompt tokens one context-parallel rank runs: seq / cp (a prefill whose prompt divides evenly)."""
    if plan.cp == 1:
        return seq
    if phase != "prefill":
        raise PlanError(f"cp={plan.cp} splits a prefill's prompt over ranks; a {phase} step's tokens are not split "
                        "(use cp=1 for decode and generate)")
    if seq % plan.cp:
        raise PlanError(f"seq {seq} is not divisible by cp={plan.cp}; use a prompt length that is a multiple of {plan.cp}")
    return seq // plan.cp


def check_batch(plan: ParallelPlan, batch: int) -> int:
    """The micro-batch one rank runs: batch / (dp x micro_batches), which must be a whole number."""
    parts = plan.dp * plan.micro_batches
    if batch % parts:
        raise PlanError(f"batch {batch} is not divisible by dp x micro_batches = {plan.dp} x {plan.micro_batches}; "
                        f"use a batch that is a multiple of {parts}")
    return batch // parts


__all__ = ["LINEAR_MIXERS", "ParallelPlan", "PlanError", "check_batch", "check_plan", "check_seq", "divisors",
           "has_attention", "kv_heads_per_rank", "linear_mixer_error", "make_plan"]
