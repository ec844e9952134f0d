"""Backward counts of DeepSeek-V4 (deepseek_v4): hyper-connections, compressed attention (CSA / HCA with the
lightning indexer), sinks, the sqrtsoftplus (or sigmoid) routers with hash layers, and the clamped SwiGLU.

The transformers 5.23 eager code (modeling_deepseek_v4.py), as validation runs it (eval, use_cache=True, P = 0),
per layer, with t = B*S tokens, N = hc_mult streams of h, H heads of D (one shared key = value head), rotary
dims r, q_lora rank qr; a compressor of ratio m closes n = floor(S / m) windows per sequence (``graph.
compressed_attention.new_windows``); K keys = the window's keys + the compressed entries (the scores' matmul).
Backward as autograd runs it (``tools/autograd/derivatives.yaml``):

- mHC collapse (``attn_hc``, ``ffn_hc``; ``DeepseekV4HyperConnection``): the linear's two gradients; collapsed =
  (pre * streams).sum(streams): grad streams g * pre (t*N*h MULT), grad pre sum_h(g * streams) (t*N*h MULT,
  t*N*(h - 1) ADD); each of the 2*iters - 1 Sinkhorn divisions c / (c.sum(dim) + eps) (``DivBackward0``:
  grad c = g / b; grad b = -g * (c / b) / b: 3 DIV, 1 MULT, 1 neg per element of t*N^2, then summed over the
  broadcast dim, t*N*(N - 1) ADD; c read by the division and its sum: one accumulation add, t*N^2); softmax
  over N (``softmax_backward``); each affine w * scale + b: grad w one mul, grad scale a mul and a sum over
  all its elements, grad b a sum over the t tokens; post's * 2: one mul; sigmoid_backward on pre and post.
- the streams' input norm (``.input_norm``, weightless over N*h): ``backward_moe.l2_norm_backward``.
- ``:residual`` (per block) post * out + comb^T @ streams: the bmm's two gradients; grad post sum_h(g * out)
  (t*N*h MULT, t*N*(h - 1) ADD), grad out sum_N(g * post) (t*N*h MULT, t*h*(N - 1) ADD); the add: nothing.
- ``hc_head`` (``DeepseekV4HyperHead``): the collapse, sigmoid_backward, the affine (scale has one element).
- the base model's ``inputs_embeds.unsqueeze(2).expand(N).contiguous()``: ExpandBackward sums the N copies,
  t*h*(N - 1) ADD, on ``model:positions`` (the base model's own ops resolve to its only node).
- attention: the linears, the eager RMSNorms, ``q_b_norm`` (weightless over D: ``l2_norm_backward``); rope on
  q, the shared kv and the output (with -sin): ``training.backward``'s rotate_half rule (one mul back per table
  product, one neg per pair); scores: the bmm's gradients, the scaling (one mul per score), the shared key
  repeated to the H heads (repeat_kv's expand summed: (H - 1)*B*K*D ADD), the sinks as gpt_oss's (combined =
  cat(scores, sinks); combined - max: -g on every element and its sum over the K + 1 columns; combined read by
  the sub and by max: rows*(K + 1) ADD; the sink expand summed over t: H*(t - 1) ADD), all on ``:scores``
  (before the softmax); softmax over K + 1; context: the bmm's gradients and the values' repeat_kv sum.
- a compressor (``DeepseekV4HCACompressor`` / ``DeepseekV4CSACompressor``), on the B*n windows it closed
  (nothing when n = 0: its entries are zeros with no gradient, and its projections get none): gate +
  position_bias: the bias's gradient summed over B*n windows; softmax over the slots (m, or CSA's 2m) of
  B*n*d rows; kv * probs: two muls; the sum over the slots: an expand. CSA lays the windows' halves into new
  tensors (``new_kv[...] = chunk[...]``: copies); with n >= 2 the previous window's first half is read too,
  so chunk_gate and chunk_kv (its kv_proj's output) are each read by two slices: one add of B*n*m*2d each.
  Its kv_norm and rope on the B*n entries: the rules above. The lightning indexer: only indices leave it, no
  gradient (its nodes and projections: nothing).
- MoE: the router's linear; score_fn sqrt(softplus(x)): ``SqrtBackward0`` g / (2 * sqrt) (1 MULT, 1 DIV) and
  ``softplus_backward`` (``backward_ssm``), or sigmoid_backward; top-k (or hash routing ``tid2eid``): indices
  only; the gather scattered back (scatter_add, T*k ADD); the renormalisation and the routed scaling
  (``training.backward.router_backward``'s terms). Experts (batched_mm): ``experts_backward``, plus the clamps:
  gate.clamp(max) ``where(x <= max)`` (1 CMP), up.clamp(min, max) (2 CMP, a logical and: 1 CMP), each with a
  where: 4 CMP, 6 written per element of T*k*I; the shared MLP's clamps likewise on ``:gate_mul``.

Gradient accumulation (charged to the writer): each stream tensor (the embedding's expansion, each
``:residual`` half) is read by the next input norm twice, by the collapse and by the residual bmm: 3 adds of
t*N*h (the last layer's output by hc_head's norm and collapse only: 2); each collapse output by its RMSNorm
twice (t*h on attn_hc / ffn_hc / hc_head); input_layernorm's output by q_a_proj, kv_proj and, once a window
closed, the compressor's kv_proj and gate_proj; post_attention_layernorm's by the router, the experts and the
shared gate and up (3 adds); q_a_proj by q_a_norm twice (the indexer's q_b_proj reads q_a_norm's output but
sends nothing back); q_b_proj by q_b_norm twice; kv_proj by kv_norm twice; rope's input (q_b_norm's, kv_norm's,
a compressor kv_norm's and the attention output written by ``:context``) sliced into its pass-through and rotary
parts (one add of all of it) and the rotary part read by x * cos and rotate_half's two strided slices (two adds
of it); the keys (K = V, kv_norm's writer) read by both repeat_kvs: B*K*D; a compressor's pooled entries read by
its kv_norm twice.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import ops
from ..formula import B, Formula
from ..graph import compressed_attention as ca
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, CMP, DIV, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base
from .backward_moe import l2_norm_backward
from .backward_ssm import softplus_backward

DSV4_TYPES: frozenset[str] = frozenset({"deepseek_v4"})


def affine_backward(rows: Formula, width: Formula | int) -> Counts:
    """w * scale + b over rows x width, scale a scalar, b a width vector: grad w = g * scale (one mul), grad
    scale = sum(g * w) (one mul, a sum over every element), grad b = g summed over the rows."""
    n = rows * width
    return ops.elementwise("mul", n) + ops.elementwise("mul", n) + ops.reduce_sum(1, n) + ops.reduce_sum(width, rows)


def collapse_backward(t: Formula, streams: int, hidden: int) -> Counts:
    """(pre.unsqueeze(-1) * streams).sum(streams): grad streams g * pre, grad pre sum_h(g * streams)."""
    n = t * streams * hidden
    return ops.elementwise("mul", n) + ops.elementwise("mul", n) + ops.reduce_sum(t * streams, hidden)


def division_backward(n: Formula, rows: Formula, k: int) -> Counts:
    """a / b, b broadcast over k (``DivBackward0``): grad a = g / b; grad b = -g * (a / b) / b summed over the
    broadcast dim: 3 DIV, 1 MULT, 1 neg per element of n, rows*(k - 1) ADD (n = rows * k)."""
    return (ops.elementwise("div", 3 * n) + ops.elementwise("mul", n) + ops.elementwise("neg", n)
            + ops.reduce_sum(rows, k))


def hyper_connection_backward(node: Node, streams: int, hidden: int, iters: int) -> Counts:
    """``DeepseekV4HyperConnection`` own ops backwards (module docstring), plus the Sinkhorn input's second read."""
    t, N = base.TOKENS, streams
    sq = t * N * N
    sinkhorn = (division_backward(sq, t * N, N) + Counts({ADD: sq, ACT: sq})) * (2 * iters - 1)
    comb = base.softmax_backward(t * N, N) + affine_backward(t, N * N)
    post = ops.elementwise("mul", t * N) + base.sigmoid_backward(t * N) + affine_backward(t, N)
    pre = base.sigmoid_backward(t * N) + affine_backward(t, N)
    return Counts(base.matmul_backward(node) + collapse_backward(t, N, hidden) + sinkhorn + comb + post + pre)


def hyper_head_backward(node: Node, streams: int, hidden: int) -> Counts:
    """``DeepseekV4HyperHead``: the linear, * hc_scale + hc_base (scale one element), sigmoid, the collapse."""
    t = base.TOKENS
    return Counts(base.matmul_backward(node) + collapse_backward(t, streams, hidden)
                  + base.sigmoid_backward(t * streams) + affine_backward(t, streams))


def stream_update_backward(node: Node, streams: int, hidden: int) -> Counts:
    """``:residual``, post * out + comb^T @ streams per block: the bmm's gradients; post's and out's."""
    t, n = base.TOKENS, base.TOKENS * streams * hidden
    blocks = len(node.facts.matmuls)
    one = (ops.elementwise("mul", n) + ops.reduce_sum(t * streams, hidden)
           + ops.elementwise("mul", n) + ops.reduce_sum(t * hidden, streams))
    return Counts(base.matmul_backward(node) + one * blocks)


def scores_backward(node: Node, heads: int, head_dim: int) -> Counts:
    """q @ k^T (shared key repeated to H heads), * scaling, + mask, cat with the sinks, - row max."""
    mm = node.facts.matmuls[0]
    keys, rows = mm.n, mm.batch * mm.m  # K, B*H*S
    combined = rows * (keys + 1)
    out = base.matmul_backward(node) + ops.elementwise("mul", rows * keys)  # the bmm, the scaling
    out = out + ops.elementwise("neg", combined) + ops.reduce_sum(rows, keys + 1)  # - max: -g, summed
    out = out + Counts({ADD: combined, ACT: combined})  # combined read by the sub and by max
    out = out + ops.reduce_sum(heads, base.TOKENS)  # the sinks expanded over B and S
    kv = B * keys * head_dim
    return Counts(out + Counts({ADD: kv * (heads - 1), ACT: kv}))  # repeat_kv of the shared key


def context_backward(node: Node, heads: int, head_dim: int) -> Counts:
    """probs @ v: the bmm's gradients and the shared value's repeat_kv summed over the H heads."""
    kv = B * node.facts.matmuls[0].k * head_dim
    return Counts(base.matmul_backward(node) + Counts({ADD: kv * (heads - 1), ACT: kv}))


def _windows(spec: Any, node: Node) -> tuple[int, bool, Formula]:
    """The layer's compressor ratio m, whether it is CSA's (overlapping, 2m slots), and its new windows."""
    mixer = spec.layers[node.layer].mixer
    m = mixer.chunk
    return m, mixer.kind == "sparse_attention", ca.new_windows(m)


def pooling_backward(m: int, dim: int, overlap: bool, windows: Formula) -> Counts:
    """A compressor's own pooling on its B*n windows: the position_bias gradient (summed over the windows),
    softmax_backward over the slots, kv * probs (two muls); CSA's chunk_gate read by its two slices (n >= 2)."""
    width = 2 * dim if overlap else dim
    slots = 2 * m if overlap else m
    n = B * windows
    rows = n * dim
    out = (ops.reduce_sum(m * width, n) * ca.present(windows) + base.softmax_backward(rows, slots)
           + ops.elementwise("mul", 2 * rows * slots))
    if overlap:
        chunk = n * m * width * ca.present(windows - 1)  # zero below two windows
        out = out + Counts({ADD: chunk, ACT: chunk})
    return Counts(out)


def router_backward(node: Node, spec: Any) -> Counts:
    """logits = x @ W^T; weights = scores.gather(indices) (scatter_add back); / (sum + 1e-20); * scaling."""
    ffn = spec.layers[node.layer].ffn
    t, k, E = base.TOKENS, ffn.top_k, ffn.experts
    pairs = t * k
    normalize = Counts({DIV: 3 * pairs, MULT: pairs, ADD: 2 * pairs + t * (k - 1), ACT: 6 * pairs + t})
    return Counts(base.matmul_backward(node) + base.index_accumulate(pairs, t * E) + normalize
                  + ops.elementwise("mul", pairs))


def score_backward(node: Node, spec: Any) -> Counts:
    """score_fn: sqrt(softplus(x)) (SqrtBackward0 g / (2 * sqrt): 1 MULT, 1 DIV; softplus_backward) or sigmoid."""
    ffn = spec.layers[node.layer].ffn
    n = base.TOKENS * ffn.experts
    if spec.scoring == "sigmoid":
        return base.sigmoid_backward(n)
    return Counts(ops.elementwise("mul", n) + ops.elementwise("div", n) + softplus_backward(n))


def clamps_backward(n: Formula) -> Counts:
    """gate.clamp(max) and up.clamp(min, max) backwards: le / ge, a logical and, a where each: 4 CMP, 6 written."""
    return Counts({CMP: 4 * n, ACT: 6 * n})


def dsv4_node_backward(node: Node, spec: Any) -> Counts:
    t, N, h, H, D = base.TOKENS, spec.hc_mult, spec.hidden_size, spec.num_heads, spec.head_dim
    name = node.path.rsplit(".", 1)[-1]
    if ".indexer" in node.path or node.part == "entry_positions":
        return Counts()  # the lightning indexer: only indices leave it; positions and masks: no gradient
    if node.kind == NodeKind.POSITIONS:
        return Counts(ops.reduce_sum(t * h, N))  # the embeddings' expand to N streams, summed back
    if node.layer is not None and ".compressor" in node.path:
        m, overlap, windows = _windows(spec, node)
        if node.kind == NodeKind.LINEAR:
            return Counts(base.matmul_backward(node) * ca.present(windows))  # no gradient before a window
        if node.kind == NodeKind.ELEMENTWISE:
            return pooling_backward(m, D, overlap, windows)
        if node.kind == NodeKind.NORM:  # over the B*n entries; its weight's sum over them (none when n = 0)
            return Counts(base.node_backward(node) * ca.present(windows))
    if node.kind == NodeKind.ELEMENTWISE and name in ("attn_hc", "ffn_hc"):
        return hyper_connection_backward(node, N, h, spec.hc_sinkhorn_iters)
    if node.kind == NodeKind.ELEMENTWISE and name == "hc_head":
        return hyper_head_backward(node, N, h)
    if node.kind == NodeKind.NORM and name in ("input_norm", "q_b_norm"):
        rows, width = (t, N * h) if name == "input_norm" else (t * H, D)
        return l2_norm_backward(rows, width)
    if node.kind == NodeKind.RESIDUAL:
        return stream_update_backward(node, N, h)
    if node.kind == NodeKind.ATTN_SCORES:
        return scores_backward(node, H, D)
    if node.kind == NodeKind.ATTN_CONTEXT:
        return context_backward(node, H, D)
    if node.kind == NodeKind.ROUTER:
        return router_backward(node, spec)
    if node.kind == NodeKind.ACTIVATION and name == "score_fn":
        return score_backward(node, spec)
    if node.kind == NodeKind.EXPERTS:
        ffn = spec.layers[node.layer].ffn
        view = base.ExpertShape(ffn.experts, ffn.top_k, h, ffn.intermediate)
        return Counts(base.experts_backward(node, view) + clamps_backward(t * ffn.top_k * ffn.intermediate))
    if node.part == "gate_mul":
        return Counts(base.node_backward(node) + clamps_backward(Formula.of(node.counts[MULT])))
    if node.part == "shared_mix":
        return Counts()  # routed + shared: the add passes the gradient to both
    return base.node_backward(node, spec.norm, spec.activation)


def dsv4_accumulations(model: ModelProfile) -> dict[str, Counts]:
    """The accumulation adds (module docstring), each on the node that wrote the tensor read r times."""
    spec: Any = model.spec  # DeepseekV4Spec (its extra fields)
    t, N, h, H, D, r = (base.TOKENS, spec.hc_mult, spec.hidden_size, spec.num_heads, spec.head_dim,
                        spec.rotary_dim)
    stream = t * N * h
    out: dict[str, Counts] = {}
    nodes = {n.path: n for n in model.nodes}

    add = partial(base.accumulate, out)

    embed = next(n for n in model.nodes if n.kind == NodeKind.EMBEDDING)
    if spec.tie_word_embeddings:
        add(embed.path, Formula.const(spec.vocab_size * h))
    writer = embed.path  # the first stream: the embeddings expanded (a copy) to N streams
    base_path = embed.path.rsplit(".", 1)[0]
    for layer in range(spec.num_layers):
        p = f"{base_path}.layers.{layer}"
        a = f"{p}.self_attn"
        add(writer, 3 * stream)  # read by attn_hc's input norm twice, its collapse and the residual bmm
        add(f"{p}.attn_hc", t * h)
        add(f"{p}.ffn_hc", t * h)
        add(f"{p}:residual", 3 * stream)  # the mid-layer streams, read as the layer's input is
        readers: Formula = Formula.const(2)  # q_a_proj, kv_proj
        if f"{a}.compressor" in nodes:
            m, overlap, windows = _windows(spec, nodes[f"{a}.compressor"])
            readers = readers + 2 * ca.present(windows)  # the compressor's kv_proj and gate_proj, once one closed
            n = B * windows
            add(f"{a}.compressor", n * D)  # the pooled entries, read by kv_norm twice
            add(f"{a}.compressor.kv_norm", n * D + 2 * n * r)  # rope's slices
            if overlap:
                both = n * m * 2 * D * ca.present(windows - 1)  # chunk_kv read by two slices
                add(f"{a}.compressor.kv_proj", both)
        add(f"{p}.input_layernorm", (readers - 1) * t * h)
        add(f"{p}.post_attention_layernorm", 3 * t * h)  # router, experts, shared gate and up
        add(f"{a}.q_a_proj", t * spec.q_lora_rank)
        add(f"{a}.q_b_proj", t * H * D)
        add(f"{a}.q_b_norm", t * H * D + 2 * t * H * r)
        keys = nodes[f"{a}:scores"].facts.matmuls[0].n
        add(f"{a}.kv_proj", t * D)
        add(f"{a}.kv_norm", t * D + 2 * t * r + B * keys * D)  # rope's slices; K = V read by both repeat_kvs
        add(f"{a}:context", t * H * D + 2 * t * H * r)  # the output's rope (with -sin)
        writer = f"{p}:residual"
    add(writer, 2 * stream)  # the last layer's output: read by hc_head's norm twice and its collapse
    add(f"{base_path}.hc_head", t * h)
    return out


def dsv4_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (own ops plus accumulations), and ``loss``."""
    spec: Any = model.spec
    acc = dsv4_accumulations(model)
    return base.family_counts(model, lambda n: dsv4_node_backward(n, spec), acc)


__all__ = ["DSV4_TYPES", "dsv4_accumulations", "dsv4_backward", "dsv4_node_backward", "hyper_connection_backward"]
