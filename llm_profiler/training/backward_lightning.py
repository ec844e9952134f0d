"""Backward counts of minimax (MiniMax-Text-01 / MiniMax-M1): lightning attention layers, softmax attention
layers, post-norm residuals, Mixtral's MoE on every layer.

The reference (transformers 5.23, modeling_minimax.py, eval mode with a ``MiniMaxCache``, no prefill: the block
form of ``MiniMaxLightningAttention.forward``; graph/lightning_attention.py has the forward) runs, per lightning
layer, T = B*S tokens, H heads of D (width w = H*D), blocks of C: N = ceil(S / C) blocks, F = N - 1 full ones
and a last of L = S - F*C tokens; per block i of c tokens and each of the B*H (batch, head) pairs, with the
decays buffers (no gradient) and state_0 a constant zero:

    intra = ((q_i @ k_i^T) * diagonal_decay) @ v_i;   inter = (q_i * query_decay) @ state_i;   out_i = inter + intra
    state_(i+1) = state_i * exp(-slope * c) + (k_i * key_decay)^T @ v_i

Backward, as autograd runs it (``tools/autograd/derivatives.yaml``; each bmm's gradients only for the operands
that need one):

- every block: q_i @ k_i^T, both gradients ((c x c) @ (c x D) and (D x c) @ (c x c)); * diagonal_decay, one
  mul (c*c); @ v_i, both ((c x D) @ (D x c), (c x c) @ (c x D)); the inter bmm's gradient of q_i * query_decay
  ((c x D) @ (D x D), also at block 0, where state_0 is a constant: its product is zero but computed), and
  * query_decay, one mul (c*D);
- state_i's gradient from the inter bmm ((D x c) @ (c x D)) for blocks 1 .. N - 1 only (state_0 needs none);
- the state update of blocks 0 .. N - 2 only (the last block's next state goes to the cache, not to the loss:
  autograd never runs it): (k_i * key_decay)^T @ v_i, both gradients ((D x D) @ (D x C), (C x D) @ (D x D)),
  * key_decay, one mul (C*D); state_i * block_decay, one mul (D*D), for i = 1 .. N - 2 (state_0 has no graph);
- the add inter + intra, the cat of the blocks, the transposes and reshapes: no arithmetic.

Gradient accumulation (charged to the node that wrote the tensor read r times, r - 1 adds of its size):

- on ``:lightning``: its output, read by ``norm`` twice (x.pow(2), x * rstd): T*w; state_i read by the inter
  bmm and the update, i = 1 .. N - 2: D*D per (batch, head) each;
- on ``act_fn`` (silu over qkv_proj's output; q, k, v are views of it): q_i read by q_i @ k_i^T and q_i *
  query_decay (every block: T*w in all), k_i and v_i read twice in blocks 0 .. N - 2 (F*B*H*C*D each); each of
  q, k and v is sliced into the N blocks, whose N full-size gradients (``slice_backward``) are summed by N - 1
  adds of B*H*S*D: 3*F*T*w.

The rest of the lightning block: ``norm`` (the eager RMSNorm over w), ``output_gate`` and ``out_proj`` linears,
``:output_gate`` sigmoid(g) * out (``sigmoid_backward`` and two muls), ``act_fn`` (``silu_backward``).

The decoder layer takes its residual *after* the norm, ``x = norm(x); x = x * alpha + block(x) * beta``, twice:

- ``:residual``, both combines: each of the four muls by a constant is one mul back (4*T*h MULT); the first
  combine's output is read by ``post_attention_layernorm`` twice, the second's (the layer's output) by the next
  ``input_layernorm`` (or the final norm) twice: 2*T*h ADD;
- a norm's output is read by the block's input linears and the residual's mul: ``input_layernorm`` by
  q, k, v and the residual (3*T*h ADD) or by qkv_proj, output_gate and the residual (2*T*h);
  ``post_attention_layernorm`` by the router, the experts and the residual (2*T*h);
- the embedding's output is read only by layer 0's ``input_layernorm`` (twice): T*h;
- softmax attention layers: ``training.backward``'s rules (rope over the whole head_dim, GQA sums; q_proj and
  k_proj read three times by rope: 2 adds of their output), the MoE's router and experts as Mixtral's.

Only the block form is counted (P = 0: a training step has no cache); after a prefill transformers runs the
token-by-token recurrent form, whose backward is not this one.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import ops
from ..formula import B, Formula, S, ceil_div, fmin
from ..graph.lightning_attention import LIGHTNING, OUTPUT_GATE, Lightning
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base

LIGHTNING_TYPES: frozenset[str] = frozenset({"minimax"})


def _mm(m: Any, k: Any, n: Any, batch: Any) -> Counts:
    """(m x k) @ (k x n), ``batch`` times (``ops.matmul`` takes m, n, k)."""
    return ops.matmul(m, n, k, batch=batch)


def _adds(n: Any) -> Counts:
    return Counts({ADD: n, ACT: n})


def _muls(n: Any) -> Counts:
    return Counts({MULT: n, ACT: n})


def _blocks(d: Lightning) -> tuple[Formula, Formula, Formula, Formula]:
    """F full blocks of C before the last, the last block's L tokens, m = 1 when there are two blocks or more,
    and the F - m blocks strictly between the first and the last."""
    full = ceil_div(S, d.block_size) - 1
    more = fmin(full, 1)
    return full, S - full * d.block_size, more, full - more


def lightning_backward(d: Lightning) -> Counts:
    """The block form backwards, with the accumulations of its state and its output (module docstring)."""
    C, D = d.block_size, d.head_dim
    bh = B * d.heads
    full, last, more, inner = _blocks(d)

    def block(c: Any, count: Any) -> Counts:
        n = count * bh
        out = _mm(c, c, D, n) + _mm(D, c, c, n) + _muls(n * c * c)  # q @ k^T; * diagonal_decay
        out = out + _mm(c, D, c, n) + _mm(c, c, D, n)  # @ v
        return out + _mm(c, D, D, n) + _muls(n * c * D)  # the inter bmm's grad of q * query_decay; * query_decay

    out = block(C, full) + block(last, 1)
    out = out + _mm(D, C, D, inner * bh) + _mm(D, last, D, more * bh)  # state_i's grad, blocks 1 .. N - 1
    out = out + _mm(D, D, C, full * bh) + _mm(C, D, D, full * bh) + _muls(full * bh * C * D)  # the updates
    out = out + _muls(inner * bh * D * D) + _adds(inner * bh * D * D)  # state_i * block_decay; state_i read twice
    return Counts(out + _adds(base.TOKENS * d.width))  # the output read twice by norm


def qkv_fan_out(d: Lightning) -> Counts:
    """Accumulations on ``act_fn``, which wrote q, k and v (module docstring)."""
    full, _, _, _ = _blocks(d)
    tw = base.TOKENS * d.width
    return _adds(tw + 2 * full * B * d.heads * d.block_size * d.head_dim + 3 * full * tw)


def output_gate_backward(n: Formula) -> Counts:
    """sigmoid(g) * out over n elements: the product's two muls, ``sigmoid_backward``."""
    return Counts(base.sigmoid_backward(n) + _muls(2 * n))


def minimax_accumulations(model: ModelProfile) -> dict[str, Counts]:
    """The post-norm layout's and the softmax layers' rope fan-out (module docstring)."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    t, h = base.TOKENS, spec.hidden_size
    out: dict[str, Counts] = {}

    add = partial(base.accumulate, out)

    embed = next(n for n in model.nodes if n.kind == NodeKind.EMBEDDING).path
    add(embed, t * h)  # read by layer 0's input_layernorm twice
    if spec.tie_word_embeddings:
        add(embed, spec.vocab_size * h)
    for layer in sorted({n.layer for n in model.nodes if n.layer is not None}):
        nodes = [n for n in model.nodes if n.layer == layer]
        by_name = {n.path.rsplit(".", 1)[-1]: n for n in nodes}
        for block, norm in (("attn", "input_layernorm"), ("mlp", "post_attention_layernorm")):
            readers = sum(1 for n in nodes if n.block == block and (
                n.kind in (NodeKind.ROUTER, NodeKind.EXPERTS)
                or (n.kind == NodeKind.LINEAR and n.path.rsplit(".", 1)[-1] not in base.OUTPUT_PROJECTIONS)))
            add(by_name[norm].path, readers * t * h)  # readers + the residual's mul: readers adds
        add(next(n.path for n in nodes if n.kind == NodeKind.RESIDUAL), 2 * t * h)
        if any(n.kind == NodeKind.ROPE for n in nodes):
            for which, heads in (("q_proj", spec.num_heads), ("k_proj", spec.num_kv_heads)):
                add(by_name[which].path, 2 * t * heads * spec.rotary_dim)  # x * cos, rotate_half's two halves
    return out


def minimax_node_backward(node: Node, spec: Any) -> Counts:
    c = node.counts
    d: Lightning = spec.lightning
    if node.kind == LIGHTNING:
        return lightning_backward(d)
    if node.part == OUTPUT_GATE:
        return output_gate_backward(base.TOKENS * d.width)
    if node.kind == NodeKind.RESIDUAL:  # residual * alpha + out * beta, twice: one mul back per mul
        return _muls(Formula.of(c[MULT]))
    out = base.node_backward(node, spec.norm, spec.activation, spec.num_heads // spec.num_kv_heads, spec)
    if node.kind == NodeKind.ACTIVATION and node.block == "attn":  # the lightning act_fn wrote q, k, v
        out = out + qkv_fan_out(d)
    return Counts(out)


def minimax_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (own ops plus accumulations), and ``loss``."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    acc = minimax_accumulations(model)
    return base.family_counts(model, lambda n: minimax_node_backward(n, spec), acc)


__all__ = ["LIGHTNING_TYPES", "lightning_backward", "minimax_accumulations", "minimax_backward",
           "minimax_node_backward", "output_gate_backward", "qkv_fan_out"]
