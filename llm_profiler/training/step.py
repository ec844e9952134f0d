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

Communication per rank per step (ring collectives, elements of the gradient dtype; Rajbhandari et al. 2020,
section 7): DP, ZeRO-1 and ZeRO-2 reduce-scatter then all-gather the gradients, 2 * (dp - 1)/dp * P sent
per rank; ZeRO-3 all-gathers the weights in the forward and again in the backward and reduce-scatters the
gradients, 3 * (dp - 1)/dp * P. Time = bytes / the device's interconnect bandwidth (per direction), not
overlapped with compute (an upper bound on the step; ``overlap=True`` takes the max instead).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .. import metrics as M
from ..errors import ProfilerError, QueryError
from ..formula import Formula
from ..graph.node import NodeKind
from ..hardware import get_device
from ..profile import ModelProfile
from .activations import saved_activations
from .backward import BackwardUnsupportedError, backward_counts, is_validated

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


class TrainingError(ProfilerError, ValueError):
    """An invalid training plan (an argument out of range or an unknown choice)."""


class Memory(BaseModel):
    """Bytes per rank."""

    model_config = ConfigDict(frozen=True)

    weights: int
    gradients: int
    master_weights: int
    optimizer_states: int
    activations: int
    total: int


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
    memory: Memory
    communication_bytes: int  # sent per rank per step
    device: str | None = None
    compute_time_s: float | None = None
    communication_time_s: float | None = None
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


def training_step(model: ModelProfile, batch: int, seq: int, *, device: str | None = None,
                  optimizer: str = "adamw", precision: str = "bf16-mixed", zero: int = 0, dp: int = 1,
                  grad_accum: int = 1, recompute: str = "none", lora_rank: int | None = None,
                  lora_targets: tuple[str, ...] = ("q_proj", "v_proj"), qlora: bool = False,
                  grad_clip: bool = True, flops_efficiency: float = 1.0, overlap: bool = False,
                  compute_dtype: str = "bf16") -> TrainingStep:
    """The training step of ``model`` at micro-batch ``batch`` x ``seq`` per rank (module docstring)."""
    _check(batch, seq, optimizer, precision, zero, dp, grad_accum, recompute, lora_rank, lora_targets, qlora,
           flops_efficiency)
    notes: list[str] = []
    env = {"B": batch, "S": seq, "P": 0}
    values = model.node_values(batch, seq, 0)
    params = int(sum(v[M.PARAMS] for v in values.values()))
    forward = sum(_arith(v) for v in values.values())
    fwd_macs = int(sum(v[M.MACS] for v in values.values()))

    lora = _lora_nodes(model, lora_targets) if lora_rank else None
    if lora is not None and not lora:
        raise TrainingError(f"lora_targets {','.join(lora_targets)} name no linear of {model.spec.name or 'the model'}"
                            f" (linear names: {', '.join(sorted(_linear_names(model)))})")
    try:
        back = backward_counts(model)
        backward = sum(_arith({k: int(Formula.of(v).evaluate(env)) for k, v in c.items()}) for c in back.values())
        exact = is_validated(model)
        if not exact:
            notes.append(f"backward from the per-node rules, not validated against autograd for "
                         f"{model.spec.model_type!r}")
    except BackwardUnsupportedError as err:
        exact = False
        backward = 2 * 2 * fwd_macs + (forward - 2 * fwd_macs)
        notes.append(f"backward estimated (2x the matmul FLOPs + the non-matmul forward once): {err}")
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
    opt_ops = OPTIMIZER_OPS.get(optimizer, OPTIMIZER_OPS["adamw"])
    if optimizer not in OPTIMIZER_OPS:
        notes.append(f"{optimizer}: arithmetic counted as AdamW's (an estimate); its state size is exact")
    shard = dp if zero >= 1 else 1
    optimizer_flops = sum(opt_ops.values()) * -(-trainable // shard)
    clip_flops = sum(CLIP_OPS.values()) * trainable if grad_clip else 0

    fwd_step, back_step, rec_step = forward * grad_accum, backward * grad_accum, recompute_flops * grad_accum
    step_flops = fwd_step + back_step + rec_step + optimizer_flops + clip_flops

    # memory
    mixed = precision == "bf16-mixed"
    wbytes = 2 if mixed else 4
    if qlora:
        base_linear = sum(w.numel for n in model.nodes if n.kind == NodeKind.LINEAR for w in n.facts.weights
                          if w.name == "weight" and not w.tied)
        weights = int(base_linear * QLORA_BITS / 8) + (params - base_linear) * wbytes + trainable * wbytes
    else:
        weights = (params + (trainable if lora is not None else 0)) * wbytes
    grads = trainable * wbytes
    master = trainable * 4 if mixed else 0
    states = _optimizer_state_bytes(model, optimizer, trainable, lora, lora_rank or 0)
    if zero >= 1:
        states, master = -(-states // dp), -(-master // dp)
    if zero >= 2:
        grads = -(-grads // dp)
    if zero >= 3:
        weights = -(-weights // dp)
    try:
        act = saved_activations(model, batch, seq, recompute, act_bytes=wbytes)
        activations = act.bytes + act.recompute_peak_elements * wbytes
        act_exact = True
    except BackwardUnsupportedError as err:
        act_exact = False
        activations = int(sum(v[M.ACT] for v in values.values())) * wbytes
        notes.append(f"activations estimated as every op's output kept (the forward's act): {err}")
    if lora is not None and act_exact:
        notes.append("LoRA: activations counted as full fine-tuning saves them (an upper bound: frozen linears and "
                     "norm weights need not keep their inputs; the adapters keep x and x A^T)")
    memory = Memory(weights=weights, gradients=grads, master_weights=master, optimizer_states=states,
                    activations=activations, total=weights + grads + master + states + activations)

    factor = 3 if zero >= 3 else 2
    comm = (factor * (dp - 1) * trainable * wbytes) // dp if dp > 1 else 0
    out = dict(
        model=model.spec.name or model.spec.model_type, batch=batch, seq=seq, grad_accum=grad_accum, dp=dp,
        zero=zero, optimizer=optimizer, precision=precision, recompute=recompute, lora_rank=lora_rank,
        lora_targets=tuple(lora_targets) if lora_rank else (), qlora=qlora, params=params,
        trainable_params=trainable, tokens_per_step=batch * seq * grad_accum * dp, forward_flops=fwd_step,
        backward_flops=back_step, recompute_flops=rec_step, optimizer_flops=optimizer_flops,
        clip_flops=clip_flops, step_flops=step_flops, model_flops=fwd_step + back_step,
        backward_exact=exact, activations_exact=act_exact, memory=memory, communication_bytes=comm,
    )
    if device is not None:
        dev = get_device(device)
        peak = dev.peak(compute_dtype)
        compute = step_flops / (peak * flops_efficiency)
        link = dev.interconnect.bandwidth if dev.interconnect is not None else None
        if comm and link is None:
            raise TrainingError(f"device {dev.name!r} has no interconnect figure for dp={dp}; use dp=1")
        comm_t = comm / link if comm and link else 0.0
        step_t = max(compute, comm_t) if overlap else compute + comm_t
        tokens = batch * seq * grad_accum * dp / step_t
        out.update(device=dev.name, compute_time_s=compute, communication_time_s=comm_t, step_time_s=step_t,
                   mfu=(fwd_step + back_step) / (step_t * peak), hfu=(fwd_step + back_step + rec_step) / (step_t * peak),
                   tokens_per_second=tokens, tokens_per_day=tokens * 86400, fits=memory.total <= dev.memory_bytes)
    out["notes"] = tuple(notes)
    return TrainingStep(**out)  # type: ignore[arg-type]


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


__all__ = ["OPTIMIZERS", "Memory", "TrainingError", "TrainingStep", "training_step"]
