"""Backward counts per node: what ``loss.backward()`` computes for each forward node, as autograd runs it.

One rule per forward node kind, derived from the node's facts (the matmul shapes the op table recorded, the
norm's weight, the elementwise chain's fused size) and, where a count is a fixed multiple of a forward op,
from the forward counts. Each backward op is costed by the op table (``llm_profiler.ops``); the backward-only
aten ops (``silu_backward``, ``_softmax_backward_data``, ...) are costed here, by ``ATEN_BACKWARD``, which the
measuring side (``validation/backward.py``) maps the same aten ops through. The derivatives follow
PyTorch's ``tools/autograd/derivatives.yaml`` and the CPU kernels:

- a matmul (m x k) @ (k x n), the weight or the second operand needing a gradient: grad of the first operand
  g (m x n) @ B^T (n x k) = m*k*n MACs, grad of the second A^T (k x m) @ g (m x n) = k*n*m MACs; a fused bias:
  its gradient is g summed over the m rows (n*(m-1) ADD);
- a mul by a constant (the attention scaling) or by a tensor with no gradient (rope's cos / sin): one mul;
  a mul of two tensors that both need a gradient (x * rstd, weight * x, gate * up): two muls, and a sum over
  the broadcast dimension of the smaller operand (the rows of a norm weight, the features of rstd);
- ``x.pow(2)``: ``grad * 2 * x.pow(1)`` (pow(x, 1) is an aten pow: 1 EXP, then 2 MULT); ``rsqrt``:
  ``-0.5 * grad * rstd.pow(3)`` (cube: 2 MULT, then 2 MULT); ``mean``: the gradient expanded and divided by n
  (1 DIV per input element); an add or the additive mask: nothing (the gradient passes through); ``neg``:
  one neg;
- silu: ``dy * s * (1 + x * (1 - s))``, s = 1 / (1 + exp(-x)) (aten silu_backward, CPU kernel): EXP 1,
  ADD 3, DIV 1, MULT 3 per element;
- softmax: ``y * (g - sum(g * y))`` per row of n: MULT 2n, ADD 2n - 1;
- the loss, cross_entropy(logits, targets) (mean over the N = B*S rows): log_softmax backward,
  ``g - exp(y) * sum(g)`` per row of V: ADD 2V - 1, EXP V, MULT V; nll_loss backward: -grad / N once
  (1 DIV, 1 ADD), written into a zero N x V gradient;
- the embedding: ``embedding_dense_backward``, the T gradient rows added into a zero V x h table: T*h ADD.

Gradient accumulation: a tensor read by r ops receives r gradients, summed by r - 1 adds of its size; they
are charged to the node that wrote the tensor (``accumulations``), e.g. the residual stream read by the next
RMSNorm twice (x.pow(2) and x * rstd) and by the residual add: 2 adds on the node that wrote it. A tied
lm_head's weight gradient is added to the embedding's: V*h ADD on the embedding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from .. import ops
from ..errors import ProfilerError
from ..formula import ZERO, B, Formula, S
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, DIV, EXP, MACS, MULT, PARAMS
from ..ops import Counts
from ..profile import ModelProfile

TOKENS = B * S
LOSS = "loss"  # the node path of the cross-entropy on the logits

Number = Any


class BackwardUnsupportedError(ProfilerError):
    """A node whose backward has no rule yet (its family is not validated for training)."""


# --- backward-only ops, per element or per row -------------------------------------------------------
def silu_backward(n: Number) -> Counts:
    """aten silu_backward: dy * s * (1 + x * (1 - s)), s = 1 / (1 + exp(-x)): EXP 1, ADD 3, DIV 1, MULT 3."""
    return Counts({EXP: n, ADD: 3 * n, DIV: n, MULT: 3 * n, ACT: n})


def softmax_backward(rows: Number, n: Number) -> Counts:
    """aten _softmax_backward_data: y * (g - sum(g * y)) per row of n: MULT 2n, ADD (n - 1) + n."""
    return Counts({MULT: 2 * rows * n, ADD: rows * (2 * n - 1), ACT: rows * n})


def log_softmax_backward(rows: Number, n: Number) -> Counts:
    """aten _log_softmax_backward_data: g - exp(y) * sum(g) per row of n: ADD (n - 1) + n, EXP n, MULT n."""
    return Counts({ADD: rows * (2 * n - 1), EXP: rows * n, MULT: rows * n, ACT: rows * n})


def nll_loss_backward(rows: Number, classes: Number) -> Counts:
    """aten nll_loss_backward (mean): -grad / total_weight once (1 DIV, 1 ADD), scattered into a zero
    rows x classes gradient (written: rows * classes)."""
    return Counts({DIV: 1, ADD: 1, ACT: rows * classes})


def embedding_backward(rows: Number, hidden: Number, vocab: Number) -> Counts:
    """aten embedding_dense_backward: the rows' gradients added into a zero vocab x hidden table."""
    return Counts({ADD: rows * hidden, ACT: vocab * hidden})


def gelu_backward(n: Number, tanh: bool = False) -> Counts:
    """aten gelu_backward, CPU kernel. erf: cdf = 0.5 * (1 + erf(x / sqrt2)), pdf = exp(-0.5 * x * x) * beta,
    dy * (cdf + x * pdf): EXP 2, ADD 2, MULT 7. tanh: inner = beta * (x + kappa * x^3), t = tanh(inner),
    dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * beta * (1 + 3 * kappa * x * x)): EXP 1, ADD 5, MULT 12."""
    if tanh:
        return Counts({EXP: n, ADD: 5 * n, MULT: 12 * n, ACT: n})
    return Counts({EXP: 2 * n, ADD: 2 * n, MULT: 7 * n, ACT: n})


def tanh_backward(n: Number) -> Counts:
    """aten tanh_backward: g * (1 - y * y): MULT 2, ADD 1."""
    return Counts({MULT: 2 * n, ADD: n, ACT: n})


def relu_backward(n: Number) -> Counts:
    """aten threshold_backward: g where x > 0, else 0: one CMP."""
    return Counts({"cmp": n, ACT: n})


def layer_norm_backward(rows: Number, n: Number, weight: bool, grad_weight: bool, grad_bias: bool) -> Counts:
    """aten native_layer_norm_backward (the CPU kernel), per row of n: dy * w (n MULT, with a weight);
    ds = sum(dy * w * x) (n MULT, n - 1 ADD), db = sum(dy * w) (n - 1 ADD); the row's coefficients
    b = (db * mean - ds) * rstd^3 / n and c = -b * mean - db * rstd / n (6 MULT, 2 ADD, 2 DIV);
    dx = rstd * dy * w + b * x + c (2n MULT, 2n ADD). grad weight: sum over the rows of dy * (x - mean) * rstd
    (rows*n ADD + 2 rows*n MULT, n*(rows - 1) ADD); grad bias: sum over the rows of dy (n*(rows - 1) ADD)."""
    out = Counts({MULT: rows * ((4 if weight else 3) * n + 6), ADD: rows * 4 * n, DIV: 2 * rows, ACT: rows * n})
    if grad_weight:
        out = out + Counts({ADD: rows * n + n * (rows - 1), MULT: 2 * rows * n, ACT: n})
    if grad_bias:
        out = out + Counts({ADD: n * (rows - 1), ACT: n})
    return out


def _layer_norm(args: tuple, kwargs: dict, out: Any) -> Counts:
    grad, shape, weight, mask = args[0], args[2], args[5], args[7]
    n = math.prod(shape)
    return layer_norm_backward(numel(grad) // n, n, weight is not None, bool(mask[1]), bool(mask[2]))


def _gelu(args: tuple, kwargs: dict, out: Any) -> Counts:
    approximate = kwargs.get("approximate", args[2] if len(args) > 2 else "none")
    return gelu_backward(numel(out), tanh=approximate == "tanh")


def numel(x: Any) -> int:
    return int(math.prod(x.shape))


def _silu(args: tuple, kwargs: dict, out: Any) -> Counts:
    return silu_backward(numel(out))


def _softmax(args: tuple, kwargs: dict, out: Any) -> Counts:
    grad, dim = args[0], args[2]
    n = grad.shape[dim]
    return softmax_backward(numel(grad) // n, n)


def _log_softmax(args: tuple, kwargs: dict, out: Any) -> Counts:
    grad, dim = args[0], args[2]
    n = grad.shape[dim]
    return log_softmax_backward(numel(grad) // n, n)


def _nll(args: tuple, kwargs: dict, out: Any) -> Counts:
    rows, classes = out.shape if out.dim() == 2 else (1, out.shape[0])
    return nll_loss_backward(rows, classes)


def _embedding(args: tuple, kwargs: dict, out: Any) -> Counts:
    grad = args[0]
    hidden = grad.shape[-1]
    return embedding_backward(numel(grad) // hidden, hidden, out.shape[0])


def index_accumulate(values: Number, out: Number) -> Counts:
    """aten index_put(..., accumulate=True), the backward of a gather (``weights[expert_ids]``): each
    gathered row's gradient added into a zero tensor of the source's shape: one ADD per value."""
    return Counts({ADD: values, ACT: out})


def _index_put(args: tuple, kwargs: dict, out: Any) -> Counts | None:
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    if not accumulate:
        return None  # a plain scatter of values: data movement
    return index_accumulate(numel(args[2]), numel(out))


def _scatter_add(args: tuple, kwargs: dict, out: Any) -> Counts:
    """scatter_add(zeros, dim, index, src), the backward of a gather: one ADD per source element."""
    return index_accumulate(numel(args[3]), numel(out))


def _sigmoid(args: tuple, kwargs: dict, out: Any) -> Counts:
    return sigmoid_backward(numel(out))


def sigmoid_backward(n: Number) -> Counts:
    """aten sigmoid_backward: g * (1 - y) * y: ADD 1, MULT 2 per element."""
    return Counts({ADD: n, MULT: 2 * n, ACT: n})


# aten op (overload packet name) -> counts, for the ops only backward runs (forward ops: validation.aten);
# a handler returning None: the op moves data (no arithmetic) in that call
ATEN_BACKWARD: dict[str, Callable[[tuple, dict, Any], Counts | None]] = {
    "silu_backward": _silu,
    "_softmax_backward_data": _softmax,
    "_log_softmax_backward_data": _log_softmax,
    "nll_loss_backward": _nll,
    "embedding_dense_backward": _embedding,
    "index_put": _index_put,
    "native_layer_norm_backward": _layer_norm,
    "gelu_backward": _gelu,
    "tanh_backward": lambda args, kwargs, out: tanh_backward(numel(out)),
    "threshold_backward": lambda args, kwargs, out: relu_backward(numel(out)),
    "scatter_add": _scatter_add,
    "sigmoid_backward": _sigmoid,
}


# --- per node ----------------------------------------------------------------------------------------
def matmul_backward(node: Node) -> Counts:
    """Both operands' gradients of every matmul the node records; a fused bias's gradient (sum over rows)."""
    out = Counts()
    for mm in node.facts.matmuls:
        out = out + ops.matmul(mm.m, mm.k, mm.n, batch=mm.batch) + ops.matmul(mm.k, mm.n, mm.m, batch=mm.batch)
        if mm.bias:
            out = out + ops.reduce_sum(mm.n, mm.m)
    return Counts(out)


def rms_norm_backward(rows: Formula, n: Formula) -> Counts:
    """The eager RMSNorm, w * (x * rsqrt(mean(x^2) + eps)), backwards (see the module docstring):

    w * y: grad_w = sum_rows(g * y) (rows*n MULT, n*(rows-1) ADD), grad_y = g * w (rows*n MULT);
    x * r: grad_x = g * r (rows*n MULT), grad_r = sum_n(g * x) (rows*n MULT, rows*(n-1) ADD);
    rsqrt: r^3 (2 MULT), * -0.5, * g: 4 MULT per row; + eps: nothing; mean: g / n expanded: rows*n DIV;
    x^2: x^1 (rows*n EXP), * 2, * g: 2 rows*n MULT.
    """
    elems = rows * n
    return Counts({
        MULT: 6 * elems + 4 * rows, ADD: n * (rows - 1) + rows * (n - 1), DIV: elems, EXP: elems,
        ACT: 8 * elems + n + 4 * rows,
    })


# single-aten-op activations (graph.activations.HF_ACTIVATIONS) -> their backward op
_ACTIVATIONS: dict[str, Callable[[Formula], Counts]] = {
    "silu": silu_backward, "swish": silu_backward, "gelu": gelu_backward,
    "gelu_pytorch_tanh": lambda n: gelu_backward(n, tanh=True), "relu": relu_backward,
    "sigmoid": sigmoid_backward, "tanh": tanh_backward,
}


def _layer_norm_node(node: Node) -> Counts:
    """nn.LayerNorm (one aten op): rows = its SQRT count, n from its MULT (3n per row with a weight)."""
    c = node.counts
    rows = Formula.of(c["sqrt"])
    per_row = int(Formula.of(c[MULT]).evaluate({"B": 1, "S": 1, "P": 0})) // int(rows.evaluate({"B": 1, "S": 1, "P": 0}))
    weight = int(Formula.of(c.get(PARAMS, 0))) > 0
    n = per_row // (3 if weight else 2)
    bias = int(Formula.of(c.get(PARAMS, 0))) == 2 * n
    return layer_norm_backward(rows, n, weight, weight, bias)


def _rms_rows(node: Node) -> tuple[Formula, Formula]:
    n = Formula.of(node.counts.get(PARAMS, 0))  # the scale: n weights
    elems = node.facts.fused_reads
    if elems is None or not n:
        raise BackwardUnsupportedError(f"node {node.path}: a norm without its size facts")
    return elems / int(n), n


def _is_scaling(node: Node) -> bool:
    """A node that multiplies or divides a tensor by a constant: one arithmetic metric, MULT or DIV, no
    matmul (a gate product multiplies two tensors: not a scaling)."""
    arith = {k for k, v in node.counts.items() if k in (ADD, MULT, DIV, EXP, "sqrt", "cmp") and Formula.of(v)}
    return (node.part != "gate_mul" and not node.facts.matmuls and arith in ({MULT}, {DIV})
            and node.kind in (NodeKind.ELEMENTWISE, NodeKind.LM_HEAD))


def node_backward(node: Node, norm: str = "rmsnorm", activation: str = "silu", group: int = 1,
                  spec_moe: Any = None) -> Counts:
    """The backward counts of one forward node (gradient accumulation excluded: ``accumulations``).

    ``group``: query heads per KV head (the GQA expansion repeat_kv undoes: its gradient sums ``group``
    copies, (group - 1) ADD per KV element read by scores (keys) and context (values))."""
    kind, c = node.kind, node.counts
    if kind in (NodeKind.POSITIONS, NodeKind.ROTARY, NodeKind.KV_CACHE, NodeKind.RESIDUAL):
        return Counts()  # no gradient (positions, tables, the cache) or a pass-through (the residual add)
    if kind in (NodeKind.LINEAR, NodeKind.LM_HEAD) and node.facts.matmuls:
        return matmul_backward(node)
    if _is_scaling(node):  # x * c or x / c by a constant (granite's multipliers, a logits scaling)
        return Counts(c.without_act() + Counts({ACT: c[ACT]}))
    if node.part in ("softcap", "final_softcap"):
        # tanh(x / cap) * cap (gemma2 / gemma3): * cap back (MULT), tanh_backward, / cap back (DIV)
        n = Formula.of(c[EXP])
        return Counts(ops.elementwise("mul", n) + tanh_backward(n) + ops.elementwise("div", n))
    if kind in (NodeKind.ATTN_SCORES, NodeKind.ATTN_CONTEXT):
        out = matmul_backward(node)
        scale = Formula.of(c.get(MULT, 0)) - Formula.of(c.get(MACS, 0))  # the scaling muls: one each back
        if scale:
            out = out + ops.elementwise("mul", scale)
        if group > 1:
            kv = sum((s.read for s in node.facts.states), ZERO)
            out = out + Counts({ADD: kv * (group - 1), ACT: kv})
        return Counts(out)
    if kind == NodeKind.ATTN_SOFTMAX:
        elems = Formula.of(c[EXP])
        rows = elems - Formula.of(c["cmp"])  # rows * n exps, rows * (n - 1) comparisons
        return Counts({MULT: 2 * elems, ADD: 2 * elems - rows, ACT: elems})  # softmax_backward, rows x n
    if kind == NodeKind.NORM:
        if norm == "layernorm":
            return _layer_norm_node(node)
        rows, n = _rms_rows(node)
        return rms_norm_backward(rows, n)
    if kind == NodeKind.ROPE:
        # x * cos and rotate_half(x) * sin: one mul back each (cos, sin need no gradient); the neg of half
        # of x: one neg. Forward: 2n MULT, 1.5n ADD (neg n/2, add n) over n = q and k elements.
        mult = Formula.of(c[MULT])
        neg = Formula.of(c[ADD]) / 3
        return Counts({MULT: mult, ADD: neg, ACT: mult + neg})
    if kind == NodeKind.ACTIVATION:
        rule = _ACTIVATIONS.get(activation)
        if rule is None:
            raise BackwardUnsupportedError(f"node {node.path}: no backward rule for activation {activation!r} yet")
        return rule(Formula.of(c[ACT]))
    if kind == NodeKind.ELEMENTWISE and node.part == "gate_mul":
        n = Formula.of(c[MULT])
        return Counts({MULT: 2 * n, ACT: 2 * n})  # gate * up: grad_gate = g * up, grad_up = g * gate
    if kind == NodeKind.ROUTER and spec_moe is not None:
        return router_backward(node, spec_moe)
    if kind == NodeKind.EXPERTS and spec_moe is not None:
        return experts_backward(node, spec_moe)
    if kind == NodeKind.ELEMENTWISE and node.part == "shared_mix":
        return shared_mix_backward(node)
    if kind == NodeKind.EMBEDDING:
        weight = node.facts.weights[0]
        vocab, hidden = weight.shape
        # a scaled embedding (gemma's embed * sqrt(h), in the node): one mul back per element
        return embedding_backward(TOKENS, hidden, vocab) + ops.elementwise("mul", Formula.of(c.get(MULT, 0))) \
            if c.get(MULT) else embedding_backward(TOKENS, hidden, vocab)
    raise BackwardUnsupportedError(f"node {node.path} (kind {kind}): no backward rule yet")


def router_backward(node: Node, spec: Any) -> Counts:
    """A top-k router (graph.moe.router, graph.routers.topk_router), backwards, over T tokens, E experts, k
    chosen: the logits linear's two gradients; the scores: softmax_backward over E per token, or
    sigmoid_backward over T*E (``topk_softmax``: the softmax over the k chosen logits; top-k itself is a scatter
    into zeros, no arithmetic); weights gathered from the unbiased scores (a correction bias): their
    gradient scattered back with scatter_add, T*k ADD; normalize, top /= top.sum() (+ eps: an add, nothing):
    grad top = g / s (T*k DIV), grad s = -sum_k(g * (top / s) / s) (2 T*k DIV, T*k MULT, T*k neg, T*(k-1)
    ADD), and top, read by the sum and the division, gets its two gradients added (T*k ADD); the routed
    scaling factor: one mul per weight."""
    rows, k, experts = TOKENS, spec.experts_per_token, spec.num_experts
    router = getattr(spec, "router", None)
    scoring = router.scoring if router is not None else "softmax"
    normalize = router.normalize if router is not None else spec.norm_topk_prob
    pairs = rows * k
    out = matmul_backward(node)
    if scoring == "topk_softmax":
        return Counts(out + softmax_backward(rows, k))
    out = out + (softmax_backward(rows, experts) if scoring == "softmax" else sigmoid_backward(rows * experts))
    if router is not None and router.correction_bias:
        out = out + index_accumulate(pairs, rows * experts)
    if normalize:
        out = out + Counts({DIV: 3 * pairs, MULT: pairs, ADD: 2 * pairs + rows * (k - 1), ACT: 6 * pairs + rows})
    if router is not None and router.scaling:
        out = out + ops.elementwise("mul", pairs)
    return Counts(out)


@dataclass(frozen=True)
class ExpertShape:
    """The fields ``experts_backward`` reads, for a family whose spec names them otherwise (a layer's FFN)."""

    num_experts: int
    experts_per_token: int
    hidden_size: int
    moe_intermediate_size: int


def experts_backward(node: Node, spec: Any) -> Counts:
    """The batched_mm experts (graph.moe.routed_experts), backwards, for N = T*k (token, expert) pairs:

    the top-k sum: an expand (nothing); out * w: grad out = g * w (N*h MULT), grad w = sum_h(g * out) (N*h MULT,
    N*(h-1) ADD); each bmm's two gradients (``matmul_backward`` on the recorded shapes); act(gate) * up: two
    muls of N*I; the gathered weights (``gate_up_proj[expert_ids]``, ``down_proj[expert_ids]``): index_put
    with accumulate, one ADD per gathered element (N * 3*h*I), into zero tensors of every expert's weights;
    the tokens repeated k times (repeat_interleave): their k gradients summed, T*h*(k-1) ADD."""
    h, inter, k = spec.hidden_size, spec.moe_intermediate_size, spec.experts_per_token
    pairs = TOKENS * k
    one = sum(w.numel for w in node.facts.weights) // max(spec.num_experts, 1)
    out = matmul_backward(node) + Counts({MULT: 2 * pairs * h, ADD: pairs * (h - 1), ACT: 2 * pairs * h + pairs})
    out = out + Counts({MULT: 2 * pairs * inter, ACT: 2 * pairs * inter})  # act(gate) * up
    out = out + index_accumulate(pairs * one, spec.num_experts * one)
    out = out + Counts({ADD: TOKENS * h * (k - 1), ACT: TOKENS * h})
    return Counts(out)


def shared_mix_backward(node: Node) -> Counts:
    """routed + shared (an add: nothing back); with qwen2_moe's gate, sigmoid(gate_logit) * shared first:
    sigmoid_backward over the T logits, and the product's two gradients, g * sigmoid (T*h MULT) and
    sum_h(g * shared) (T*h MULT, T*(h - 1) ADD)."""
    c = node.counts
    rows = Formula.of(c.get(EXP, 0))  # one sigmoid per token when gated
    if not rows:
        return Counts()
    n = Formula.of(c[MULT])  # the T*h product
    return Counts(sigmoid_backward(rows) + Counts({MULT: 2 * n, ADD: n - rows, ACT: 2 * n + rows}))


def loss_backward(vocab: int) -> Counts:
    """cross_entropy(logits.reshape(B*S, V), targets), mean: nll_loss then log_softmax backwards."""
    return nll_loss_backward(TOKENS, vocab) + log_softmax_backward(TOKENS, vocab)


# --- gradient accumulation (the template's dataflow) ------------------------------------------------
# model types whose backward is validated exact per node against autograd (tests/test_training_backward.py)
VALIDATED_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "smollm3", "helium", "seed_oss", "ernie4_5", "granite", "glm", "glm4",
    "phi3", "gemma", "gemma2", "gemma3_text", "starcoder2", "stablelm", "olmo", "olmo3", "exaone4",  # dense
    "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe", "granitemoeshared", "dots1", "glm4_moe",  # MoE
    "exaone_moe", "minimax_m2",
    "vaultgemma", "cwm", "solar_open",  # the layouts above under new names (tests/test_training_backward.py)
})
# the GPT-style and other dense layouts counted by training/backward_dense.py (tests/test_training_backward_dense.py)
DENSE_VALIDATED_MODEL_TYPES = frozenset({
    "gpt2", "gpt_neo", "gpt_bigcode", "opt", "xglm", "gpt_neox", "phi", "gptj", "codegen", "bloom", "mpt", "falcon",
    "cohere", "cohere2", "ministral3", "ministral", "arcee", "persimmon", "nemotron", "olmo2", "hunyuan_v1_dense", "jais2",
    "RefinedWeb", "RefinedWebModel", "cohere2_moe",
})
VALIDATED_MODEL_TYPES |= DENSE_VALIDATED_MODEL_TYPES
# model type -> its whole backward, for families with rules of their own (registered by their modules below)
FAMILY_BACKWARD: dict[str, Callable[[ModelProfile], dict[str, Counts]]] = {}
# the linears that read a block's internal tensor, not the norm's output (the block's output projections)
FUSED_QKV = ("qkv_proj", "query_key_value", "W_pack", "c_attn", "Wqkv")
# model types whose apply_rotary_pos_emb slices q and k into the rotary part and the rest, then concatenates
ROPE_SPLIT = frozenset({"phi3", "glm", "glm4", "glm4_moe", "glm4_moe_lite", "gpt_neox", "nemotron", "minimax_m2",
                         "deepseek_v3", "stablelm", "persimmon"})
OUTPUT_PROJECTIONS = frozenset({"o_proj", "down_proj", "dense", "out_proj", "fc2", "c_proj", "wo", "w2",
                                 # granite's shared MLP reads the norm's output through input_linear only;
                                 # output_linear reads act(first half) * second half (transformers 5.23
                                 # modeling_granitemoeshared.py:91, GraniteMoeSharedMLP.forward)
                                 "output_linear"})


def accumulations(model: ModelProfile) -> dict[str, Counts]:
    """Gradient accumulation adds per node, charged to the node that wrote the tensor read r times
    (r - 1 adds of its size). Each layer is read as blocks (attention, then MLP / MoE), each with an optional
    pre-norm (a norm just before the block's first node) and post-norm (a norm just after its last), and a
    ``:residual`` node writing the stream after each block:

    - the stream a block reads (the embedding's output, or a scaling of it in the base model, then the
      layer's residual adds) is read by the block's pre-norm (the eager RMSNorm twice, x.pow(2) and
      x * rstd; nn.LayerNorm once) and by the residual add; without a pre-norm, by the block's input
      linears and the residual add; the last layer's output by the final norm only;
    - a pre-norm's output is read by the block's input linears (q, k, v or a fused qkv; gate and up; a
      router, the experts and a shared expert's gate / up / gate linear, granite's shared ``input_linear``):
      one read each;
    - a post-norm (gemma2's post_attention_layernorm, glm4's post_self_attn_layernorm, olmo2's) reads the
      block's output: (reads - 1) adds on the node that wrote it;
    - q_proj / k_proj under qk-norm: read by the norm (reads - 1 adds); a fused qkv sliced into q, k and v:
      2 adds of its output; q and k (their norm's output under qk-norm) read by rope three times (x * cos
      and rotate_half's two halves: 2 adds of the rotated part), and once more where rope first slices
      them into the rotary part and the rest (``ROPE_SPLIT``: 1 add of all of q);
    - a tied lm_head: its weight gradient added to the embedding's (V*h adds on the embedding).
    """
    spec = model.spec
    h = spec.hidden_size
    stream = TOKENS * h
    reads = 2 if spec.norm == "rmsnorm" else 1  # the eager RMSNorm reads x twice, nn.LayerNorm once
    out: dict[str, Counts] = {}
    nodes = list(model.nodes)

    add = partial(accumulate, out)

    embed = next(n for n in nodes if n.kind == NodeKind.EMBEDDING)
    first_layer = next(i for i, m in enumerate(nodes) if m.layer is not None)
    head = [n for n in nodes[:first_layer] if n.kind == NodeKind.ELEMENTWISE]
    writer = head[-1].path if head else embed.path  # the stream's first writer (granite's multiplier)
    if spec.tie_word_embeddings:
        add(embed.path, Formula.const(spec.vocab_size * h))
    layers = sorted({n.layer for n in nodes if n.layer is not None})
    for layer in layers:
        in_layer = [n for n in nodes if n.layer == layer]
        residual = [n for n in in_layer if n.kind == NodeKind.RESIDUAL]
        if len(residual) != 1:
            raise BackwardUnsupportedError(
                f"layer {layer}: gradient accumulation is derived for layers with one residual node of two adds "
                f"(attention, then MLP), not {spec.model_type!r}'s")
        blocks = [b for b in ("attn", "mlp") if any(n.block == b for n in in_layer)]
        if blocks != ["attn", "mlp"]:
            raise BackwardUnsupportedError(f"layer {layer}: no attention-then-MLP blocks ({spec.model_type!r})")
        for block in blocks:
            members = [i for i, n in enumerate(in_layer) if n.block == block]
            pre = norm_at(in_layer, members[0] - 1)
            post = norm_at(in_layer, members[-1] + 1)
            readers = sum(1 for n in in_layer if n.block == block and (
                n.kind in (NodeKind.ROUTER, NodeKind.EXPERTS)
                or (n.kind == NodeKind.LINEAR and n.path.rsplit(".", 1)[-1] not in OUTPUT_PROJECTIONS)))
            if pre is not None:
                add(writer, reads * stream)
                add(pre.path, (readers - 1) * stream)
            else:
                add(writer, readers * stream)
            if post is not None and reads > 1:
                add(in_layer[members[-1]].path, (reads - 1) * _output(in_layer[members[-1]]))
            writer = residual[0].path
        for node in in_layer:
            name = node.path.rsplit(".", 1)[-1]
            if name in ("q_proj", "k_proj") and spec.qk_norm and reads > 1:
                add(node.path, node.facts.matmuls[0].outputs)  # read by q_norm / k_norm twice
            elif name in FUSED_QKV:
                add(node.path, 2 * node.facts.matmuls[0].outputs)  # sliced into q, k, v: three gradients
    add(writer, (reads - 1) * stream)  # the last layer's output, read by the final norm
    roped: set[int] = {n.layer for n in nodes if n.kind == NodeKind.ROPE and n.layer is not None}
    # q and k, read by rope: x * cos and rotate_half's two halves (2 adds of the rotated part); where the
    # rope slices q into its rotary and pass-through parts first (ROPE_SPLIT), one more add of all of q
    split = spec.model_type in ROPE_SPLIT
    for layer in sorted(roped):
        by_name = {n.path.rsplit(".", 1)[-1]: n for n in nodes if n.layer == layer}
        for which, heads in (("q", spec.num_heads), ("k", spec.num_kv_heads)):
            qk = by_name.get(f"{which}_norm") or by_name.get(f"{which}_proj") or next(
                (by_name[n] for n in FUSED_QKV if n in by_name), None)
            if qk is None:
                raise BackwardUnsupportedError(f"layer {layer}: no node writes {which} for rope")
            full = TOKENS * heads * spec.head_dim
            add(qk.path, 2 * TOKENS * heads * spec.rotary_dim + (full if split else 0))
    return out


def accumulate(acc: dict[str, Counts], path: str, n: Any) -> None:
    """Charge ``n`` gradient-accumulation adds (each writes its sum: ``act`` too) to the node ``path`` in
    ``acc``; nothing for none."""
    if n:
        acc[path] = acc.get(path, Counts()) + Counts({ADD: n, ACT: n})


def default_node_backward(node: Node, spec: Any) -> Counts:
    """The node's own backward under the shared rules, read from the spec (norm, activation, GQA group, MoE)."""
    group = spec.num_heads // spec.num_kv_heads if spec.num_kv_heads else 1
    return node_backward(node, spec.norm, spec.activation, group, spec if hasattr(spec, "num_experts") else None)


def family_counts(model: ModelProfile, rule: Callable[[Node], Any], acc: dict[str, Counts]) -> dict[str, Counts]:
    """node path -> ``rule(node)`` (the node's own backward) plus the accumulations ``acc`` charged to it, and
    ``loss``: the result of every family's backward."""
    out = {n.path: Counts(rule(n) + acc.get(n.path, Counts())) for n in model.nodes}
    out[LOSS] = loss_backward(model.spec.vocab_size)
    return out


@dataclass(frozen=True)
class _Subset:
    """A model seen through a subset of its nodes (what ``accumulations`` reads: spec and nodes)."""

    spec: Any
    nodes: tuple[Node, ...]


def accumulations_over(model: ModelProfile, nodes: Any, spec: Any = None) -> dict[str, Counts]:
    """``accumulations`` of ``model`` seen through ``nodes`` (a subset of its nodes: a family leaves out
    those that are not the readers the generic count assumes) and ``spec`` (default: the model's)."""
    view = _Subset(model.spec if spec is None else spec, tuple(nodes))
    return dict(accumulations(cast(ModelProfile, view)))


def backward_counts(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (its own ops plus the accumulations charged to it), and ``loss``."""
    spec = model.spec
    if spec.model_type in FAMILY_BACKWARD:  # a family's own rules (training/backward_mla.py, ...)
        return FAMILY_BACKWARD[spec.model_type](model)
    from . import backward_dense  # the GPT-style and other dense layouts (imports this module)
    if spec.model_type in backward_dense.LAYOUTS:
        return backward_dense.backward_counts(model)
    return family_counts(model, lambda n: default_node_backward(n, spec), accumulations(model))


def norm_at(nodes: list[Node], index: int) -> Node | None:
    """The block-less norm at ``index`` (right before a block: its pre-norm; right after: its post-norm)."""
    if 0 <= index < len(nodes) and nodes[index].kind == NodeKind.NORM and nodes[index].block is None:
        return nodes[index]
    return None


def _output(node: Node) -> Formula:
    """Elements a node writes as its output: its matmul's outputs, else its chain's fused output."""
    if node.facts.matmuls:
        return node.facts.matmuls[-1].outputs
    if node.facts.fused_writes is None:
        raise BackwardUnsupportedError(f"node {node.path}: its output size is not among its facts")
    return node.facts.fused_writes


def is_validated(model: ModelProfile) -> bool:
    """Whether the model's type has its backward validated exact per node against autograd."""
    return model.spec.model_type in VALIDATED_MODEL_TYPES


from . import backward_families  # noqa: E402  (registers FAMILY_BACKWARD: MLA, ...)

VALIDATED_MODEL_TYPES |= backward_families.VALIDATED  # their types proven exact (tests/test_training_backward_*.py)

__all__ = ["ATEN_BACKWARD", "FAMILY_BACKWARD", "LOSS", "OUTPUT_PROJECTIONS", "VALIDATED_MODEL_TYPES", "numel",
           "ExpertShape", "accumulate", "accumulations_over", "default_node_backward", "family_counts", "is_validated", "BackwardUnsupportedError", "accumulations", "backward_counts",
           "node_backward"]
