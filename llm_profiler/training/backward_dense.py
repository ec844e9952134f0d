"""Backward counts for the dense layouts beyond the llama-style decoder: GPT-style learned position embeddings,
multi-op GELUs, parallel attention / MLP blocks, residual adds inside the blocks, fused qkv projections split
or indexed, cohere's LayerNorm written op by op, ministral3's query temperature.

``backward.backward_counts`` dispatches here for the model types in ``LAYOUTS``; the node rules of
``backward.node_backward`` are reused for every node kind they cover, and the ones below added. Derivatives as
autograd runs them (``tools/autograd/derivatives.yaml``, ``FunctionsManual.cpp`` and the CPU kernels), per
element of the activation's input (n elements):

- ``gelu_new`` (NewGELU: ``0.5 * x * (1 + tanh(c * (x + k * pow(x, 3))))``): (0.5 x) * u: two muls; tanh_backward
  (2 MULT, 1 ADD); the muls by c and by k: one each; pow(x, 3): ``g * 3 * x.pow(2)`` (3 MULT); 0.5 * x: one mul:
  MULT 10, ADD 1 per element; x is read three times (0.5 * x, x + ..., pow): 2 accumulation adds on the node
  that wrote it (the MLP's input linear);
- ``gelu_fast`` (FastGELU: ``0.5 * x * (1 + tanh(x * c * (1 + k * x * x)))``): (0.5 x) * u and (x c) * v and
  (k x) * x: two muls each; tanh_backward; x * c, k * x, 0.5 * x: one each: MULT 11, ADD 1; x read four times:
  3 adds on its writer;
- ``bloom_gelu`` (bloom's ``GeLUFunction``, a custom autograd function whose backward ``bloom_gelu_back``
  recomputes tanh(0.79788456 x (1 + 0.044715 x x)) and ``ff = 0.5 x ((1 - t t)(0.79788456 + 0.1070322243 x x))
  + 0.5 (1 + t)``, times g): MULT 12, ADD 5, EXP 1 (the tanh GELU's count); x gets one gradient;
- ``relu2`` (``square(relu(x))``): pow backward ``g * 2 * y.pow(1)`` (1 EXP, 2 MULT), threshold_backward (1 CMP);
- the learned position embedding added to the token embeddings (``:embed_add``): the add passes the gradient to
  both; where the position ids are one row shared by the batch (gpt2, gpt_neo, gpt_bigcode: ``(1, S)``), the
  position embeddings' gradient is summed over the batch, (B - 1) * S * h ADD (no op at B = 1); the position table then gets
  ``embedding_dense_backward`` of its S (or, opt, B * S) rows: one ADD per element; a sinusoidal table (xglm):
  no gradient;
- cohere's LayerNorm, op by op (``mean``, ``(x - mean).pow(2).mean()``, ``(x - mean) * rsqrt(var + eps)``,
  ``w * y``), r rows of n: w * y and d * rsqrt as RMSNorm's (4 rn MULT, n(r - 1) + r(n - 1) ADD), rsqrt
  (4 MULT per row), the variance's mean (rn DIV), pow(2) (rn EXP, 2 rn MULT), the two subtractions of the mean
  (each: -g, rn ADD, summed over n for the mean, r(n - 1) ADD), the mean's two gradients added (r ADD), the
  mean itself (rn DIV); x is read three times (two subtractions, the mean): 2 adds on its writer;
- ministral3's query temperature (q times a per-position scale that needs no gradient): one mul per q element;
- an attention scaling by division (falcon, gptj, codegen: ``scores / sqrt(d)``): one div per score;
- falcon's multi-query split (``fused_qkv[..., [-2], :]``, advanced indexing): ``index_put(accumulate=True)``
  into a zero tensor of the fused output, one ADD per key and value element, at the attention module's own
  site (no node of the forward graph does it: the forward's indexing is a copy); the new decoder architecture
  (falcon-40b / 180b) also broadcasts each KV group's key and value to its ``group`` heads (the gradient summed
  back, (group - 1) ADD per KV element, at the same site; no repeat_kv sum in scores / context), and rotates
  the broadcast keys (rope's fan-out over all H heads of k).

Gradient accumulation per layer (``accumulations``), charged to the node that wrote the tensor read r times
(r - 1 adds of its size):

- parallel blocks (``_parallel``: gptj, codegen, phi, cohere, cohere2, gpt_neox with use_parallel_residual,
  falcon with parallel_attn or the new decoder architecture, stablelm with use_parallel_residual): attention and MLP read the same layer input; it is read by each distinct
  pre-norm (nn.LayerNorm once, eager RMSNorm twice, cohere's op-by-op LayerNorm three times) and by the one
  residual add (x + attn + mlp); a shared pre-norm's output by every input linear of both blocks (falcon-40b:
  ln_attn for the attention, ln_mlp for the MLP; gpt_neox: input_layernorm and post_attention_layernorm);
- sequential blocks as ``backward.accumulations``: the stream read by the block's pre-norm and the residual
  add, the pre-norm's output by the block's input linears (the MLP's up / fc_in / dense_h_to_4h, not its
  down projection), the next stream written by the layer's ``:residual`` node or, for bloom and mpt, by the
  residual node inside each block; a post-norm (olmo2) reads the block's output (RMSNorm: one add);
- the embedding's stream: the token embedding, or what the base model writes after it (gpt2's ``:embed_add``,
  bloom's word_embeddings_layernorm, which reads the embedding once);
- q / k norms read their projection's output (olmo2, eager RMSNorm: one add of it; nn.LayerNorm, persimmon:
  none), hunyuan's read rope's output (its norms come after the rotation); rope's fan-out as in
  ``backward.accumulations``, with one more read of all of q and k where q and k are sliced into the rotary
  part and the rest first (phi, gptj, codegen, gpt_neox, persimmon, nemotron);
- a fused qkv cut by slicing or select (bloom, falcon, persimmon: three gradients into one view, 2 adds of
  its output); cut by split / chunk (gpt2, gpt_bigcode, mpt, codegen, gpt_neox: one autograd node that
  concatenates the gradients): none;
- a multi-op activation's input (gelu_new 3 reads, gelu_fast 4): on the linear that wrote it;
- FalconLinear's bias, a separate ``+ bias`` after the matmul: its gradient summed over the rows (n(T - 1) ADD).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import ops
from ..formula import B, Formula, S, fmin
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, CMP, DIV, EXP, MACS, MULT, PARAMS
from ..ops import Counts
from ..profile import ModelProfile
from .backward import (
    FUSED_QKV,
    LOSS,
    OUTPUT_PROJECTIONS,
    ROPE_SPLIT,
    TOKENS,
    BackwardUnsupportedError,
    accumulate,
    embedding_backward,
    loss_backward,
    matmul_backward,
    node_backward,
    norm_at,
    relu_backward,
    sigmoid_backward,
)

# model types whose backward this module counts (backward.backward_counts dispatches here)
LAYOUTS = frozenset({
    "gpt2", "gpt_neo", "gpt_bigcode", "opt", "xglm", "gpt_neox", "phi", "gptj", "codegen", "bloom", "mpt",
    "falcon", "RefinedWeb", "RefinedWebModel", "cohere", "cohere2", "ministral3", "ministral", "arcee", "persimmon",
    "nemotron", "olmo2", "hunyuan_v1_dense", "jais2",
    "stablelm",  # validated by backward.py's rules when sequential; its use_parallel_residual layout needs these
    "cohere2_moe",  # cohere2's parallel block with MoE layers (the MoE rules of backward.py, its router below)
})
# position ids one row (1, S) shared by the batch: the position embeddings' gradient summed over B
_SHARED_POSITIONS = frozenset({"gpt2", "gpt_neo", "gpt_bigcode"})
# fused qkv outputs cut with split / chunk (one autograd node: the gradients are concatenated, not added)
_QKV_SPLIT = frozenset({"gpt2", "gpt_bigcode", "mpt", "codegen", "gpt_neox"})
# q and k sliced into the rotary part and the rest before the rotation (one more read of all of q and k)
_ROPE_SLICED = ROPE_SPLIT | {"phi", "gptj", "codegen"}
_OP_BY_OP_LAYER_NORM = frozenset({"cohere", "cohere2", "cohere2_moe"})  # cohere2_moe: unless rms_norm_eps
# q / k norms applied to rope's output (the graph lists them beside their projections)
_QK_NORM_AFTER_ROPE = frozenset({"hunyuan_v1_dense"})
_FALCON = frozenset({"falcon", "RefinedWeb", "RefinedWebModel"})
# attention and MLP in parallel on the layer input; gpt_neox (use_parallel_residual) and falcon (parallel_attn /
# new_decoder_architecture) read it from their specs
_PARALLEL = frozenset({"gptj", "codegen", "phi", "cohere", "cohere2", "cohere2_moe"})
# the linears that read a block's internal tensor (its output projections), beyond backward's list
_OUTPUTS = OUTPUT_PROJECTIONS | {"dense_4h_to_h", "fc_out"}
# scores masked with torch.where(causal_mask, scores, min) (gpt_neo): where's backward selects the gradient
_SCORES_WHERE = frozenset({"gpt_neo"})


def new_gelu_backward(n: Formula) -> Counts:
    """NewGELU backward (module docstring): MULT 10, ADD 1 per element; 9 ops write n each."""
    return Counts({MULT: 10 * n, ADD: n, ACT: 9 * n})


def fast_gelu_backward(n: Formula) -> Counts:
    """FastGELU backward (module docstring): MULT 11, ADD 1 per element; 10 ops write n each."""
    return Counts({MULT: 11 * n, ADD: n, ACT: 10 * n})


def bloom_gelu_backward(n: Formula) -> Counts:
    """bloom_gelu_back: the tanh (4 MULT, 1 ADD, 1 EXP, 6 ops) and ff * g (8 MULT, 4 ADD, 12 ops)."""
    return Counts({MULT: 12 * n, ADD: 5 * n, EXP: n, ACT: 18 * n})


def relu2_backward(n: Formula) -> Counts:
    """square(relu(x)) backward: pow(y, 1) (EXP), * 2, * g (2 MULT), threshold_backward (CMP)."""
    return Counts({MULT: 2 * n, EXP: n, ACT: 3 * n}) + relu_backward(n)


_MULTI_OP = {"gelu_new": new_gelu_backward, "gelu_fast": fast_gelu_backward, "bloom_gelu": bloom_gelu_backward,
             "relu2": relu2_backward}
# reads of the activation's input by the activation's ops (accumulations on the linear that wrote it)
_ACTIVATION_READS = {"gelu_new": 3, "gelu_fast": 4}


def op_by_op_layer_norm_backward(rows: Formula, n: Formula) -> Counts:
    """cohere's LayerNorm written op by op, backwards (module docstring), r rows of n."""
    rn = rows * n
    return Counts({
        MULT: 6 * rn + 4 * rows,
        ADD: n * (rows - 1) + rows * (n - 1) + 2 * (rn + rows * (n - 1)) + rows,
        DIV: 2 * rn, EXP: rn,
        ACT: 4 * rn + n + 4 * rows + 3 * rn + 2 * (rn + rows) + rows + 2 * rn,
    })


def dense_node_backward(node: Node, model: ModelProfile) -> Counts:
    """One node's backward (accumulations excluded): this module's rules, else ``backward.node_backward``."""
    spec = model.spec
    c = node.counts
    if node.kind == NodeKind.ACTIVATION and spec.activation in _MULTI_OP:
        return _MULTI_OP[spec.activation](_elements(node))
    if node.part == "embed_add":
        if not _learned_positions(model):
            return Counts()
        if spec.model_type in _SHARED_POSITIONS:  # (1, S, h) broadcast over B: summed back over the batch
            # sum_to the (1, S, h) shape: no op at all when B = 1 (the shapes already agree)
            return Counts({ADD: (B - 1) * S * spec.hidden_size, ACT: fmin(B - 1, 1) * S * spec.hidden_size})
        return Counts()
    if node.kind == NodeKind.EMBEDDING and node.facts.weights and node is not _token_embedding(model):
        vocab, hidden = node.facts.weights[0].shape
        rows = S if spec.model_type in _SHARED_POSITIONS else TOKENS
        return embedding_backward(rows, hidden, vocab)
    if node.kind == NodeKind.EMBEDDING and not node.facts.weights:
        return Counts()  # a sinusoidal table: no gradient
    if node.kind == NodeKind.NORM and _op_by_op_norm(model):
        n = Formula.const(spec.hidden_size)
        return op_by_op_layer_norm_backward(Formula.of(c["sqrt"]), n)
    if node.part == "temperature":
        return ops.elementwise("mul", TOKENS * spec.num_heads * spec.head_dim)
    if node.kind == NodeKind.ATTN_SCORES:
        return scores_backward(node, model)
    if node.kind == NodeKind.ROUTER and getattr(spec, "sigmoid_router", False):
        return cohere2_moe_sigmoid_router_backward(node, model)
    if node.part == "shared_mix" and c.get(DIV):  # cohere2_moe's average: (routed + shared) / 2, g / 2 back
        return ops.elementwise("div", Formula.of(c[DIV]))
    group = spec.num_heads // spec.num_kv_heads if spec.num_kv_heads else 1
    if getattr(spec, "new_decoder_architecture", False):
        group = 1  # falcon's values arrive broadcast to every head (summed back at the split)
    moe = spec if hasattr(spec, "num_experts") else None  # cohere2_moe's router and experts
    return node_backward(node, spec.norm, spec.activation, group, moe)


def cohere2_moe_sigmoid_router_backward(node: Node, model: ModelProfile) -> Counts:
    """cohere2_moe's sigmoid router: top-k of the logits (a scatter back, no arithmetic), sigmoid_backward of
    the T*k chosen, and with norm_topk_prob the division by their sum as ``backward.router_backward``'s."""
    spec: Any = model.spec
    pairs = TOKENS * spec.experts_per_token
    out = matmul_backward(node) + sigmoid_backward(pairs)
    if spec.norm_topk_prob:
        out = out + Counts({DIV: 3 * pairs, MULT: pairs, ADD: 2 * pairs + TOKENS * (spec.experts_per_token - 1),
                            ACT: 6 * pairs + TOKENS})
    return Counts(out)


def _op_by_op_norm(model: ModelProfile) -> bool:
    """cohere's LayerNorm written op by op (cohere2_moe's norms are RMSNorms when rms_norm_eps is set)."""
    return model.spec.model_type in _OP_BY_OP_LAYER_NORM and model.spec.norm == "layernorm"


def scores_backward(node: Node, model: ModelProfile) -> Counts:
    """q @ k^T and what the layout does to the scores, backwards:

    - bloom's ``alibi.baddbmm(q, k^T, beta, alpha)``: the two bmm gradients, each times alpha (one mul per q
      and per k element); alibi needs no gradient (the matmul's recorded "bias" gets none);
    - a division by a constant (falcon, gptj, codegen): one div per score; a mul (the others): one mul;
    - xglm's ``torch.max(scores, min)``: maximum's backward, ``where(x == m, g / 2, g).masked_fill(x < m, 0)``:
      2 CMP, 1 DIV per score, four outputs written;
    - gpt_neo's ``torch.where(causal_mask, scores, min)``: where's backward writes the selected gradient;
    - the GQA sum of the keys' repeated heads, as ``backward.node_backward``."""
    spec, c = model.spec, node.counts
    if spec.model_type != "bloom":
        group = spec.num_heads // spec.num_kv_heads if spec.num_kv_heads else 1
        if getattr(spec, "new_decoder_architecture", False):
            group = 1  # falcon's keys arrive broadcast to every head (summed back at the split, not here)
        out = node_backward(node, spec.norm, spec.activation, group)
    else:
        out = Counts()
        for mm in node.facts.matmuls:
            out = out + ops.matmul(mm.m, mm.k, mm.n, batch=mm.batch) + ops.matmul(mm.k, mm.n, mm.m, batch=mm.batch)
            out = out + ops.elementwise("mul", mm.batch * (mm.m + mm.n) * mm.k)  # * alpha on grad q, grad k
    scores = Formula.of(c[MACS]) / spec.head_dim  # B*H*S*K
    if c.get(DIV):
        out = out + ops.elementwise("div", Formula.of(c[DIV]))  # scores / sqrt(d): one div back per score
    if c.get(CMP):  # xglm: torch.max(scores, finfo.min)
        out = out + Counts({CMP: 2 * scores, DIV: scores, ACT: 4 * scores})
    if spec.model_type in _SCORES_WHERE:
        out = out + Counts({ACT: scores})
    return Counts(out)


def _elements(node: Node) -> Formula:
    """The elements an elementwise chain reads (its input), from its facts."""
    if node.facts.fused_reads is None:
        raise BackwardUnsupportedError(f"node {node.path}: its input size is not among its facts")
    return node.facts.fused_reads


def _token_embedding(model: ModelProfile) -> Node:
    return next(n for n in model.nodes if n.kind == NodeKind.EMBEDDING)


def _learned_positions(model: ModelProfile) -> bool:
    return sum(1 for n in model.nodes if n.kind == NodeKind.EMBEDDING and n.facts.weights) > 1


def _norm_reads(model: ModelProfile) -> int:
    if _op_by_op_norm(model):
        return 3  # x - mean (twice) and the mean
    return 2 if model.spec.norm == "rmsnorm" else 1  # the eager RMSNorm reads x twice, nn.LayerNorm once


def accumulations(model: ModelProfile) -> dict[str, Counts]:
    """Gradient-accumulation adds per node (module docstring), charged to the node that wrote the tensor."""
    spec = model.spec
    stream = TOKENS * spec.hidden_size
    reads = _norm_reads(model)
    out: dict[str, Counts] = {}
    nodes = list(model.nodes)

    add = partial(accumulate, out)

    embed = _token_embedding(model)
    first_layer = next(i for i, m in enumerate(nodes) if m.layer is not None)
    head = [n for n in nodes[:first_layer] if n.kind in (NodeKind.ELEMENTWISE, NodeKind.NORM)]
    writer = head[-1].path if head else embed.path
    if head and head[-1].kind == NodeKind.NORM:  # bloom's word_embeddings_layernorm reads the embedding
        add(embed.path, (reads - 1) * stream)
    if spec.tie_word_embeddings:
        add(embed.path, Formula.const(spec.vocab_size * spec.hidden_size))
    for layer in sorted({n.layer for n in nodes if n.layer is not None}):
        in_layer = [n for n in nodes if n.layer == layer]
        residual = [i for i, n in enumerate(in_layer) if n.kind == NodeKind.RESIDUAL]
        blocks = [b for b in ("attn", "mlp") if any(n.block == b for n in in_layer)]
        if blocks != ["attn", "mlp"] or not residual:
            raise BackwardUnsupportedError(f"layer {layer}: no attention-then-MLP blocks ({spec.model_type!r})")
        members = {b: [i for i, n in enumerate(in_layer) if n.block == b] for b in blocks}
        readers = {b: sum(1 for n in in_layer if n.block == b  # a MoE's router and experts read it too
                          and n.kind in (NodeKind.LINEAR, NodeKind.ROUTER, NodeKind.EXPERTS)
                          and n.path.rsplit(".", 1)[-1] not in _OUTPUTS) for b in blocks}
        pre = {b: norm_at(in_layer, members[b][0] - 1) for b in blocks}
        if _parallel(model):
            # each block's pre-norm, or the attention's (shared); None: the block's linears read the stream
            norms: dict[str, str | None] = {}
            for b in blocks:
                shared = pre[b] or pre["attn"]
                norms[b] = shared.path if shared is not None else None
            before = norm_at(in_layer, members["attn"][0] - 2)
            if before is not None and pre["attn"] is not None and pre["mlp"] is None:
                norms = {"attn": before.path, "mlp": pre["attn"].path}  # falcon's ln_attn, ln_mlp, then attention
            distinct = {p for p in norms.values() if p is not None}
            direct = sum(readers[b] for b in blocks if norms[b] is None)
            add(writer, (reads * len(distinct) + direct + 1 - 1) * stream)  # + the residual add, - the first read
            for path in distinct:
                add(path, (sum(readers[b] for b in blocks if norms[b] == path) - 1) * stream)
            writer = in_layer[residual[0]].path
        else:
            for i, block in enumerate(blocks):
                norm = pre[block]
                if norm is not None:
                    add(writer, reads * stream)
                    add(norm.path, (readers[block] - 1) * stream)
                else:
                    add(writer, readers[block] * stream)
                post = norm_at(in_layer, members[block][-1] + 1)
                if post is not None:  # a post-norm reads the block's output (olmo2)
                    add(in_layer[members[block][-1]].path, (reads - 1) * _output(in_layer[members[block][-1]]))
                writer = in_layer[residual[min(i, len(residual) - 1)]].path
        rope = next((i for i, n in enumerate(in_layer) if n.kind == NodeKind.ROPE), None)
        for i, node in enumerate(in_layer):
            if node.kind == NodeKind.NORM and node.block == "attn" and node.facts.fused_reads is not None:
                # a q / k norm reads its projection's output, or rope's (hunyuan: the norm after rope)
                source = in_layer[rope] if rope is not None and spec.model_type in _QK_NORM_AFTER_ROPE \
                    else in_layer[i - 1]
                add(source.path, (reads - 1) * node.facts.fused_reads)
            if spec.model_type in _FALCON and node.kind == NodeKind.LINEAR and _separate_bias(node):
                mm = node.facts.matmuls[0]
                out[node.path] = out.get(node.path, Counts()) + ops.reduce_sum(mm.n, mm.m)  # FalconLinear's + bias
        for node in in_layer:
            name = node.path.rsplit(".", 1)[-1]
            if name in FUSED_QKV and spec.model_type not in _QKV_SPLIT:
                add(node.path, 2 * node.facts.matmuls[0].outputs)  # sliced into q, k, v: three gradients
            if node.kind == NodeKind.ACTIVATION and spec.activation in _ACTIVATION_READS:
                linear = in_layer[in_layer.index(node) - 1]
                add(linear.path, (_ACTIVATION_READS[spec.activation] - 1) * _elements(node))
    add(writer, (reads - 1) * stream)  # the last layer's output, read by the final norm
    if spec.model_type in _FALCON:
        out.update(_falcon_index_put(model))
    split = spec.model_type in _ROPE_SLICED
    for layer in sorted({n.layer for n in nodes if n.kind == NodeKind.ROPE and n.layer is not None}):
        in_layer = [n for n in nodes if n.layer == layer]
        rope = next(i for i, n in enumerate(in_layer) if n.kind == NodeKind.ROPE)
        by_name = {n.path.rsplit(".", 1)[-1]: n for n in in_layer[:rope]}  # the nodes before rope
        # falcon's new decoder architecture rotates the keys after broadcasting them to every head
        kv_heads = spec.num_heads if getattr(spec, "new_decoder_architecture", False) else spec.num_kv_heads
        for which, heads in (("q", spec.num_heads), ("k", kv_heads)):
            # stablelm's per-head q / k LayerNorms: torch.stack of the heads' outputs, charged (as a view) to the
            # computing node behind its first input, the first head's norm
            stacked = next((n for n in in_layer[:rope] if n.path.endswith(f".{which}_layernorm.norms.0")), None)
            qk = (stacked or by_name.get(f"{which}_norm") or by_name.get(f"{which}_layernorm")
                  or by_name.get(f"{which}_proj") or next((by_name[n] for n in FUSED_QKV if n in by_name), None))
            if qk is None:
                raise BackwardUnsupportedError(f"layer {layer}: no node writes {which} for rope")
            full = TOKENS * heads * spec.head_dim
            add(qk.path, 2 * TOKENS * heads * spec.rotary_dim + (full if split else 0))
    return out


def _parallel(model: ModelProfile) -> bool:
    """Attention and MLP read the same layer input and join one residual add (x + attn + mlp)."""
    spec = model.spec
    if spec.model_type in _FALCON:
        return bool(getattr(spec, "parallel_attn", True) or getattr(spec, "new_decoder_architecture", False))
    if spec.model_type in ("gpt_neox", "stablelm"):
        return bool(getattr(spec, "parallel_residual", spec.model_type == "gpt_neox"))
    return spec.model_type in _PARALLEL


def _separate_bias(node: Node) -> bool:
    """A linear whose bias is its own add after the matmul (FalconLinear): params = k*n + n, no fused bias."""
    mm = node.facts.matmuls[0]
    params = Formula.of(node.counts.get(PARAMS, 0))
    return not mm.bias and bool(params) and params == mm.k * mm.n + mm.n


def _output(node: Node) -> Formula:
    if node.facts.matmuls:
        return node.facts.matmuls[-1].outputs
    if node.facts.fused_writes is None:
        raise BackwardUnsupportedError(f"node {node.path}: its output size is not among its facts")
    return node.facts.fused_writes


def _falcon_index_put(model: ModelProfile) -> dict[str, Counts]:
    """falcon-7b's multi-query split (and falcon-40b's grouped one, module docstring): key and value taken from the fused output with ``[..., [-2], :]`` and
    ``[..., [-1], :]`` (advanced indexing); their gradients are scattered back with index_put(accumulate=True)
    into zeros of the fused output: T*D ADD each (one KV head), 2 * T * (H + 2) * D written, at the attention
    module's own site (the forward's indexing is a copy, no node)."""
    spec = model.spec
    if getattr(spec, "new_decoder_architecture", False):
        # key = qkv[:, :, :, [-2]] (kv groups x 1 head), broadcast_to the group's heads: the broadcast's
        # gradient summed over the group ((group - 1) ADD per KV element, T*kv*D written), then index_put
        group = spec.num_heads // spec.num_kv_heads
        kv = TOKENS * spec.num_kv_heads * spec.head_dim
        fused = TOKENS * (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        counts = Counts({ADD: 2 * kv * (group - 1) + 2 * kv, ACT: 2 * kv + 2 * fused})
        return {n.module: counts for n in model.nodes if n.kind == NodeKind.ATTN_SCORES}
    if spec.num_kv_heads != 1:
        return {}  # one select per q, k, v of a (H, 3, D) view: the fused output's accumulation only
    fused = TOKENS * (spec.num_heads + 2) * spec.head_dim
    kv = TOKENS * spec.head_dim
    return {n.module: Counts({ADD: 2 * kv, ACT: 2 * fused}) for n in model.nodes if n.kind == NodeKind.ATTN_SCORES}


def backward_counts(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (its own ops plus the accumulations charged to it), and ``loss``."""
    acc = accumulations(model)
    out = {node.path: Counts(dense_node_backward(node, model) + acc.get(node.path, Counts()))
           for node in model.nodes}
    for path, counts in acc.items():  # an accumulation at a site that is no node (falcon's index_put)
        out.setdefault(path, counts)
    out[LOSS] = loss_backward(model.spec.vocab_size)
    return out


__all__ = ["LAYOUTS", "accumulations", "backward_counts", "dense_node_backward", "new_gelu_backward",
           "fast_gelu_backward", "bloom_gelu_backward", "relu2_backward", "op_by_op_layer_norm_backward"]
