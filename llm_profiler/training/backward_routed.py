"""Backward counts of flex_olmo, apertus, dbrx and jetmoe (transformers 5.23, eval mode, use_cache=True).

flex_olmo (modeling_flex_olmo.py): olmoe's attention (q/k norms over all heads, before rope) and batched_mm
experts, in olmo2's post-norm layout: ``x + post_attention_layernorm(attn(x))``, ``x + post_feedforward_
layernorm(moe(x))``. The node rules are olmoe's (``training.backward.node_backward``), the accumulations
those of ``training.backward.accumulations`` with the MoE's post-norm reading the experts' output (the top-k
sum, T*h): the eager RMSNorm reads it twice, T*h ADD on the experts node.

apertus (modeling_apertus.py): llama's layout with qwen3's per-head q/k norms before rope and an MLP without a
gate, ``down(xielu(up(x)))``. xIELU (``graph/xielu.py``), transformers' Python version, over n = T*I elements:

    alpha_p = softplus(ap); alpha_n = beta + softplus(an)
    where(x > 0, alpha_p * x * x + beta * x, (expm1(min(x, eps)) - x) * alpha_n + beta * x)

backwards (``tools/autograd/derivatives.yaml``), per element unless said: where: ``where(c, g, 0)`` and
``where(c, 0, g)`` (2 selects written); beta * x, twice (beta a buffer): one mul each; (expm1(m) - x) * alpha_n:
g * alpha_n, and alpha_n's gradient sum(g * left) (2 MULT, n - 1 ADD in all); the sub: -g (a neg, 1 ADD);
expm1: ``g * (result + 1)`` (1 ADD, 1 MULT); minimum(x, eps) (eps a buffer): ``where(x == eps, g / 2, g)
.masked_fill_(x > eps, 0)`` (2 CMP, 1 DIV, eq / div / where / gt written); (alpha_p * x) * x: two muls;
alpha_p * x: g * alpha_p, and alpha_p's gradient sum(g * x) (2 MULT, n - 1 ADD). In all MULT 9n, ADD 4n - 2,
DIV n, CMP 2n, 17n + 2 written; once per call the two softplus_backward on the one-element parameters (MULT 2,
EXP, ADD, DIV, CMP 1 each) and beta + softplus (nothing). x gets six gradients (alpha_p * x, (.) * x, beta * x
twice, minimum, the sub; x > 0 none): 5n ADD on the linear that wrote it (up_proj).

dbrx (modeling_dbrx.py), T = B*S tokens, h hidden, H heads and KV heads of D, E experts of I, top-k, and
``hits`` = min(T*k, E) experts that receive a token (the experts loop over the ones hit: every expert when the
T*k pairs spread over all of them, the forward's ``Weight.pairs`` convention; ``dbrx_backward(model, hits)``
counts any other number; the meta device's fixed routing hits min(T*k, E) too):

- attention: nn.LayerNorms without bias (``native_layer_norm_backward``); the fused Wqkv clamped to
  +-clip_qkv: clamp_backward ``where((x >= min) & (x <= max), g, 0)``: 3 CMP, 4 written per element; the
  split into q, k, v (one autograd node, the gradients concatenated: no add); rope, scores, softmax,
  context as ``training.backward``;
- the router ``ffn``, on the logits of ``ffn.router.layer``: softmax over E (``softmax_backward``); topk
  (a scatter back, a move); top / norm(top, p=1) (keepdim): the division's two gradients, g / norm (T*k DIV)
  and -sum_k(g * (top / norm) / norm) (neg, 2 DIV, 1 MULT per pair, T*(k - 1) ADD); the 1-norm's
  ``sgn(top) * g`` (sgn: 2 CMP, 1 ADD, as the CPU kernel's ``(0 < a) - (a < 0)``; 1 MULT);
- ``ffn.experts``, per expert hit: x = hidden[token_idx] and w = top_k_weights[token_idx, pos] gathered
  (their gradients scattered back by index_put(accumulate=True) into zeros of T*h and T*k: one ADD per
  gathered element, T*h + T*k written per expert hit); states * w: g * w and sum_h(g * states) (2 T*k*h MULT,
  T*k*(h - 1) ADD); index_add_ into the zeros: the source's gradient g.index_select(token_idx) (T*k*h
  written, no arithmetic);
- ``ffn.experts.mlp``, per expert, x @ w1^T, x @ v1^T (n_e x h by h x I), silu(gate) * up, inter @ w2
  (n_e x I by I x h), each matmul's two gradients: over the experts the input gradients multiply T*k rows,
  and the weight gradients sum over each expert's n_e rows, (n_e - 1) adds per weight element: h*I*(T*k -
  hits) ADD per matrix, hits*h*I written; the gate product's two muls (2 T*k*I MULT); w1, v1 and w2 are
  ``param.view(E, I, h)[e]`` per expert hit: their gradients (select_backward, a move, into zeros of E*I*h)
  summed, (hits - 1)*E*I*h ADD per matrix, on the module owning the parameters.

Accumulations: the stream read by norm_1 and the residual add (T*h on its writer: the embedding, then
``:residual``); the attention's residual output read by norm_2 and the block's residual add (T*h on
``norm_attn_norm:residual``); norm_2's output read by the router's view and the experts' reshape (T*h), the
reshape by every expert's gather ((hits - 1)*T*h) and each gathered x by the w1 and v1 matmuls (T*k*h);
q and k read by rope three times (2 T*(H + KV)*D on ``clip_qkv``, which wrote the clamped qkv the split
views); the top-k weights read by the norm and the division (T*k) and their division by every expert's
gather ((hits - 1)*T*k), on the router ``ffn``.

jetmoe (modeling_jetmoe.py), T tokens, h hidden, E experts, top-k, KV heads of D (H = KV*k query heads),
I intermediate, the pairs sorted by expert; ``hits`` = min(T*k, E) as for dbrx:

- routers (``experts.router`` for the MoA, ``mlp.router``): topk of the logits (a scatter back), softmax over
  the k kept (``softmax_backward``, T rows of k), the gates gathered in expert order (index_put into zeros of
  T*k: T*k ADD);
- ``JetMoeParallelExperts`` (``input_linear``, ``output_linear``): ``F.linear(rows_e, weight[e])`` for every
  one of the E experts, empty or not (``looped_matmul_backward`` with ``runs`` = E: the weight gradients of
  all E experts written and summed, (E - 1)*E*in*out ADD, and (n_e - 1) adds per weight element of each
  expert with rows); the split of the sorted rows and the cat of the outputs: moves;
- ``:moa_map``: the tokens gathered in pair order (``layer_input[batch_index]``: index_put, T*k*h ADD into
  zeros of T*h) and the queries index_add'ed into token order (the source's gradient ``index_select``,
  T*k*KV*D written);
- ``:moa_reduce`` and the ``mlp`` node: the outputs gathered per pair (MoA: ``layer_input[index_sorted]``,
  index_put T*k*KV*D ADD into zeros of the same size), times the gate (2 T*k*h MULT, sum_h: T*k*(h - 1) ADD),
  index_add back (index_select, T*k*h written), + the block's bias (its gradient g summed over the T rows:
  h*(T - 1) ADD); the MLP's node also holds silu(gate) * up (2 T*k*I MULT) and its tokens' gather (T*k*h ADD
  into zeros of T*h);
- attention: the keys and values ``repeat``ed k times (``num_key_value_groups`` = 1, no repeat_kv): the k
  copies summed back, (k - 1)*T*KV*D ADD each, at the attention module itself (its site is no node: the
  measured (module, None) resolves to the module's path); scores and context without a GQA sum.

Accumulations, per layer: the stream read by input_layernorm twice and the residual add (2 T*h on its
writer: the embedding, then ``:residual``); input_layernorm's output read by kv_proj and the MoA's reshape,
the reshape by the router and the gather (2 T*h on the norm); the queries (``:moa_map`` wrote them) and the
keys (``kv_proj``) read by rope three times (2 T*H*D, 2 T*KV*D); the attention's residual output read by
post_attention_layernorm twice and the residual add (2 T*h on ``:residual``); post_attention_layernorm's
output reshaped and read by the router and the gather (T*h on the norm); the layer's output read by the next
input_layernorm twice and the residual add (2 T*h), or the final norm (T*h); a tied lm_head: V*h on the
embedding.
"""

from __future__ import annotations

from typing import Any

from ..formula import Formula, fmin
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, CMP, DIV, MACS, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base
from .backward_ssm import softplus_backward  # the one definition of the aten op's counts

FLEX_OLMO_TYPES: frozenset[str] = frozenset({"flex_olmo"})
APERTUS_TYPES: frozenset[str] = frozenset({"apertus"})
DBRX_TYPES: frozenset[str] = frozenset({"dbrx"})
JETMOE_TYPES: frozenset[str] = frozenset({"jetmoe"})
# exact per node against autograd (tests/test_training_backward_routed.py)
ROUTED_TYPES: frozenset[str] = FLEX_OLMO_TYPES | APERTUS_TYPES | DBRX_TYPES | JETMOE_TYPES
XIELU_READS = 6  # the gradients xIELU sends its input (module docstring)
Number = Any


def _post_moe_norms(model: ModelProfile) -> dict[int, Node]:
    """layer -> the norm right after its MoE block (its post-norm), read by position."""
    out: dict[int, Node] = {}
    nodes = list(model.nodes)
    for i, node in enumerate(nodes[:-1]):
        after = nodes[i + 1]
        if node.block == "mlp" and node.layer is not None and after.kind == NodeKind.NORM and after.block is None \
                and after.layer == node.layer:
            out[node.layer] = after
    return out


def flex_olmo_backward(model: ModelProfile) -> dict[str, Counts]:
    """olmoe's node rules; the accumulations with the MoE post-norm reading the experts' top-k sum."""
    spec: Any = model.spec
    post = _post_moe_norms(model)
    kept = tuple(n for n in model.nodes if n not in post.values())  # the generic count reads no MoE post-norm
    acc = base.accumulations_over(model, kept)
    reads = 2 if spec.norm == "rmsnorm" else 1
    for node in model.nodes:
        if node.kind == NodeKind.EXPERTS and node.layer in post:
            base.accumulate(acc, node.path, (reads - 1) * base.TOKENS * spec.hidden_size)
    return base.family_counts(model, lambda node: base.default_node_backward(node, spec), acc)


def xielu_backward(n: Formula | int) -> Counts:
    """xIELU over n elements, backwards (module docstring), with its two parameters' softplus_backward."""
    return Counts({MULT: 9 * n, ADD: 4 * n - 2, DIV: n, CMP: 2 * n, ACT: 17 * n + 2}) + softplus_backward(2)


def apertus_backward(model: ModelProfile) -> dict[str, Counts]:
    """llama / qwen3's rules (``training.backward``), xIELU's backward, its input's six gradients summed."""
    spec: Any = model.spec
    acc = dict(base.accumulations(model))
    nodes = list(model.nodes)

    def rule(node: Node) -> Counts:
        if node.kind == NodeKind.ACTIVATION and spec.activation == "xielu":
            return xielu_backward(_elements(node))
        return base.default_node_backward(node, spec)

    for i, node in enumerate(nodes):
        if node.kind == NodeKind.ACTIVATION and spec.activation == "xielu":
            base.accumulate(acc, nodes[i - 1].path, (XIELU_READS - 1) * _elements(node))  # the linear before it wrote x
    return base.family_counts(model, rule, acc)


def _elements(node: Node) -> Formula:
    if node.facts.fused_reads is None:
        raise base.BackwardUnsupportedError(f"node {node.path}: its input size is not among its facts")
    return node.facts.fused_reads


def sign_backward_op(n: Number) -> Counts:
    """aten sgn on reals (the CPU sign kernel, ``(0 < a) - (a < 0)``): 2 CMP, 1 ADD per element; the 1-norm's
    backward runs it (``sgn(x) * g``)."""
    return Counts({CMP: 2 * n, ADD: n, ACT: n})


def looped_matmul_backward(pairs: Formula, n_in: int, n_out: int, experts: int, hits: Formula | int,
                           runs: Formula | int) -> Counts:
    """One expert matrix (n_out x n_in, taken as ``weight.view(E, ...)[e]`` or ``weight[e]``) applied by ``runs``
    experts in a loop to the rows routed to each (``pairs`` rows in all, ``hits`` experts with at least one),
    backwards: grad x over all pairs (pairs*n_in outputs of n_out terms); grad W per expert that runs
    (n_in*n_out outputs of n_e terms: n_e - 1 adds each when n_e > 0, none for an empty expert), so
    n_in*n_out*(pairs - hits) ADD; each run's weight gradient scattered into zeros of the whole parameter
    (select_backward, a move) and the ``runs`` of them summed: (runs - 1)*E*n_in*n_out ADD."""
    one = n_in * n_out
    return Counts({MACS: 2 * pairs * one, MULT: 2 * pairs * one,
                   ADD: pairs * n_in * (n_out - 1) + one * (pairs - hits) + (runs - 1) * experts * one,
                   ACT: pairs * n_in + runs * one + (runs - 1) * experts * one})


def aten_sgn(args: tuple, kwargs: dict, out: Any) -> Counts:
    """``ATEN_BACKWARD["sgn"]``: sign_backward_op over the output's elements."""
    return sign_backward_op(out.numel())


def dbrx_backward(model: ModelProfile, hits: Formula | int | None = None) -> dict[str, Counts]:
    """DBRX's rules and accumulations (module docstring); ``hits``: the experts hit per layer, min(T*k, E)
    unless given (the one count that depends on the routing's values)."""
    spec: Any = model.spec
    t, h, E, k = base.TOKENS, spec.hidden_size, spec.num_experts, spec.experts_per_token
    inter = spec.moe_intermediate_size
    pairs = t * k
    hits = fmin(pairs, E) if hits is None else hits
    if spec.norm_p not in (None, 1.0):
        raise base.BackwardUnsupportedError(f"dbrx: no backward rule for moe_normalize_expert_weights={spec.norm_p}")

    def rule(node: Node) -> Counts:
        name = node.path.rsplit(".", 1)[-1]
        if node.part == "clip_qkv":
            n = Formula.of(node.counts[ACT])
            return Counts({CMP: 3 * n, ACT: 4 * n})  # ge, le, logical_and, where
        if node.kind == NodeKind.ROUTER:
            out = base.softmax_backward(t, E)
            if spec.norm_p is not None:
                out = out + Counts({DIV: 3 * pairs, MULT: pairs, ADD: pairs + t * (k - 1), ACT: 5 * pairs + t})
                out = out + sign_backward_op(pairs) + Counts({MULT: pairs, ACT: pairs})
            return Counts(out)
        if node.kind == NodeKind.EXPERTS:  # x @ w1^T, x @ v1^T, inter @ w2, run by the experts hit
            mm = (2 * looped_matmul_backward(pairs, h, inter, E, hits, hits)
                  + looped_matmul_backward(pairs, inter, h, E, hits, hits))
            return Counts(mm + Counts({MULT: 2 * pairs * inter, ACT: 2 * pairs * inter}))  # silu(gate) * up
        if node.kind == NodeKind.ELEMENTWISE and name == "experts":
            scatter = base.index_accumulate(pairs * h + pairs, hits * (t * h + t * k))
            weighted = Counts({MULT: 2 * pairs * h, ADD: pairs * (h - 1), ACT: 2 * pairs * h + pairs})
            return Counts(scatter + weighted + Counts({ACT: pairs * h}))  # + index_add's index_select
        return base.default_node_backward(node, spec)

    acc: dict[str, Counts] = {}
    stream = t * h
    writer = next(n for n in model.nodes if n.kind == NodeKind.EMBEDDING).path
    for node in model.nodes:
        name = node.path.rsplit(".", 1)[-1]
        if name == "norm_1":
            base.accumulate(acc, writer, stream)  # norm_1 and the residual add
        elif node.part == "clip_qkv" or (name == "Wqkv" and spec.clip_qkv is None):  # what the split views
            base.accumulate(acc, node.path, 2 * t * (spec.num_heads + spec.num_kv_heads) * spec.rotary_dim)
        elif node.kind == NodeKind.RESIDUAL:
            writer = node.path
            if node.path.endswith("norm_attn_norm:residual"):
                base.accumulate(acc, node.path, stream)  # norm_2 and the block's residual add
        elif name == "norm_2":
            base.accumulate(acc, node.path, hits * stream + pairs * h)
        elif node.kind == NodeKind.ROUTER:
            base.accumulate(acc, node.path, (hits - 1) * pairs + (pairs if spec.norm_p is not None else 0))
    return base.family_counts(model, rule, acc)


def jetmoe_backward(model: ModelProfile, hits: Formula | int | None = None) -> dict[str, Counts]:
    """JetMoE's rules and accumulations (module docstring); ``hits`` as ``dbrx_backward``'s."""
    spec: Any = model.spec
    t, h, E, k = base.TOKENS, spec.hidden_size, spec.num_experts, spec.experts_per_token
    kv, D, inter = spec.num_kv_heads, spec.head_dim, spec.moe_intermediate_size
    pairs, width = t * k, spec.num_kv_heads * spec.head_dim
    hits = fmin(pairs, E) if hits is None else hits
    reads = 2 if spec.norm == "rmsnorm" else 1  # the eager RMSNorm reads its input twice

    def rule(node: Node) -> Counts:
        if node.kind == NodeKind.ROUTER:
            return Counts(base.softmax_backward(t, k) + base.index_accumulate(pairs, pairs))
        if node.kind == NodeKind.EXPERTS:
            mm = node.facts.matmuls[0]
            return looped_matmul_backward(pairs, int(mm.k), int(mm.n), E, hits, E)
        weighted = Counts({MULT: 2 * pairs * h, ADD: pairs * (h - 1) + h * (t - 1), ACT: 2 * pairs * h + pairs + h})
        if node.part == "moa_map":  # the queries' index_add back (index_select), the tokens' gather
            return Counts(base.index_accumulate(pairs * h, t * h) + Counts({ACT: pairs * width}))
        if node.part == "moa_reduce":  # the gather per pair, * gate, index_add back, + bias
            return Counts(base.index_accumulate(pairs * width, pairs * width) + weighted + Counts({ACT: pairs * h}))
        if node.kind == NodeKind.ELEMENTWISE and node.path.endswith(".mlp"):  # the MoE's own ops, and act * up
            gate = Counts({MULT: 2 * pairs * inter, ACT: 2 * pairs * inter})
            return Counts(base.index_accumulate(pairs * h, t * h) + weighted + gate + Counts({ACT: pairs * h}))
        if node.kind == NodeKind.ELEMENTWISE and not node.facts.matmuls and set(node.counts) <= {"params"}:
            return Counts()  # the MoA bias's holder (its gradient is moa_reduce's sum)
        if node.kind in (NodeKind.ATTN_SCORES, NodeKind.ATTN_CONTEXT):
            return base.node_backward(node, spec.norm, spec.activation, 1)  # k and v repeated before: no GQA sum
        return base.default_node_backward(node, spec)

    acc: dict[str, Counts] = {}
    stream = t * h
    embed = next(n for n in model.nodes if n.kind == NodeKind.EMBEDDING)
    writer = embed.path
    if spec.tie_word_embeddings:
        base.accumulate(acc, embed.path, spec.vocab_size * h)
    for node in model.nodes:
        name = node.path.rsplit(".", 1)[-1]
        if name in ("input_layernorm", "post_attention_layernorm"):
            base.accumulate(acc, writer, reads * stream)  # the norm (x^2, x * rstd) and the residual add
            base.accumulate(acc, node.path, (2 if name == "input_layernorm" else 1) * stream)
        elif node.part == "moa_map":
            base.accumulate(acc, node.path, 2 * t * spec.num_heads * spec.rotary_dim)
        elif name == "kv_proj":
            base.accumulate(acc, node.path, 2 * t * kv * spec.rotary_dim)
        elif node.kind == NodeKind.RESIDUAL:
            writer = node.path
        elif node.kind == NodeKind.ATTN_SCORES:  # key and value repeat()ed k times, summed back
            base.accumulate(acc, node.module, 2 * (k - 1) * t * kv * D)
    base.accumulate(acc, writer, (reads - 1) * stream)  # the last layer's output, read by the final norm
    out = base.family_counts(model, rule, acc)
    for path, counts in acc.items():  # the repeat's sum at the attention module (a site that is no node)
        out.setdefault(path, counts)
    return out


__all__ = ["APERTUS_TYPES", "DBRX_TYPES", "FLEX_OLMO_TYPES", "JETMOE_TYPES", "ROUTED_TYPES", "apertus_backward",
           "aten_sgn", "dbrx_backward", "flex_olmo_backward", "jetmoe_backward", "looped_matmul_backward",
           "sign_backward_op", "xielu_backward"]
