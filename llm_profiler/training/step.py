"""One training step: forward + backward (+ recomputation) + gradient clipping + optimizer update, its memory
per rank under data parallelism with ZeRO / FSDP sharding, its communication, time and MFU on a device.

Counts (per rank, one micro-batch of ``batch`` sequences of ``seq`` tokens, ``grad_accum`` micro-batches per
step):

- forward: the graph's arithmetic (add + mult + div + sqrt + exp + cmp) over every node, lm_head included;
- backward: ``training.backward.backward_counts`` where it is validated exact per node against autograd
  (``backward_exact``); elsewhere the matmul rule (each matmul's two gradients: 2x its forward MACs) plus the
  forward's non-matmul arithmetic once, an estimate;
- recomputation: ``full`` runs every layer's forward again, ``selective`` the attention core (scores,
  softmax, context) (Korthikanti et al. 2022);
- optimizer, per trainable parameter, as torch's single-tensor code runs it: AdamW (decoupled weight decay
  p *= 1 - lr*wd: 1 MULT; m.lerp_(g, 1 - b1): 2 ADD 1 MULT; v = v*b2 + (1 - b2)*g*g: 3 MULT 1 ADD;
  denom = sqrt(v) / sqrt(bc2) + eps: 1 SQRT 1 DIV 1 ADD; p += -step * m / denom: 1 DIV 1 MULT 1 ADD) = 5 ADD,
  6 MULT, 2 DIV, 1 SQRT; SGD with momentum (buf = buf*mu + g: 1 MULT 1 ADD; p += -lr*buf: 1 MULT 1 ADD);
  Adafactor and 8-bit Adam: their state sizes (below), arithmetic counted as AdamW's (an estimate);
- gradient clipping (clip_grad_norm_): g*g and the sum per element (1 MULT 1 ADD), the scaling (1 MULT).

Memory per rank (bytes), mixed precision (``bf16-mixed``: bf16 weights and gradients, fp32 master weights
and optimizer states) or ``fp32``:

- weights 2 bytes per parameter (fp32: 4); QLoRA's 4-bit base: 0.5 byte per linear weight plus the
  double-quantised block constants (0.127 bit per parameter, Dettmers et al. 2023), the rest bf16;
- gradients 2 bytes per trainable parameter (fp32: 4); master weights 4 bytes per trainable parameter
  (mixed precision only);
- optimizer states per trainable parameter: AdamW 8 (two fp32 moments), SGD momentum 4, 8-bit Adam 2 (two
  int8 moments) + 2 fp32 block absmax per 2048 elements, Adafactor (factored second moment, no first
  moment) 4*(rows + cols) per matrix and 4 per element of a vector;
- ZeRO (Rajbhandari et al. 2020) over ``dp`` ranks: stage 1 shards optimizer states and master weights,
  stage 2 also gradients, stage 3 also weights (FSDP FULL_SHARD = 3, SHARD_GRAD_OP = 2): sharded terms / dp.
  Mixed-precision AdamW unsharded: 2 + 2 + 4 + 8 = 16 bytes per parameter (the ZeRO paper's 2 + 2 + K,
  K = 12; accelerate's estimate-memory "adam" column);
- activations saved for backward (``training.activations``: exact per node for the validated families),
  times the micro-batch, plus one layer's again under full recomputation.

Under a parallel plan (``plan``: tp / pp / ep / sp from ``parallel.make_plan``; ``dp`` the data-parallel
group ZeRO shards over): every quantity is one rank's, read from ``parallel.shard``'s per-rank nodes of its
pipeline stage (``rank_model``): its parameters (the sharded matrices, the replicated norms), its forward, its
backward (the rules on the tensor-parallel model, summed over the stage's nodes), its saved activations (the
rules on the sharded nodes: heads, intermediate and vocabulary / tp; the layers' norms / tp under sp). 1F1B
holds min(pp - stage, m) micro-batches' activations on a stage (the first holds pp); the busiest stage is the
memory answer, the slowest one's micro-batch time the pipeline's beat.

Communication (``training.sharding``): per micro-batch the tp / ep collectives of the forward, their conjugates
in the backward (2x the forward's), the layers' again under full recomputation, the pipeline's send / recv
of activations and gradients; per step the dp group's: DP all-reduces the gradients, ZeRO-1 reduce-scatters
them and all-gathers the weights, ZeRO-2 reduce-scatters after every micro-batch, ZeRO-3 all-gathers the
weights before each micro-batch's forward and backward and reduce-scatters its gradients (3 (dp - 1)/dp * P
sent per rank at one micro-batch, the ZeRO paper's 3Ψ). Times over the system's links
(``parallel.comm``), not overlapped (``overlap=True`` hides the dp ones behind the pipeline).

Time: the pipeline takes (m + pp - 1) x the slowest stage's micro-batch time (compute + its tp / ep / pp
collectives), of which (pp - 1) is the bubble, (pp - 1) / (m + pp - 1); plus the dp collectives and the
optimizer. MFU = the whole model's forward + backward FLOPs of all micro-batches of all replicas / (step time
x devices x peak); HFU counts every rank's executed FLOPs, recomputation included.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict

from .. import metrics as M
from ..errors import ProfilerError, QueryError
from ..facts import TensorClass
from ..formula import Formula
from ..graph.node import NodeKind
from ..hardware import get_device
from ..hardware.systems import get_system
from ..parallel.comm import bubble_fraction, system_for
from ..parallel.plan import ParallelPlan, check_plan, make_plan
from ..parallel.shard import rank_model
from ..profile import ModelProfile
from .activations import saved_activations
from .backward import LOSS, BackwardUnsupportedError, backward_counts, is_validated
from .lora import lora_saved_bytes
from .sharding import StepCollective, data_parallel_collectives, micro_batch_collectives

OPTIMIZERS = ("adamw", "sgd", "adafactor", "adam8bit")
PRECISIONS = ("bf16-mixed", "fp32")
ARITH = M.ARITHMETIC
# per trainable parameter (see the module docstring)
OPTIMIZER_OPS: dict[str, dict[str, int]] = {
    "adamw": {M.ADD: 5, M.MULT: 6, M.DIV: 2, M.SQRT: 1},
    "sgd": {M.ADD: 2, M.MULT: 2},
}
CLIP_OPS = {M.ADD: 1, M.MULT: 2}
ADAM8BIT_BLOCK = 2048
QLORA_BITS = 4 + 0.127  # NF4 and its double-quantised constants, bits per base linear parameter

# the MoE experts kernel a training run's saved activations are counted for (``activations.EXPERTS``): transformers'
# grouped_mm reads the expert weights in place; batched_mm (the op counters' reference) keeps copies gathered per
# routed token, N*3*I*h per layer, which no training run keeps
TRAINING_EXPERTS = "grouped_mm"


class TrainingError(ProfilerError, ValueError):
    """An invalid training plan (an argument out of range or an unknown choice)."""


class Memory(BaseModel):
    """Bytes per rank."""

    model_config = ConfigDict(frozen=True)

    weights: int
    gradients: int
    master_weights: int
    optimizer_states: int
    activations: int  # saved for backward: the micro-batches in flight (+ one layer's again under full recompute)
    total: int
    gathered_weights: int = 0  # ZeRO-3: the largest layer's weights gathered whole while it runs


class StageCost(BaseModel):
    """One rank of pipeline stage ``stage``: its shard of the model and its work per step."""

    model_config = ConfigDict(frozen=True)

    stage: int
    layers: int
    params: int  # this rank's shard (tp / pp / ep), before ZeRO
    trainable_params: int
    forward_flops: int  # per micro-batch
    backward_flops: int
    recompute_flops: int
    in_flight: int  # micro-batches whose saved activations it holds at once (1F1B: min(pp - stage, m))
    activations_per_micro_batch: int  # bytes
    memory: Memory
    micro_batch_time_s: float | None = None  # compute + its tp / ep / pp communication, one micro-batch
    communication_time_s: float | None = None  # of that, communication
    dp_communication_time_s: float | None = None  # per step


class TrainingStep(BaseModel):
    """One optimizer step per rank (see the module docstring for every term)."""

    model_config = ConfigDict(frozen=True)

    model: str
    batch: int  # micro-batch per rank
    seq: int
    grad_accum: int
    dp: int
    zero: int
    optimizer: str
    precision: str
    recompute: str
    lora_rank: int | None
    lora_targets: tuple[str, ...]
    qlora: bool
    params: int
    trainable_params: int
    tokens_per_step: int  # all ranks
    forward_flops: int  # per rank, per step (all micro-batches)
    backward_flops: int
    recompute_flops: int
    optimizer_flops: int
    clip_flops: int
    step_flops: int
    model_flops: int  # forward + backward (no recomputation): the MFU numerator, per rank
    backward_exact: bool  # backward from rules validated exact per node against autograd
    activations_exact: bool
    memory: Memory  # the busiest rank's (``busiest_stage``)
    communication_bytes: int  # sent per rank per step (the critical stage's rank)
    plan: str = "single device"
    tp: int = 1
    pp: int = 1
    ep: int = 1
    sp: bool = False
    micro_batches: int = 1  # per step per replica: plan.micro_batches x grad_accum
    devices: int = 1
    critical_stage: int = 0  # the stage whose micro-batch takes longest (its rank's FLOPs are reported)
    busiest_stage: int = 0  # the stage whose rank needs the most memory
    stages: list[StageCost] = []
    collectives: list[StepCollective] = []  # per step (count), every stage's rank
    bubble_fraction: float = 0.0  # (pp - 1) / (m + pp - 1)
    device: str | None = None
    system: str | None = None
    compute_time_s: float | None = None
    communication_time_s: float | None = None  # not overlapped: tp / ep / pp per micro-batch x m, + dp / ZeRO
    bubble_time_s: float | None = None
    step_time_s: float | None = None
    mfu: float | None = None
    hfu: float | None = None  # hardware FLOPs utilisation (recomputation counted)
    tokens_per_second: float | None = None  # all ranks
    tokens_per_day: float | None = None
    fits: bool | None = None
    notes: tuple[str, ...] = ()


def _arith(counts: dict[str, int]) -> int:
    return sum(int(counts.get(m, 0)) for m in ARITH)


def _lora_nodes(model: ModelProfile, targets: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(path, in, out) of every linear whose module name is a LoRA target."""
    out = []
    for node in model.nodes:
        if node.kind in (NodeKind.LINEAR, NodeKind.LM_HEAD) and node.path.rsplit(".", 1)[-1] in targets:
            w = next(w for w in node.facts.weights if w.name == "weight")
            out.append((node.path, w.shape[1], w.shape[0]))
    return out


def _optimizer_state_bytes(model: ModelProfile, optimizer: str, trainable: int,
                           lora: list[tuple[str, int, int]] | None, rank: int) -> int:
    if optimizer == "adamw":
        return 8 * trainable
    if optimizer == "sgd":
        return 4 * trainable
    if optimizer == "adam8bit":
        return 2 * trainable + 2 * 4 * -(-trainable // ADAM8BIT_BLOCK)
    # adafactor: rows + cols per matrix, the whole vector otherwise
    shapes: list[tuple[int, ...]] = []
    if lora is not None:
        for _, i, o in lora:
            shapes += [(rank, i), (o, rank)]
    else:
        for node in model.nodes:
            shapes += [w.shape for w in node.facts.weights if not w.tied]
    return sum(4 * (s[0] + s[-1]) if len(s) >= 2 else 4 * s[0] for s in shapes)


def resolve_plan(plan: Any, dp: int = 1) -> ParallelPlan:
    """The plan a step runs under: ``plan`` (a ParallelPlan or a dict of make_plan's arguments), or make_plan(dp=dp)."""
    if plan is None:
        return make_plan(dp=dp)
    pl = plan if isinstance(plan, ParallelPlan) else make_plan(**plan) if isinstance(plan, dict) else None
    if pl is None:
        raise TrainingError(f"plan must be a ParallelPlan or a dict of make_plan's arguments, got {type(plan).__name__}")
    if dp != 1 and dp != pl.dp:
        raise TrainingError(f"dp={dp} and plan dp={pl.dp} disagree: give the data-parallel ranks once (in the plan)")
    if pl.cp > 1:
        raise TrainingError(f"cp={pl.cp}: context parallelism is not modelled for training; allowed cp: 1")
    return pl


def training_step(model: ModelProfile, batch: int, seq: int, *, device: str | None = None,
                  optimizer: str = "adamw", precision: str = "bf16-mixed", zero: int = 0, dp: int = 1,
                  grad_accum: int = 1, recompute: str = "none", lora_rank: int | None = None,
                  lora_targets: tuple[str, ...] = ("q_proj", "v_proj"), qlora: bool = False,
                  grad_clip: bool = True, flops_efficiency: float = 1.0, overlap: bool = False,
                  compute_dtype: str = "bf16", plan: Any = None, system: Any = None) -> TrainingStep:
    """The training step of ``model`` at micro-batch ``batch`` x ``seq`` per data-parallel replica (module
    docstring). ``plan`` (a ``parallel.ParallelPlan`` or a dict of ``make_plan``'s arguments; ``dp`` alone is
    ``make_plan(dp=dp)``): tp / pp / ep shard the model (``parallel.shard``'s per-rank nodes), ZeRO shards over
    the plan's dp group; ``plan.micro_batches`` x ``grad_accum`` micro-batches per step. ``system`` (a name,
    file or ``SystemSpec``; its device replaces ``device``): the links the collectives run over; without one,
    ``device`` and ``plan.devices`` copies of it on its own interconnect."""
    _check(batch, seq, optimizer, precision, zero, dp, grad_accum, recompute, lora_rank, lora_targets, qlora,
           flops_efficiency)
    pl = resolve_plan(plan, dp)
    m = pl.micro_batches * grad_accum
    notes: list[str] = list(check_plan(pl, model.spec))
    if model.spec.tie_word_embeddings and pl.pp > 1:
        notes.append("tied embedding under pp > 1: the last stage's lm_head shares the first stage's embedding "
                     "(Megatron keeps a copy there and all-reduces their gradients: not counted)")
    mixed = precision == "bf16-mixed"
    wbytes = 2 if mixed else 4
    full_values = model.node_values(batch, seq, 0)
    params = int(sum(v[M.PARAMS] for v in full_values.values()))
    lora_full = _lora_nodes(model, lora_targets) if lora_rank else None
    if lora_full is not None and not lora_full:
        raise TrainingError(f"lora_targets {','.join(lora_targets)} name no linear of {model.spec.name or 'the model'}"
                            f" (linear names: {', '.join(sorted(_linear_names(model)))})")
    full_back, exact = _backward_values(model, batch, seq, notes)
    full = _work(model, batch, seq, recompute, lora_rank, lora_targets, notes, full_back, exact)
    trainable_total = full.trainable if lora_full is not None else params
    trivial = pl.tp == 1 and pl.pp == 1 and pl.ep == 1
    rank_back: dict[str, int] | None = None
    if not trivial:  # the backward of the tensor / expert-parallel model, whole depth (each stage sums its nodes)
        whole = rank_model(model, pl.model_copy(update={"pp": 1, "micro_batches": 1}), 0)
        rank_back, _ = _backward_values(whole, batch, seq, [])

    sysm, dev = _system(pl, system, device)
    stages = []
    colls: list[StepCollective] = []
    act_exact = True
    for s in range(pl.pp):
        rank = model if trivial else rank_model(model, pl, s)
        work = full if trivial else _work(rank, batch, seq, recompute, lora_rank, lora_targets, [], rank_back, exact,
                                          s == pl.pp - 1)
        in_flight = min(pl.pp - s, m)
        mem = _memory(rank, work, batch, seq, recompute, optimizer, mixed, wbytes, zero, pl.dp, pl.ep, qlora,
                      lora_rank, lora_targets, in_flight, s == pl.pp - 1, notes if s == 0 else [])
        act_exact = act_exact and mem[2]
        mb = micro_batch_collectives(model.graph, pl, s, batch, seq, wbytes, recompute, sysm)
        dpc = data_parallel_collectives(pl, zero, s, work.trainable, wbytes, m, sysm,
                                        experts=work.experts if lora_rank is None else 0)
        colls += mb + dpc
        stages.append((s, rank, work, in_flight, mem, mb, dpc))

    opt_ops = OPTIMIZER_OPS.get(optimizer, OPTIMIZER_OPS["adamw"])
    if optimizer not in OPTIMIZER_OPS:
        notes.append(f"{optimizer}: arithmetic counted as AdamW's (an estimate); its state size is exact")
    shard = pl.dp if zero >= 1 else 1

    rows, timings = [], []
    for s, rank, work, in_flight, mem, mb, dpc in stages:
        opt = sum(opt_ops.values()) * -(-work.trainable // shard)
        clip = sum(CLIP_OPS.values()) * work.trainable if grad_clip else 0
        row: dict[str, Any] = dict(
            stage=s, layers=len({n.layer for n in rank.nodes if n.layer is not None}), params=work.params,
            trainable_params=work.trainable, forward_flops=work.forward, backward_flops=work.backward,
            recompute_flops=work.recompute, in_flight=in_flight, activations_per_micro_batch=mem[1], memory=mem[0])
        if dev is not None:
            peak = dev.peak(compute_dtype) * flops_efficiency
            comm_mb = sum(c.total_s or 0.0 for c in mb)
            compute_mb = (work.forward + work.backward + work.recompute) / peak
            row.update(micro_batch_time_s=compute_mb + comm_mb, communication_time_s=comm_mb,
                       dp_communication_time_s=sum(c.total_s or 0.0 for c in dpc))
            timings.append((compute_mb + comm_mb, comm_mb, row["dp_communication_time_s"], (opt + clip) / peak))
        rows.append((StageCost(**row), opt, clip))
    crit = max(range(pl.pp), key=lambda i: (timings[i][0] if timings else 0.0,
                                              rows[i][0].forward_flops + rows[i][0].backward_flops))
    busiest = max(range(pl.pp), key=lambda i: rows[i][0].memory.total)
    cost, opt_flops, clip_flops = rows[crit]
    fwd_step, back_step, rec_step = cost.forward_flops * m, cost.backward_flops * m, cost.recompute_flops * m
    step_flops = fwd_step + back_step + rec_step + opt_flops + clip_flops
    tokens = batch * seq * m * pl.dp
    memory = rows[busiest][0].memory
    out: dict[str, Any] = dict(
        model=model.spec.name or model.spec.model_type, batch=batch, seq=seq, grad_accum=grad_accum, dp=pl.dp,
        zero=zero, optimizer=optimizer, precision=precision, recompute=recompute, lora_rank=lora_rank,
        lora_targets=tuple(lora_targets) if lora_rank else (), qlora=qlora, params=params,
        trainable_params=trainable_total, tokens_per_step=tokens, forward_flops=fwd_step,
        backward_flops=back_step, recompute_flops=rec_step, optimizer_flops=opt_flops,
        clip_flops=clip_flops, step_flops=step_flops, model_flops=fwd_step + back_step,
        backward_exact=full.exact, activations_exact=act_exact, memory=memory,
        communication_bytes=sum(c.sent_bytes * (m if c.group != "dp" else 1) for c in colls if c.stage == crit),
        plan=pl.describe(), tp=pl.tp, pp=pl.pp, ep=pl.ep, sp=pl.sp, micro_batches=m, devices=pl.devices,
        critical_stage=crit, busiest_stage=busiest, stages=[r[0] for r in rows], collectives=colls,
        bubble_fraction=bubble_fraction(pl.pp, m),
    )
    if dev is not None:
        peak = dev.peak(compute_dtype)
        t_mb, comm_mb, _, _ = timings[crit]
        pipeline = (m + pl.pp - 1) * t_mb
        dp_t = max(t[2] for t in timings)
        opt_t = max(t[3] for t in timings)
        compute = m * (t_mb - comm_mb) + opt_t
        comm_t = m * comm_mb + dp_t
        step_t = (max(pipeline, dp_t) if overlap else pipeline + dp_t) + opt_t
        # model FLOPs: the whole model's forward + backward per micro-batch, over every replica's micro-batches
        model_total = (full.forward + full.backward) * m * pl.dp
        executed = sum(r[0].forward_flops + r[0].backward_flops + r[0].recompute_flops for r in rows) * m * pl.tp * pl.dp
        out.update(device=dev.name, system=sysm.name if sysm is not None else None, compute_time_s=compute,
                   communication_time_s=comm_t, bubble_time_s=(pl.pp - 1) * t_mb, step_time_s=step_t,
                   mfu=model_total / (step_t * peak * pl.devices), hfu=executed / (step_t * peak * pl.devices),
                   tokens_per_second=tokens / step_t, tokens_per_day=tokens / step_t * 86400,
                   fits=memory.total <= dev.memory_bytes)
    out["notes"] = tuple(dict.fromkeys(notes))
    return TrainingStep(**out)


class _Work(BaseModel):
    """FLOPs of one micro-batch on one rank, its parameters and trainable parameters."""

    params: int
    trainable: int
    experts: int  # of params: the routed experts' (sharded over ep)
    forward: int
    backward: int
    recompute: int
    exact: bool
    lora: list[tuple[str, int, int]] | None


def _backward_values(model: ModelProfile, batch: int, seq: int, notes: list[str]) -> tuple[dict[str, int] | None, bool]:
    """node path (and ``loss``) -> backward arithmetic at (batch, seq), and whether it is validated; None where
    the rules do not cover the model (a note says why)."""
    env = {"B": batch, "S": seq, "P": 0}
    try:
        back = backward_counts(model)
    except BackwardUnsupportedError as err:
        notes.append(f"backward estimated (2x the matmul FLOPs + the non-matmul forward once): {err}")
        return None, False
    exact = is_validated(model)
    if not exact:
        notes.append(f"backward from the per-node rules, not validated against autograd for {model.spec.model_type!r}")
    return {p: _arith({k: int(Formula.of(v).evaluate(env)) for k, v in c.items()}) for p, c in back.items()}, exact


def _work(model: ModelProfile, batch: int, seq: int, recompute: str, lora_rank: int | None,
          lora_targets: tuple[str, ...], notes: list[str], back: dict[str, int] | None, exact: bool,
          last: bool = True) -> _Work:
    """One rank's micro-batch: ``back`` the whole (tensor-parallel) model's backward per node, summed over the
    nodes ``model`` (a pipeline stage) holds, the loss's on the last stage."""
    env = {"B": batch, "S": seq, "P": 0}
    values = model.node_values(batch, seq, 0)
    params = int(sum(v[M.PARAMS] for v in values.values()))
    forward = sum(_arith(v) for v in values.values())
    fwd_macs = int(sum(v[M.MACS] for v in values.values()))
    lora = _lora_nodes(model, lora_targets) if lora_rank else None
    if back is not None:
        backward = sum(back.get(n.path, 0) for n in model.nodes) + (back.get(LOSS, 0) if last else 0)
    else:
        backward = 2 * 2 * fwd_macs + (forward - 2 * fwd_macs)
    trainable = params
    if lora is not None:
        assert lora_rank is not None
        trainable = sum(lora_rank * (i + o) for _, i, o in lora)
        # frozen base: no weight gradient (k*n*m MACs, ~2 FLOPs each) for any linear, nor the embedding's
        frozen = 0
        for node in model.nodes:
            for mm in node.facts.matmuls if node.kind in (NodeKind.LINEAR, NodeKind.LM_HEAD) else ():
                frozen += 2 * int((mm.batch * mm.k * mm.n * mm.m).evaluate(env))
        backward -= frozen
        adapter = sum(2 * batch * seq * lora_rank * (i + o) for _, i, o in lora)  # x A^T, (x A^T) B^T: MACs * 2
        forward += adapter
        backward += 2 * adapter
        notes.append("LoRA: the frozen linears' weight gradients dropped from the backward; adapters' forward "
                     "2*T*r*(in+out) FLOPs, backward twice that; the frozen norms' and embedding's weight "
                     "gradients are still counted (under 0.1% of the backward)")
    recompute_flops = 0
    if recompute == "full":
        recompute_flops = sum(_arith(values[n.path]) for n in model.nodes if n.layer is not None)
    elif recompute == "selective":
        attn = (NodeKind.ATTN_SCORES, NodeKind.ATTN_SOFTMAX, NodeKind.ATTN_CONTEXT)
        recompute_flops = sum(_arith(values[n.path]) for n in model.nodes if n.kind in attn)
    experts = sum(w.numel for n in model.nodes for w in n.facts.weights
                  if w.tensor_class == TensorClass.EXPERTS and not w.tied)
    return _Work(params=params, trainable=trainable, experts=experts, forward=forward, backward=backward,
                 recompute=recompute_flops, exact=exact, lora=lora)


def _memory(model: ModelProfile, work: _Work, batch: int, seq: int, recompute: str, optimizer: str, mixed: bool,
            wbytes: int, zero: int, dp: int, ep: int, qlora: bool, lora_rank: int | None,
            lora_targets: tuple[str, ...], in_flight: int, last: bool, notes: list[str]) -> tuple[Memory, int, bool]:
    """(memory of one rank, saved activations of one micro-batch in bytes, whether they are exact)."""
    params, trainable, lora = work.params, work.trainable, work.lora
    if qlora:
        base_linear = sum(w.numel for n in model.nodes if n.kind == NodeKind.LINEAR for w in n.facts.weights
                          if w.name == "weight" and not w.tied)
        weights = int(base_linear * QLORA_BITS / 8) + (params - base_linear) * wbytes + trainable * wbytes
    else:
        weights = (params + (trainable if lora is not None else 0)) * wbytes
    grads = trainable * wbytes
    master = trainable * 4 if mixed else 0
    states = _optimizer_state_bytes(model, optimizer, trainable, lora, lora_rank or 0)
    gathered = 0
    # routed experts (ep > 1) are ZeRO-sharded over their expert-data-parallel group, dp / ep (DeepSpeed-MoE)
    share = Fraction(work.experts, trainable) if trainable and lora is None else Fraction(0)

    def shard(nbytes: int) -> int:
        expert = int(nbytes * share)
        return -(-(nbytes - expert) // dp) + -(-expert // (dp // ep))

    if zero >= 1:
        states, master = shard(states), shard(master)
    if zero >= 2:
        grads = shard(grads)
    if zero >= 3 and dp > 1:
        weights = shard(weights) if lora is None else -(-weights // dp)
        # the unit being computed is gathered whole: the largest decoder layer's weights (FSDP wraps each layer)
        per_layer: dict[int, int] = {}
        for node in model.nodes:
            if node.layer is not None:
                per_layer[node.layer] = per_layer.get(node.layer, 0) + sum(
                    w.numel for w in node.facts.weights if not w.tied)
        gathered = max(per_layer.values(), default=0) * wbytes
    try:
        if lora is not None:
            assert lora_rank is not None
            per_mb, peak = lora_saved_bytes(model, batch, seq, lora_rank, lora_targets, wbytes, recompute, last)
        else:
            act = saved_activations(model, batch, seq, recompute, act_bytes=wbytes, loss=last, experts=TRAINING_EXPERTS)
            per_mb, peak = act.bytes, act.recompute_peak_bytes
        activations = per_mb * in_flight + peak
        exact = True
    except BackwardUnsupportedError as err:
        exact = False
        per_mb = int(sum(v[M.ACT] for v in model.node_values(batch, seq, 0).values())) * wbytes
        activations = per_mb * in_flight
        notes.append(f"activations estimated as every op's output kept (the forward's act): {err}")
    total = weights + grads + master + states + gathered + activations
    return (Memory(weights=weights, gradients=grads, master_weights=master, optimizer_states=states,
                   gathered_weights=gathered, activations=activations, total=total), per_mb, exact)


def _system(plan: ParallelPlan, system: Any, device: Any) -> tuple[Any, Any]:
    """(SystemSpec or None, the device one rank runs on or None)."""
    if system is not None:
        sysm = get_system(system)
        return sysm, sysm.device
    if device is None:
        return None, None
    dev = get_device(device)
    if plan.devices == 1:
        return None, dev
    if dev.interconnect is None:
        raise TrainingError(f"device {dev.name!r} has no interconnect figure for {plan.describe()} "
                            f"({plan.devices} devices); give system=... or use one device")
    return system_for(dev, plan.devices), dev


def _linear_names(model: ModelProfile) -> set[str]:
    return {n.path.rsplit(".", 1)[-1] for n in model.nodes if n.kind == NodeKind.LINEAR}


def _check(batch: int, seq: int, optimizer: str, precision: str, zero: int, dp: int, grad_accum: int,
           recompute: str, lora_rank: int | None, lora_targets: tuple[str, ...], qlora: bool,
           flops_efficiency: float) -> None:
    for name, value in (("batch", batch), ("seq", seq), ("dp", dp), ("grad_accum", grad_accum)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrainingError(f"{name} must be an integer >= 1, got {value!r}")
    if optimizer not in OPTIMIZERS:
        raise TrainingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if precision not in PRECISIONS:
        raise TrainingError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if zero not in (0, 1, 2, 3):
        raise TrainingError(f"zero must be 0, 1, 2 or 3, got {zero!r}")
    if recompute not in ("none", "selective", "full"):
        raise TrainingError(f"recompute must be none, selective or full, got {recompute!r}")
    if lora_rank is not None and (not isinstance(lora_rank, int) or lora_rank < 1):
        raise TrainingError(f"lora_rank must be an integer >= 1 (or None: full fine-tuning), got {lora_rank!r}")
    if qlora and lora_rank is None:
        raise TrainingError("qlora needs lora_rank (QLoRA trains LoRA adapters on a 4-bit base)")
    if lora_rank is not None and not lora_targets:
        raise TrainingError("lora_targets must name at least one linear module (e.g. q_proj,v_proj)")
    if not 0 < flops_efficiency <= 1:
        raise QueryError(f"flops_efficiency must be in (0, 1], got {flops_efficiency!r}")


__all__ = ["OPTIMIZERS", "Memory", "StageCost", "TrainingError", "TrainingStep", "resolve_plan", "training_step"]
