"""Backward counts of MoE layouts with rules of their own: llama4 / llama4_text, gpt_oss, hunyuan_v1_moe /
hunyuan_v1_dense, ernie4_5_moe, phimoe, mimo_v2_flash (its rules: ``mimo_v2_flash_backward``).

llama4 (transformers 5.23, modeling_llama4.py), per layer and T = B*S tokens, H heads, KV heads, head dim D,
E experts of intermediate I, hidden h; backward as autograd runs it (``tools/autograd/derivatives.yaml``):

- rope as complex products on rotary layers, ``view_as_complex(x) * freqs_cis`` (no gradient to the table):
  MulBackward0 is ``grad * conj(freqs_cis)`` (``_conj``: a lazy flag, no arithmetic), one complex product per
  pair: 4 MULT + 2 ADD, the forward's counts exactly; q and k are read once (no rotate_half fan-out);
- ``qk_norm``, a weightless L2 norm ``x * rsqrt(mean(x^2) + eps)`` on q and k after rope, over r = T*(H + KV)
  rows of D: the eager RMSNorm's backward without the weight's two products (``rms_norm_backward`` less
  g*w and sum_rows(g*y)): MULT 4*r*D + 4r, ADD r*(D - 1), DIV r*D, EXP r*D; its input (rope's output) is read
  twice (x^2, x * rstd): r*D ADD on the rope node;
- NoPE layers' temperature, ``q * attn_scales`` (the scales are computed from positions: no gradient): one mul
  back per q element, T*H*D MULT;
- the router: logits = x @ W^T, top-k of the logits scattered into a -inf tensor, sigmoid over all T*E:
  the linear's two gradients, ``sigmoid_backward`` over T*E (ADD 1, MULT 2 each); the scatter's source
  gradient gathered at the chosen experts (T*k written, no arithmetic) and the top-k's scattered back (a move);
- ``:routing``: routed_in = x.repeat(E, 1) * scores (E*T*h): grad x-copies = g * s (E*T*h MULT), grad s =
  sum_h(g * x) (E*T*h MULT, E*T*(h - 1) ADD); repeat's E copies summed (T*h*(E - 1) ADD); the E outputs'
  sum and the add of the shared expert's output: nothing back;
- the experts, (E, T, h) @ (E, h, 2I), up * act(gate), (E, T, I) @ (E, I, h): each bmm's two gradients
  (``matmul_backward`` on the recorded shapes) and the product's two muls (2*E*T*I MULT).

Gradient accumulation: ``training.backward.accumulations`` without its rope fan-out (complex rope reads q and
k once), plus the L2 norm's two reads of rope's output (T*(H + KV)*D ADD on the rope node). The MoE block's
input is read by the router, ``repeat`` and the shared expert's gate and up: 4 reads, as the generic count
(router, experts, gate, up).

gpt_oss (modeling_gpt_oss.py), T tokens, H heads of D, KV heads, E experts of I, top-k, N = T*k*I:

- rope by halves, first * cos - second * sin, second * cos + first * sin, cat: 4 table muls (one mul back
  each: the forward's MULT) and the sub's neg (one per pair: half the forward's ADD); q (k) is chunked into two
  views, each read twice: 1 add of the rotated part (T*H*D, T*KV*D) on q_proj (k_proj), not 2;
- the sinks: combined = cat(scores, sinks expanded over B and S); combined - max(combined): the sub's second
  gradient, -g summed over the K+1 columns (``:sinks``: neg of every element, rows*K ADD), max's backward a
  scatter (a move); combined read twice (sub, max): rows*(K + 1) ADD on ``:scores`` (the cat's site: it wrote
  it); the sink parameter's expand summed over B*S: H*(B*S - 1) ADD on ``:scores``; softmax over K + 1
  columns (the rule of ``training.backward``), the sink column sliced off (a move);
- the router, F.linear(x, W, b), topk, softmax over the k chosen: the linear's gradients with its bias's sum
  over T, ``softmax_backward`` over k, topk's values scattered back (a move);
- the clamped SwiGLU (``:swiglu``), gate, up = gate_up[..., ::2], gate_up[..., 1::2], per element of N:
  gate.clamp(max): clamp_backward ``where(x <= max, g, 0)`` (1 CMP, a where); up.clamp(min, max): 2 CMP and
  a logical and (CMP), a where; glu = gate * sigmoid(gate * alpha): 2 MULT (two tensors), sigmoid_backward
  (ADD 1, MULT 2), * alpha back (1 MULT), gate read twice (1 ADD); (up + 1) * glu: 2 MULT. Per element:
  MULT 7, ADD 2, CMP 4, 13 written;
- the experts (batched_mm over T*k pairs, biased): ``training.backward.experts_backward`` without its
  act(gate) * up product (in ``:swiglu``) and with the gathered biases in the index_put (one ADD per gathered
  element), plus gate_up read by its two strided views (1 add of T*k*2I).

hunyuan_v1_moe / hunyuan_v1_dense (modeling_hunyuan_v1_moe.py): q and k are normed (``query_layernorm`` /
``key_layernorm``, RMSNorm over D) AFTER rope, so rope's output is read twice by each norm (T*(H + KV)*D ADD
on the rope node) and q_proj / k_proj only by rope (the rotate_half fan-out); the MoE router holds its logits
linear as ``gate.wg`` (its own node, a reader of the block's input) and the ``gate`` node reads wg's output:
the block's input is read by wg, the experts and the shared MLP's gate and up.

ernie4_5_moe (modeling_ernie4_5_moe.py): softmax scores; top-k chosen on ``moe_statics(scores)`` (scores +
a bias, indices only: no gradient back); the k weights gathered (scattered back: T*k ADD into T*E zeros) and
divided by ``clamp(sum, min=norm_min)``: the division's two gradients (``router_backward``'s normalize) and
clamp_backward, ``where(sum >= min, g, 0)``: 1 CMP per token and its where (2T written).

phimoe (modeling_phimoe.py), sparsemixer as the validated (eval-mode) model runs it, two rounds: scores
masked_fill'ed below a threshold (masks under no_grad), softmax over E, the chosen expert's weight gathered;
the second round on scores with the first choice scattered to -inf. Backward: the linear's gradients; per
round, ``softmax_backward`` over T rows of E and the gather scattered back (T ADD into T*E zeros); masked_fill
and scatter pass the gradient on (moves); the logits read by both rounds: T*E ADD. (In training mode
sparsemixer samples the experts and ``PhimoeMultiplier`` has its own backward: not what this rule counts.)
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..formula import Formula
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, DIV, EXP, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base

GPT_OSS_TYPES: frozenset[str] = frozenset({"gpt_oss"})
HUNYUAN_TYPES: frozenset[str] = frozenset({"hunyuan_v1_moe", "hunyuan_v1_dense"})
LLAMA4_TYPES: frozenset[str] = frozenset({"llama4_text"})  # a multimodal llama4 config profiles as llama4_text


def accumulations_without_rope(model: ModelProfile) -> dict[str, Counts]:
    """``training.backward.accumulations`` with the rope nodes left out (no rotate_half fan-out)."""
    kept = tuple(n for n in model.nodes if n.kind != NodeKind.ROPE)
    return base.accumulations_over(model, kept)


def l2_norm_backward(rows: Formula, n: Formula | int) -> Counts:
    """A weightless eager RMS / L2 norm, x * rsqrt(mean(x^2) + eps), backwards: ``rms_norm_backward`` less the
    weight's products (g*w: rows*n MULT; grad w = sum_rows(g*y): rows*n MULT, n*(rows - 1) ADD)."""
    elems = rows * n
    return Counts({MULT: 4 * elems + 4 * rows, ADD: rows * (n - 1), DIV: elems, EXP: elems,
                   ACT: 6 * elems + 4 * rows})


def llama4_node_backward(node: Node, spec: Any) -> Counts:
    t, h, D = base.TOKENS, spec.hidden_size, spec.head_dim
    if node.kind == NodeKind.ROPE:  # grad * conj(freqs): one complex product per pair, as the forward
        return ops.complex_mul(Formula.of(node.counts[ADD]) / 2)
    if node.kind == NodeKind.NORM and node.path.endswith(".qk_norm"):
        return l2_norm_backward(t * (spec.num_heads + spec.num_kv_heads), D)
    if node.part == "temperature":
        return ops.elementwise("mul", t * spec.num_heads * D)
    if node.layer is not None and node.kind in (NodeKind.ROUTER, NodeKind.EXPERTS) or node.part == "routing":
        ffn = spec.layers[node.layer].ffn
        E, inter = ffn.experts, ffn.intermediate
        if node.kind == NodeKind.ROUTER:
            # scatter_'s source gradient gathered back at the chosen experts: T*k written, no arithmetic
            return Counts(base.matmul_backward(node) + base.sigmoid_backward(t * E) + Counts({ACT: t * ffn.top_k}))
        if node.kind == NodeKind.EXPERTS:
            return Counts(base.matmul_backward(node) + Counts({MULT: 2 * E * t * inter, ACT: 2 * E * t * inter}))
        n = E * t * h
        return Counts({MULT: 2 * n, ADD: E * t * (h - 1) + t * h * (E - 1), ACT: 2 * n + E * t + t * h})
    return base.node_backward(node, spec.norm, spec.activation, spec.num_heads // spec.num_kv_heads)


def gpt_oss_node_backward(node: Node, spec: Any, nodes: dict[str, Node]) -> Counts:
    c = node.counts
    if node.kind == NodeKind.ROPE:
        mult, neg = Formula.of(c[MULT]), Formula.of(c[ADD]) / 2
        return Counts({MULT: mult, ADD: neg, ACT: mult + neg})
    if node.part == "sinks":  # -g (every element), summed over the K + 1 columns (rows * K ADD)
        n, cmp = Formula.of(c[ADD]), Formula.of(c["cmp"])
        return Counts({ADD: n + cmp, ACT: 2 * n - cmp})
    if node.part == "scores":
        sinks = nodes[node.path.replace(":scores", ":sinks")]
        combined = Formula.of(sinks.counts[ADD])  # rows * (K + 1): read by the sub and by max
        H = spec.num_heads
        extra = Counts({ADD: combined + H * (base.TOKENS - 1), ACT: combined + H})
        return Counts(base.node_backward(node, group=spec.num_heads // spec.num_kv_heads) + extra)
    if node.part == "swiglu":
        n = Formula.of(c[DIV])  # one sigmoid per element
        return Counts({MULT: 7 * n, ADD: 2 * n, "cmp": 4 * n, ACT: 13 * n})
    if node.kind in (NodeKind.ROUTER, NodeKind.EXPERTS):
        ffn = spec.layers[node.layer].ffn
        if node.kind == NodeKind.ROUTER:
            return Counts(base.matmul_backward(node) + base.softmax_backward(base.TOKENS, ffn.top_k))
        view = base.ExpertShape(ffn.experts, ffn.top_k, spec.hidden_size, ffn.intermediate)
        pairs = base.TOKENS * ffn.top_k * ffn.intermediate
        # experts_backward's act(gate) * up product is the :swiglu node's; gate_up read by its two views
        return Counts(base.experts_backward(node, view) + Counts({MULT: -2 * pairs, ADD: 2 * pairs}))
    return base.node_backward(node, spec.norm, spec.activation, spec.num_heads // spec.num_kv_heads)


def gpt_oss_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (own ops plus accumulations), and ``loss``."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    acc = accumulations_without_rope(model)
    nodes = {n.path: n for n in model.nodes}
    for node in model.nodes:
        name = node.path.rsplit(".", 1)[-1]
        if name in ("q_proj", "k_proj") and node.layer is not None and spec.layers[node.layer].mixer.rope:
            heads = spec.num_heads if name == "q_proj" else spec.num_kv_heads
            n = base.TOKENS * heads * spec.rotary_dim  # its two halves each read twice by rope
            base.accumulate(acc, node.path, n)
    return base.family_counts(model, lambda n: gpt_oss_node_backward(n, spec, nodes), acc)


def hunyuan_backward(model: ModelProfile) -> dict[str, Counts]:
    """``training.backward``'s rules, with the accumulations of q/k norms after rope and of ``gate.wg``."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    wg = {n.layer for n in model.nodes if n.path.endswith(".gate.wg")}
    kept = tuple(n for n in model.nodes if not (n.kind == NodeKind.ROUTER and n.layer in wg))
    acc = base.accumulations_over(model, kept, spec.model_copy(update={"qk_norm": False}))
    if spec.qk_norm:
        for node in model.nodes:
            if node.kind == NodeKind.ROPE:
                n = base.TOKENS * (spec.num_heads + spec.num_kv_heads) * spec.head_dim  # x^2 and x * rstd
                base.accumulate(acc, node.path, n)
    return base.family_counts(model, lambda node: base.default_node_backward(node, spec), acc)


def ernie4_5_moe_backward(model: ModelProfile) -> dict[str, Counts]:
    """``training.backward``'s rules; the router's gather scattered back and its clamp_backward; moe_statics
    (a bias on scores used only for the choice): nothing back."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    t = base.TOKENS

    def rule(node: Node) -> Counts:
        if node.path.endswith(".moe_statics"):
            return Counts()
        if node.kind == NodeKind.ROUTER:
            k, E = spec.experts_per_token, spec.num_experts
            return Counts(base.default_node_backward(node, spec) + base.index_accumulate(t * k, t * E) + Counts({"cmp": t, ACT: 2 * t}))
        return base.default_node_backward(node, spec)

    return base.family_counts(model, rule, base.accumulations(model))


def phimoe_backward(model: ModelProfile) -> dict[str, Counts]:
    """``training.backward``'s rules; the sparsemixer router's two rounds (module docstring)."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    t, E, rounds = base.TOKENS, spec.num_experts, spec.experts_per_token

    def rule(node: Node) -> Counts:
        if node.kind == NodeKind.ROUTER:
            one = base.softmax_backward(t, E) + base.index_accumulate(t, t * E)
            reads = Counts({ADD: (rounds - 1) * t * E, ACT: (rounds - 1) * t * E})
            return Counts(base.matmul_backward(node) + rounds * one + reads)
        return base.default_node_backward(node, spec)

    return base.family_counts(model, rule, base.accumulations(model))


def mimo_v2_flash_backward(model: ModelProfile) -> dict[str, Counts]:
    """mimo_v2_flash: full layers (H heads, KV heads) and sliding layers with twice the KV heads and a sink
    column; partial rotary (rope slices q and k into the rotary part and the rest, then concatenates).

    Per layer, with its own KV heads (k_proj's width / D) and group H / KV: scores' and context's GQA sums
    (``training.backward``'s rule with the layer's group); the row max subtracted before the softmax
    (``:row_max``, on the scores, or on scores + sink column): -g summed over the columns as gpt_oss's
    ``:sinks`` (a neg of every element, rows * (columns - 1) ADD), the logits read twice (sub and max:
    rows * columns ADD on ``:scores``), and on sink layers the sink parameter's expand summed over B*S
    (H*(B*S - 1) ADD on ``:scores``). Rope's fan-out: q (k) read by x * cos and rotate_half's two slices of the
    rotary part (2 adds of it) and sliced first (1 add of all of q), on q_proj / k_proj."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    t, D, H = base.TOKENS, spec.head_dim, spec.num_heads
    nodes = {n.path: n for n in model.nodes}

    def kv_heads(attn: str) -> int:
        return int(nodes[f"{attn}.k_proj"].facts.matmuls[0].n) // D

    def rule(node: Node) -> Counts:
        c = node.counts
        attn = node.path.rsplit(":", 1)[0]
        if node.part == "row_max":
            n, cmp = Formula.of(c[ADD]), Formula.of(c["cmp"])
            return Counts({ADD: n + cmp, ACT: 2 * n - cmp})
        if node.part in ("scores", "context"):
            out = base.node_backward(node, spec.norm, spec.activation, H // kv_heads(attn))
            if node.part == "scores":
                row_max = nodes[f"{attn}:row_max"]
                combined = Formula.of(row_max.counts[ADD])  # rows * columns, read by the sub and by max
                out = out + Counts({ADD: combined, ACT: combined})
                if row_max.counts.get("params"):  # a sink per head, expanded over B and S
                    out = out + Counts({ADD: H * (t - 1), ACT: H})
            return Counts(out)
        return base.default_node_backward(node, spec)

    acc = accumulations_without_rope(model)
    for node in model.nodes:
        if node.kind == NodeKind.ROPE:
            attn = node.path.rsplit(":", 1)[0]
            for which, heads in (("q", H), ("k", kv_heads(attn))):
                n = 2 * t * heads * spec.rotary_dim + t * heads * D
                acc[f"{attn}.{which}_proj"] = acc.get(f"{attn}.{which}_proj", Counts()) + Counts({ADD: n, ACT: n})
    return base.family_counts(model, rule, acc)


def llama4_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (own ops plus accumulations), and ``loss``."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    acc = accumulations_without_rope(model)
    for node in model.nodes:
        if node.kind == NodeKind.ROPE and any(n.layer == node.layer and n.path.endswith(".qk_norm")
                                              for n in model.nodes):
            n = base.TOKENS * (spec.num_heads + spec.num_kv_heads) * spec.head_dim  # read by x^2 and x * rstd
            base.accumulate(acc, node.path, n)
    return base.family_counts(model, lambda n: llama4_node_backward(n, spec), acc)


__all__ = ["GPT_OSS_TYPES", "HUNYUAN_TYPES", "mimo_v2_flash_backward", "ernie4_5_moe_backward", "hunyuan_backward", "phimoe_backward", "LLAMA4_TYPES", "gpt_oss_backward", "l2_norm_backward", "llama4_backward", "llama4_node_backward"]
