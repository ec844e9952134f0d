"""The communication of one training step under a parallel plan: what each rank sends, per micro-batch and
per step, and its time on a system's links.

Per micro-batch, for the rank of pipeline stage ``s`` (payloads from ``parallel.collectives``, the forward's
list at the micro-batch, ``act`` bytes per activation element):

- **tensor parallelism, forward**: the forward's collectives of the stage (Megatron-LM's g operators: one
  all-reduce after each row-parallel linear, o_proj and down_proj, B*S*h*act each; the vocab-parallel
  embedding's all-reduce; under ``sp`` a reduce-scatter + all-gather pair instead), except the lm_head's
  all-gather of the logits: training computes the loss with Megatron's vocab-parallel cross-entropy on the
  rank's V/tp logits, which all-reduces three B*S fp32 vectors (the row max, the target logit, the sum of
  exponentials; ``_VocabParallelCrossEntropy``) instead;
- **tensor parallelism, backward**: the conjugates (Shoeybi et al. 2019, section 3, the f / g operators): each
  forward all-reduce after a row-parallel linear becomes, in the backward, the all-reduce of the input
  gradient of the column-parallel linears that open the block (same payload); the embedding's forward
  all-reduce has no backward counterpart (its output gradient is replicated), the lm_head's input gradient
  is all-reduced instead (B*S*h*act on the last stage); the cross-entropy's backward is local. Under ``sp``
  a reduce-scatter's conjugate is an all-gather and the other way round (same payload). So the backward
  repeats the forward's collectives, the cross-entropy's three vectors apart: 2x the forward's;
- **full recomputation** runs the layers' forward again: their forward collectives once more;
- **expert parallelism**: the dispatch and combine all-to-alls, forward and backward alike;
- **pipeline parallelism**: the stage sends its output activations forward (B*S*h*act, all stages but the
  last) and its input gradients back (B*S*h*act, all stages but the first).

Per step, over the data-parallel group (the rank's own shard of the trainable parameters, ``Φ_r`` elements of
``g`` bytes, the gradient / weight dtype; ``m`` micro-batches; Rajbhandari et al. 2020, section 7):

- ZeRO-0 (plain DP): the gradients all-reduced once (2 (dp-1)/dp Φ_r g sent per rank, ring);
- ZeRO-1: reduce-scatter of the gradients once, all-gather of the updated weights (2 (dp-1)/dp Φ_r g);
- ZeRO-2: the gradient shards are kept, not the full gradients: a reduce-scatter after every micro-batch's
  backward, the updated weights' all-gather once ((m + 1) (dp-1)/dp Φ_r g);
- ZeRO-3 / FSDP full_shard: the weights all-gathered before each micro-batch's forward and again before its
  backward, the gradients reduce-scattered after it (3 m (dp-1)/dp Φ_r g; the ZeRO paper's 3Ψ at m = 1).

Times: ``parallel.comm.collective_s`` (NCCL's ring and tree models) over ``parallel.comm.link_for`` with the
ranks ordered tp innermost, then cp, then dp, then pp (a tp group spans tp consecutive ranks, a dp group
tp * cp * dp, a pp pair all the devices, as ``perf`` takes them).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..formula import B, S
from ..graph import Graph
from ..parallel.collectives import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    REDUCE_SCATTER,
    SEND_RECV,
    collectives,
)
from ..parallel.comm import collective_s, link_for
from ..parallel.plan import ParallelPlan

FP32 = 4
_CONJUGATE = {ALL_REDUCE: ALL_REDUCE, REDUCE_SCATTER: ALL_GATHER, ALL_GATHER: REDUCE_SCATTER, ALL_TO_ALL: ALL_TO_ALL}


class StepCollective(BaseModel):
    """Collectives of one kind, phase and payload that one rank of a stage runs in a training step."""

    model_config = ConfigDict(frozen=True)

    kind: str  # all_reduce, all_gather, reduce_scatter, all_to_all, send_recv
    group: str  # tp, ep, pp, dp
    phase: str  # forward, backward, recompute, step (the DP / ZeRO ones, once per step or per micro-batch)
    what: str  # "attention", "mlp", "embedding", "lm_head", "cross-entropy", "experts", "activations",
    # "gradients", "weights"
    stage: int
    ranks: int
    link: str | None  # None without a system (bytes only)
    count: int  # per step
    payload_bytes: int  # each: the full buffer (all-reduce / all-gather / reduce-scatter), what is sent (send / recv)
    sent_bytes: int  # per rank, all of them: ring (n-1)/n of the buffer (x2 for an all-reduce); send / recv the buffer
    time_s: float | None  # each
    total_s: float | None  # count x time_s


def sent_per_rank(kind: str, payload: int, ranks: int) -> int:
    """Bytes one rank sends in one collective (ring algorithms; a send / recv its buffer)."""
    if kind == SEND_RECV:
        return payload
    if ranks <= 1:
        return 0
    factor = 2 if kind == ALL_REDUCE else 1
    return factor * (ranks - 1) * payload // ranks


def spans(plan: ParallelPlan) -> dict[str, int]:
    """Consecutive ranks a group of each kind spans (tp innermost, then cp, then dp / ep, then pp)."""
    return {"tp": plan.tp, "cp": plan.tp * plan.cp, "ep": plan.tp * plan.cp * plan.ep, "dp": plan.tp * plan.cp * plan.dp,
            "pp": plan.devices}


def _row(kind: str, group: str, phase: str, what: str, stage: int, ranks: int, count: int, payload: int,
         plan: ParallelPlan, system: Any) -> StepCollective:
    link, each = None, None
    if system is not None:
        path = link_for(system, spans(plan)[group])
        link, each = path.name, collective_s(kind, payload, ranks, path)
    return StepCollective(kind=kind, group=group, phase=phase, what=what, stage=stage, ranks=ranks, link=link,
                          count=count, payload_bytes=payload, sent_bytes=count * sent_per_rank(kind, payload, ranks),
                          time_s=each, total_s=None if each is None else count * each)


def micro_batch_collectives(graph: Graph, plan: ParallelPlan, stage: int, batch: int, seq: int, act_bytes: int,
                            recompute: str, system: Any) -> list[StepCollective]:
    """The tp / ep / pp collectives of one micro-batch on a rank of ``stage`` (module docstring), ``count`` per
    micro-batch."""
    if plan.tp == 1 and plan.ep == 1 and plan.pp == 1:
        return []
    forward = [c for c in collectives(graph, plan, act_bytes, last_position=False) if c.stage == stage]
    env = (batch, seq, 0)
    rows: dict[tuple[str, str, str, str, int], int] = {}

    def add(kind: str, group: str, phase: str, what: str, payload: int, ranks: int) -> None:
        key = (kind, group, phase, what, payload)
        rows[key] = rows.get(key, 0) + 1
        ranks_of[key] = ranks

    ranks_of: dict[tuple[str, str, str, str, int], int] = {}
    hidden = int((B * S * graph.spec.hidden_size * act_bytes)(*env))
    layer_sites = ("attention", "mlp", "experts")
    logits = max((i for i, c in enumerate(forward) if c.site == "lm_head" and c.kind == ALL_GATHER), default=-1)
    for i, c in enumerate(forward):
        size = c.bytes_at(*env)
        if c.kind == SEND_RECV:
            add(SEND_RECV, "pp", "forward", "activations", size, 2)
            continue
        if i == logits:
            # the logits' gather: replaced by the vocab-parallel cross-entropy's three fp32 vectors
            for _ in range(3):
                add(ALL_REDUCE, "tp", "forward", "cross-entropy", batch * seq * FP32, c.ranks)
            continue
        add(c.kind, c.group, "forward", c.site, size, c.ranks)
        if c.site == "embedding" and c.kind == ALL_REDUCE:
            continue  # its output gradient is replicated: nothing in the backward
        add(_CONJUGATE[c.kind], c.group, "backward", c.site, size, c.ranks)
        if recompute == "full" and c.site in layer_sites:
            add(c.kind, c.group, "recompute", c.site, size, c.ranks)
    last = stage == plan.pp - 1
    if plan.tp > 1 and last and not plan.sp:  # the lm_head's input gradient (Megatron's f operator before it)
        add(ALL_REDUCE, "tp", "backward", "lm_head", hidden, plan.tp)
    if stage > 0:  # the stage's input gradient goes back to the previous stage
        add(SEND_RECV, "pp", "backward", "activations", hidden, 2)
    return [_row(kind, group, phase, what, stage, ranks_of[(kind, group, phase, what, size)], n, size, plan, system)
            for (kind, group, phase, what, size), n in rows.items()]


def data_parallel_collectives(plan: ParallelPlan, zero: int, stage: int, trainable: int, grad_bytes: int,
                              micro_batches: int, system: Any, experts: int = 0) -> list[StepCollective]:
    """The dp group's gradient and weight collectives of one step on a rank of ``stage`` whose shard of the
    trainable parameters is ``trainable`` elements (module docstring), ``count`` per step. ``experts`` of
    them are routed experts placed over ``ep`` of the replicas: they are reduced (and ZeRO-sharded) over their
    expert-data-parallel group of dp / ep ranks (DeepSpeed-MoE), the rest over all dp."""
    out = _zero_collectives(plan, zero, stage, (trainable - experts) * grad_bytes, plan.dp, micro_batches, system, "")
    if experts and plan.ep > 1:
        out += _zero_collectives(plan, zero, stage, experts * grad_bytes, plan.dp // plan.ep, micro_batches, system,
                                 "expert ")
    elif experts:
        out = _zero_collectives(plan, zero, stage, trainable * grad_bytes, plan.dp, micro_batches, system, "")
    return out


def _zero_collectives(plan: ParallelPlan, zero: int, stage: int, size: int, dp: int, micro_batches: int,
                      system: Any, prefix: str) -> list[StepCollective]:
    if dp == 1 or size == 0:
        return []
    if zero == 0:
        spec = [(ALL_REDUCE, "gradients", 1)]
    elif zero == 1:
        spec = [(REDUCE_SCATTER, "gradients", 1), (ALL_GATHER, "weights", 1)]
    elif zero == 2:
        spec = [(REDUCE_SCATTER, "gradients", micro_batches), (ALL_GATHER, "weights", 1)]
    else:
        spec = [(ALL_GATHER, "weights", 2 * micro_batches), (REDUCE_SCATTER, "gradients", micro_batches)]
    return [_row(kind, "dp", "step", prefix + what, stage, dp, n, size, plan, system) for kind, what, n in spec]


__all__ = ["StepCollective", "data_parallel_collectives", "micro_batch_collectives", "sent_per_rank", "spans"]
