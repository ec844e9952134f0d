"""The activations a LoRA fine-tune saves for backward: frozen base weights change what autograd keeps.

Autograd saves an operand only when a gradient that needs it will be computed (``derivatives.yaml``, and the
generated code's ``should_compute_output`` guards): x @ W^T keeps x for W's gradient and W (a parameter, not
an activation) for x's. With every base weight frozen, a tensor needs a gradient only if it depends on an
adapter, so the saved set follows "requires grad" through the layer, in forward order:

- the embedding is frozen: its output needs no gradient, and the token ids are not kept;
- a frozen linear saves nothing (its input's gradient needs only W); a targeted one adds the adapters,
  x A^T then (x A^T) B^T (a scalar scaling, an add): A keeps x (T*in; stored once when q, k, v or gate, up
  share it), B keeps x A^T (T*r); its output needs a gradient;
- RMSNorm with a frozen weight, on an input that needs a gradient: x (float32 in eager bf16) and rstd, not
  y = x * rstd (weight * y keeps y only for the weight's gradient); on an input that needs none: nothing;
- rope: cos and sin, once per model (per layer for the interleaved ropes), where q or k needs a gradient;
- q @ k^T keeps k (the repeated keys) when q needs a gradient, q when k does; the softmax its output when
  either does; probs @ v keeps v when the probabilities need a gradient, the probabilities when v does
  (again, cast down, below float32: the float32 output is the softmax's);
- the activation keeps its input, the gate product a factor for each other factor that needs a gradient;
- the loss keeps what it keeps in full fine-tuning (the float32 log-probabilities, the targets, the weight).

So in layer 0 (its input needs no gradient) with q_proj, v_proj targeted: no input norm, q_proj's A keeps the
normed input and q's and v's B their T*r, the scores keep only the keys, and the MLP saves as in full
fine-tuning (the residual stream needs a gradient from there on). Later layers: everything but the frozen
linears' inputs (o_proj, gate_proj, down_proj, lm_head), the norms' outputs and the ids.
"""

from __future__ import annotations

from ..formula import ZERO, Formula, S
from ..graph.node import NodeKind
from ..metrics import EXP
from ..profile import ModelProfile
from .activations import (
    _NORM_FP32_PRODUCT,
    _ROPE_FP32,
    _TABLES_PER_LAYER,
    FP32,
    LORA_MODEL_TYPES,
    TOKENS,
    node_saved,
    node_saved_bytes,
)
from .backward import LOSS, BackwardUnsupportedError


def lora_saved_bytes_by_node(model: ModelProfile, rank: int, targets: tuple[str, ...], act_bytes: int = 2,
                             recompute: str = "none", loss: bool = True) -> dict[str, Formula]:
    """node path -> bytes saved for backward under LoRA (rank ``rank`` on the linears named ``targets``, every
    base weight frozen), in a model run at ``act_bytes`` per element (module docstring). ``selective``: the
    attention core's probabilities are not kept; ``full``: each layer keeps its input only (the checkpoint,
    as ``activations.saved_by_node``). ``loss=False``: a pipeline stage before the last."""
    spec = model.spec
    if spec.model_type not in LORA_MODEL_TYPES:
        raise BackwardUnsupportedError(
            f"LoRA saved activations are derived for the model types {', '.join(sorted(LORA_MODEL_TYPES))} "
            f"only, not {spec.model_type!r}")
    out: dict[str, Formula] = {}
    grad = False  # the residual stream needs a gradient
    normed = False  # the current norm's output needs a gradient
    normed_saved = False  # the adapters already keep the current norm's output
    heads: dict[str, bool] = {}  # q, k, v need a gradient
    scores_grad = probs_grad = False
    gate_grad = up_grad = False
    block_out = False
    rope_seen = False
    tables_per_layer = spec.model_type in _TABLES_PER_LAYER
    rope_bytes = FP32 if spec.model_type in _ROPE_FP32 else act_bytes
    # helium's float32 weight copy, kept for y's gradient (module docstring of activations)
    w32 = spec.model_type in _NORM_FP32_PRODUCT and act_bytes != FP32
    for node in model.nodes:
        name = node.path.rsplit(".", 1)[-1]
        kind, bytes_ = node.kind, ZERO
        if kind == NodeKind.NORM:
            if name not in ("q_norm", "k_norm"):  # a norm of the residual stream
                normed, normed_saved = grad, False
                if grad:  # x (upcast) and rstd; y is kept only for the frozen weight's gradient
                    rows_n = Formula.of(node.facts.fused_reads)
                    n = int(Formula.of(node.counts["params"]))
                    bytes_ = rows_n * FP32 + rows_n / n * FP32 + (n * FP32 if w32 else 0)
                block_out = False
            else:  # q_norm / k_norm on the heads: as above, on that head's tensor
                head = "q" if name == "q_norm" else "k"
                if heads.get(head):
                    rows_n = Formula.of(node.facts.fused_reads)
                    n = int(Formula.of(node.counts["params"]))
                    bytes_ = rows_n * FP32 + rows_n / n * FP32 + (n * FP32 if w32 else 0)
        elif kind == NodeKind.LINEAR:
            mm = node.facts.matmuls[0]
            targeted = name in targets
            if targeted:
                if name in ("o_proj", "down_proj") or not normed_saved:  # A keeps x (a shared input once)
                    bytes_ = mm.batch * mm.m * mm.k * act_bytes
                    normed_saved = normed_saved or name not in ("o_proj", "down_proj")
                bytes_ = bytes_ + mm.batch * mm.m * rank * act_bytes  # B keeps x A^T
            needs = normed or targeted
            if name in ("q_proj", "k_proj", "v_proj"):
                heads[name[0]] = needs
            elif name == "gate_proj":
                gate_grad = needs
            elif name == "up_proj":
                up_grad = needs
            elif name in ("o_proj", "down_proj"):
                grad = grad or block_out or targeted
        elif kind == NodeKind.ROPE:
            if (heads.get("q") or heads.get("k")) and (tables_per_layer or not rope_seen):
                bytes_ = 2 * S * spec.rotary_dim * rope_bytes
                rope_seen = True
        elif kind == NodeKind.ATTN_SCORES:
            mm = node.facts.matmuls[0]
            scores_grad = bool(heads.get("q") or heads.get("k"))
            if heads.get("q"):
                bytes_ = bytes_ + mm.batch * mm.n * mm.k * act_bytes  # the keys
            if heads.get("k"):
                bytes_ = bytes_ + mm.batch * mm.m * mm.k * act_bytes  # q
        elif kind == NodeKind.ATTN_SOFTMAX:
            probs_grad = scores_grad
            if scores_grad and recompute != "selective":
                bytes_ = node_saved_bytes(node, node_saved(node), act_bytes, spec.model_type)
        elif kind == NodeKind.ATTN_CONTEXT:
            mm = node.facts.matmuls[0]
            if probs_grad:
                bytes_ = mm.batch * mm.k * mm.n * act_bytes  # v
            if heads.get("v") and recompute != "selective":
                if act_bytes != FP32 or not probs_grad:
                    softmax = next(n for n in model.nodes if n.kind == NodeKind.ATTN_SOFTMAX and n.layer == node.layer)
                    bytes_ = bytes_ + Formula.of(softmax.counts[EXP]) * act_bytes
            block_out = probs_grad or bool(heads.get("v"))
        elif kind == NodeKind.ACTIVATION:
            if gate_grad:
                bytes_ = Formula.of(node.facts.fused_reads) * act_bytes
        elif kind == NodeKind.ELEMENTWISE and node.part == "gate_mul":
            half = Formula.of(node.facts.fused_reads) / 2
            bytes_ = half * act_bytes * (int(gate_grad) + int(up_grad))  # each factor for the other's gradient
            block_out = gate_grad or up_grad
        elif kind == NodeKind.LM_HEAD and name in targets:
            mm = node.facts.matmuls[0]
            bytes_ = mm.batch * mm.m * mm.k * act_bytes + mm.batch * mm.m * rank * act_bytes
        out[node.path] = bytes_
    if loss:
        out[LOSS] = TOKENS * spec.vocab_size * FP32 + TOKENS * 8 + FP32
    if recompute == "full":
        for node in model.nodes:
            if node.layer is not None:
                out[node.path] = ZERO
        first = {n.layer: n.path for n in reversed(model.nodes) if n.layer is not None}
        for path in first.values():
            out[path] = TOKENS * spec.hidden_size * act_bytes
    return out


def lora_saved_bytes(model: ModelProfile, batch: int, seq: int, rank: int, targets: tuple[str, ...],
                     act_bytes: int = 2, recompute: str = "none", loss: bool = True) -> tuple[int, int]:
    """(bytes a LoRA micro-batch of ``batch`` x ``seq`` saves, the bytes one layer holds again while full
    recomputation reruns it: the largest layer's saved set, 0 otherwise) (``lora_saved_bytes_by_node``)."""
    env = {"B": batch, "S": seq, "P": 0}
    total = sum(int(f.evaluate(env)) for f in
                lora_saved_bytes_by_node(model, rank, targets, act_bytes, recompute, loss).values())
    peak = 0
    if recompute == "full":
        plain = lora_saved_bytes_by_node(model, rank, targets, act_bytes, "none", loss)
        layers: dict[int, int] = {}
        for node in model.nodes:
            if node.layer is not None:
                layers[node.layer] = layers.get(node.layer, 0) + int(plain[node.path].evaluate(env))
        peak = max(layers.values(), default=0)
    return total, peak


__all__ = ["lora_saved_bytes", "lora_saved_bytes_by_node"]
