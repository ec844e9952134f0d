"""Execution profiles: how an engine runs the same model, as rules applied to the graph's nodes.

The graph counts the eager transformers forward (the validated reference). A serving engine computes some
nodes differently; each profile names its rules, and each rule rewrites the nodes it concerns from their
facts (matmul shapes, cache-state reads, the layer's mixer), never by re-deriving shapes from the spec:

``hf-eager``
    transformers with ``attn_implementation="eager"``: the reference, unchanged.
``hf-sdpa``
    transformers with ``attn_implementation="sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``
    by PyTorch's documented definition (q @ k^T * scale, the mask a boolean select, softmax, @ v), a fused
    kernel that never writes the scores or the probabilities to memory (activation traffic: q, K, V in and
    the output out); the causal mask is built only for a chunk after a cache (``sdpa_mask_built``).
    Validated per node against transformers' SDPA forward (docs/engines.md).
``vllm``
    a vLLM / SGLang-like engine:

    - attention by a FlashAttention-2 kernel (Dao, 2023, "FlashAttention-2", Algorithm 1): only the
      (query, key) pairs the causal (and sliding-window) mask keeps are computed; scores and
      probabilities stay on chip; the online softmax rescales its running max, sum and output once per
      query row and key block of ``FLASH_BLOCK`` keys (charged for every block of the row's full key range:
      an upper bound by less than one block per row); the output is divided by the row sum at the end.
      K and V tiles are assumed to stay in cache across query tiles (read from memory once).
    - no attention mask is built (positions only);
    - logits on the last position only (``logits_to_keep=1`` / sampling one token per sequence);
    - the KV cache in pages of ``kv_block`` = 16 tokens per sequence (vLLM's PagedAttention, Kwon et al.,
      2023): a sequence holds ceil(context / 16) blocks;
    - one scheduler step processes at most ``max_batched_tokens`` = 8192 tokens (vLLM's chunked-prefill
      token budget), which bounds the activations ``fit`` reserves.

    - fused elementwise kernels (vLLM's ``RMSNorm``, ``RotaryEmbedding``, ``SiluAndMul``, fused add):
      a norm, the rotary embedding, an activation, a gate product or a residual add reads its inputs once and
      writes its output once, instead of one tensor per eager op (same arithmetic).
    - multi-head latent attention (DeepSeek-V2 / V3 layers, mixer kind ``mla``) in the absorbed form for
      decode forwards, the naive (decompress) form for prefill, as vLLM's MLA backend chooses
      (``mla_decode``; ``for_phase`` gives the decode forwards' profile). The absorbed form (DeepSeek-V2
      paper, section 2.1.3 and its appendix: W^UK absorbed into W^Q, W^UV into W^O; FlashMLA): q_nope is
      projected into the latent space (B*S*H*qk_nope*kv_lora MACs), scores run over the latent plus the
      shared rope key (kv_lora + qk_rope MACs per kept pair and head), the online softmax as the flash rule
      with a kv_lora-wide accumulator, the context over the latent (kv_lora MACs per kept pair and head),
      and the output projected back (B*S*H*kv_lora*v_head MACs). kv_b_proj no longer decompresses the
      cached tokens (its weight is read once, for the two absorptions); the latent cache is read once.

    Not modelled yet (named so nobody reads them into the numbers): the residual add fused into the
    following norm, the fused-MoE grouped GEMM's traffic (the experts' weights are already read only for
    the experts the tokens use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict

from . import ops
from .errors import QueryError
from .facts import Facts, Matmul, State, StateKind
from .formula import ZERO, B, Formula, P, S, ceil_div, fmin
from .graph import Graph, Node, NodeKind
from .graph import blocks as blk
from .metrics import ACT, ACTIVE_PARAMS, ADD, CMP, DIV, EXP, MACS, MULT, PARAMS
from .ops import Counts
from .phases import DECODE

FLASH_BLOCK = 128  # keys per block of the online softmax (FlashAttention-2's Bc for head_dim <= 128)
HF_EAGER, HF_SDPA, VLLM = "hf-eager", "hf-sdpa", "vllm"


class ExecutionProfile(BaseModel):
    """How an engine runs the model (see the module docstring for each rule and its source)."""

    model_config = ConfigDict(frozen=True)

    name: str
    summary: str
    attention: Literal["eager", "sdpa", "flash"]
    lm_head: Literal["all", "last"]
    kv_block: int | None = None  # paged KV: tokens per block (None: contiguous, exactly the context)
    max_batched_tokens: int | None = None  # tokens one step processes at most (None: the whole batch)
    builds_mask: bool = True
    fused_elementwise: bool = False  # norms, rope, activations, residual adds as one kernel each
    mla: Literal["naive", "absorbed"] = "naive"  # how this profile's forwards run MLA layers
    mla_decode: Literal["naive", "absorbed"] = "naive"  # how its decode forwards run them

    def for_phase(self, kind: str) -> ExecutionProfile:
        """The profile a forward of phase ``kind`` runs under: decode forwards take ``mla_decode``."""
        form = self.mla_decode if kind == DECODE else self.mla
        return self if form == self.mla else self.model_copy(update={"mla": form})

    @property
    def memory_attention(self) -> str:
        """The activation model's attention kind: eager keeps scores and probabilities alive, fused not."""
        return "eager" if self.attention == "eager" else "fused"


PROFILES: dict[str, ExecutionProfile] = {
    HF_EAGER: ExecutionProfile(
        name=HF_EAGER, summary="transformers eager attention: the validated reference", attention="eager",
        lm_head="all"),
    HF_SDPA: ExecutionProfile(
        name=HF_SDPA, summary="transformers SDPA: reference arithmetic, scores never written to memory",
        attention="sdpa", lm_head="all"),
    VLLM: ExecutionProfile(
        name=VLLM, summary="vLLM-like serving: FlashAttention-2 (causal pairs only), no mask, logits on the last "
                           "position, paged KV (16-token blocks), 8192-token steps, absorbed MLA for decode",
        attention="flash", lm_head="last", kv_block=16, max_batched_tokens=8192, builds_mask=False,
        fused_elementwise=True, mla_decode="absorbed"),
}


def get_engine(engine: str | ExecutionProfile | None, default: str = HF_EAGER) -> ExecutionProfile:
    if isinstance(engine, ExecutionProfile):
        return engine
    name = default if engine is None else engine
    if not isinstance(name, str) or name.strip().lower() not in PROFILES:
        raise QueryError(f"unknown engine {engine!r}; valid: {', '.join(PROFILES)} (see docs/engines.md)")
    return PROFILES[name.strip().lower()]


# --- attention pairs ----------------------------------------------------------------------------------


def _positive_part(x: Formula) -> Formula:
    """max(x, 0) = x - min(x, 0)."""
    return x - fmin(x, 0)


def _triangle(x: Formula) -> Formula:
    """sum_{t=1}^{x} t for x >= 0, and 0 below: m (m + 1) / 2 with m = max(x, 0)."""
    m = _positive_part(x)
    return m * (m + 1) / 2


def causal_pairs(window: int | None = None) -> Formula:
    """(query, key) pairs per sequence and head that causal attention keeps for S new queries after P cached
    tokens: query i (at absolute position P + i) sees keys 0 .. P + i, i.e. P + i + 1 of them, or the last
    ``window`` of them in a sliding layer: sum_{i<S} min(P + i + 1, w)
    = S*P + S(S+1)/2 - [T(P + S - w) - T(P - w)], T(x) = max(x, 0)(max(x, 0) + 1)/2."""
    pairs = S * P + S * (S + 1) / 2
    if window is not None:
        pairs = pairs - (_triangle(P + S - window) - _triangle(P - window))
    return pairs


# --- node rules -----------------------------------------------------------------------------------------

Rule = Callable[[Node, Graph, ExecutionProfile], Node]


def _layer_window(node: Node, graph: Graph) -> int | None:
    return graph.spec.layers[node.layer].mixer.window if node.layer is not None else None


def _only_matmul(node: Node) -> Matmul:
    (mm,) = node.facts.matmuls  # scores and context nodes hold one bmm each (ops.matmul records it)
    return mm


def _flash_scores(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """q @ k^T over the kept pairs, times the scaling, on chip: B*heads*pairs*D MACs; q read once."""
    mm = _only_matmul(node)  # (S x D) @ (D x keys), batch B*heads
    heads_rows = mm.batch  # B * heads
    pairs = heads_rows * causal_pairs(_layer_window(node, graph))
    d = mm.k
    counts = Counts({MULT: pairs * d + pairs, ADD: pairs * (d - 1), MACS: pairs * d, ACT: ZERO})
    counts.facts = Facts(matmuls=(Matmul(Formula.const(1), pairs, d, Formula.const(1)),),
                         reads=heads_rows * S * d + _operand_reads(node, mm.batch * mm.n * mm.k),
                         states=node.facts.states)
    return replace(node, counts=counts, facts=counts.facts)


def _flash_softmax(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """Online softmax (FlashAttention-2): per kept pair a max (CMP), x - m (ADD), exp and a running sum (ADD);
    per query row and key block: exp(m_old - m_new) (ADD, EXP), l rescale (MULT, ADD) and the output rescale
    (Dv MULT); per row at the end O / l (Dv DIV). Nothing is written to memory."""
    context = _context_of(node, graph)
    mm = _only_matmul(context)  # (S x keys) @ (keys x Dv), batch B*heads
    return _online_softmax(node, mm.batch, mm.n, mm.k, _layer_window(node, graph))


def _online_softmax(node: Node, heads_rows: Formula, dv: Formula | int, keys: Formula, window: int | None) -> Node:
    """The online softmax's counts for ``heads_rows`` (B*heads) rows of S queries over ``keys`` keys with a
    ``dv``-wide output accumulator."""
    rows = heads_rows * S
    pairs = heads_rows * causal_pairs(window)
    visits = rows * ceil_div(keys, FLASH_BLOCK)
    counts = Counts({CMP: pairs, ADD: 2 * pairs + 2 * visits, EXP: pairs + visits, MULT: visits * (1 + dv),
                     DIV: rows * dv, ACT: ZERO})
    for kept in (PARAMS, ACTIVE_PARAMS):  # a softmax with parameters (gpt_oss's sinks) keeps them
        if kept in node.counts:
            counts[kept] = node.counts[kept]
    counts.facts = Facts(reads=ZERO, weights=node.facts.weights)
    return replace(node, counts=counts, facts=counts.facts)


def _flash_context(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """P @ V over the kept pairs, accumulated on chip: B*heads*pairs*Dv MACs and as many additions (each
    output element adds its keys' products into the running output); writes B*heads*S*Dv."""
    mm = _only_matmul(node)
    heads_rows, dv = mm.batch, mm.n
    pairs = heads_rows * causal_pairs(_layer_window(node, graph))
    counts = Counts({MULT: pairs * dv, ADD: pairs * dv, MACS: pairs * dv, ACT: heads_rows * S * dv})
    counts.facts = Facts(matmuls=(Matmul(Formula.const(1), dv, pairs, Formula.const(1)),),
                         reads=_operand_reads(node, mm.batch * mm.k * mm.n), states=node.facts.states)
    return replace(node, counts=counts, facts=counts.facts)


def _operand_reads(node: Node, elements: Formula) -> Formula:
    """K (or V) read as an activation when the node does not read it from the cache (e.g. MLA's keys,
    decompressed from the latent); nothing when it reads cache state."""
    return ZERO if node.facts.states else elements


def _context_of(node: Node, graph: Graph) -> Node:
    for other in graph.nodes:
        if other.module == node.module and other.kind == NodeKind.ATTN_CONTEXT:
            return other
    raise QueryError(f"{node.path}: no attention context node beside it; the flash rule cannot apply")


def sdpa_mask_built() -> Formula:
    """1 when transformers' SDPA path builds a mask, else 0: it passes none (``is_causal``, or one query row)
    unless S > 1 and P > 0 (``masking_utils._ignore_causal_mask_sdpa``, no padding). For integers S >= 1,
    P >= 0, min(S - 1, 1) * min(P, 1) is exactly that."""
    return fmin(S - 1, 1) * fmin(P, 1)


def _eager_scores(mm: Matmul) -> Counts:
    """The plain eager scores: q @ k^T, times the scaling, plus the additive mask."""
    return ops.matmul(mm.m, mm.n, mm.k, batch=mm.batch) + ops.elementwise("mul", mm.outputs) + ops.elementwise(
        "add", mm.outputs)


def _same_counts(a: Counts, b: Counts) -> bool:
    return {k: Formula.of(v) for k, v in a.items() if v} == {k: Formula.of(v) for k, v in b.items() if v}


def _sdpa_scores(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """SDPA by PyTorch's documented definition: q @ k^T * scale, the mask a boolean select (no add), nothing
    written. Only plain scores (matmul, scaling, additive mask) are rewritten; softcapping, alibi or sinks
    keep the eager arithmetic (transformers runs those families eagerly or through their own kernels)."""
    fused = _fused_no_write(node, graph, profile)
    mm = _only_matmul(node)
    if not _same_counts(node.counts, _eager_scores(mm)):
        return fused
    return _rewritten(fused, (ops.matmul(mm.m, mm.n, mm.k, batch=mm.batch)
                              + ops.elementwise("mul", mm.outputs)).without_act())


def _sdpa_positions(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """transformers' SDPA path: position ids always; the causal mask (boolean, not expanded over the batch)
    only when it is built (``sdpa_mask_built``). Applied where every layer attends to all keys and the node
    is exactly position ids plus one eager causal mask; any other mask keeps the eager count."""
    full = all(layer.mixer.kind == "attention" and layer.mixer.window is None for layer in graph.spec.layers)
    eager = blk.position_ids() + blk.causal_mask(P + S)
    if not full or not _same_counts(node.counts, eager):
        return node
    counts = blk.position_ids() + blk.causal_mask(P + S, expand=False) * sdpa_mask_built()
    return replace(node, counts=counts, facts=blk.complete_facts(node.kind, counts))


def _rewritten(node: Node, counts: Counts | None = None, facts: Facts | None = None) -> Node:
    """``node`` with new counts and / or facts (its own where not given); the counts carry the facts."""
    new = Counts(node.counts if counts is None else counts)
    new.facts = node.facts if facts is None else facts
    return replace(node, counts=new, facts=new.facts)


def _sdpa_copies(node: Node) -> Formula | None:
    """transformers' SDPA path repeats grouped K / V heads only when it passes a mask (else ``enable_gqa``)."""
    return None if node.facts.copies is None else node.facts.copies * sdpa_mask_built()


def _fused_no_write(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """SDPA's fused kernel: the same arithmetic, nothing of the S x keys matrices written or read back."""
    counts = Counts(node.counts)
    counts[ACT] = ZERO
    return _rewritten(node, counts, replace(node.facts, copies=_sdpa_copies(node),
                                            reads=ZERO if node.kind != NodeKind.ATTN_SCORES else _q_reads(node)))


def _fused_context(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    # the probabilities stay on chip; the output is written
    return _rewritten(node, facts=replace(node.facts, reads=ZERO, copies=_sdpa_copies(node)))


def _q_reads(node: Node) -> Formula:
    mm = _only_matmul(node)
    return mm.batch * mm.m * mm.k  # q: B*heads x S x D


FUSED_KINDS = frozenset({NodeKind.NORM, NodeKind.ROPE, NodeKind.ACTIVATION, NodeKind.ELEMENTWISE,
                         NodeKind.RESIDUAL})


def _fused_chain(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """A fused elementwise kernel (vLLM's RMSNorm / rotary / SiluAndMul / fused add kernels): the same
    arithmetic; its inputs read once and its output written once (``Facts.fused_reads`` / ``fused_writes``)."""
    facts = node.facts
    assert facts.fused_writes is not None and facts.fused_reads is not None
    counts = Counts(node.counts)
    counts[ACT] = facts.fused_writes
    return _rewritten(node, counts, replace(facts, reads=facts.fused_reads))


def _paged_append(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """A paged KV cache (PagedAttention) writes the new tokens into their blocks: no re-copy of the cache."""
    return _rewritten(node, facts=replace(node.facts, cache_copies=None))


def _positions_only(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    counts = blk.position_ids()
    return replace(node, counts=counts, facts=blk.complete_facts(node.kind, counts))


# --- absorbed MLA (DeepSeek-V2 paper, section 2.1.3 and appendix; FlashMLA; vLLM's MLA backend) ------------


@dataclass(frozen=True)
class _MlaDims:
    """An MLA layer's dims, read from its nodes' facts: ``heads`` and ``qk`` (= qk_nope + qk_rope) from the
    scores bmm (batch B*heads, inner qk), ``v_head`` from the context bmm (its n), ``kv_lora`` and
    ``qk_nope`` from kv_b_proj's (heads*(qk_nope + v_head) x kv_lora) weight; its latent read and the
    scores' rope-key read are the two parts of the latent cache."""

    heads: int
    qk_nope: int
    qk_rope: int
    v_head: int
    kv_lora: int
    scores: Matmul  # the reference scores bmm: batch B*heads, k = qk
    context: Matmul  # the reference context bmm: batch B*heads, n = v_head, k = keys
    latent_read: Formula  # latent elements the layer reads from the cache (kv_lora + qk_rope per token)


def _latent_read(node: Node) -> Formula:
    """Latent-cache elements ``node`` reads."""
    out = ZERO
    for st in node.facts.states:
        if st.kind == StateKind.LATENT:
            out = out + st.read
    return out


def _is_latent_expansion(node: Node) -> bool:
    """kv_b_proj as transformers runs it: a linear layer re-expanding latent read from the cache."""
    return node.kind == NodeKind.LINEAR and any(st.kind == StateKind.LATENT and bool(st.read)
                                                 for st in node.facts.states)


def _mla_dims(node: Node, graph: Graph) -> _MlaDims:
    siblings = [n for n in graph.nodes if n.layer == node.layer and n.layer is not None]
    expand = [n for n in siblings if _is_latent_expansion(n)]
    scores = [n for n in siblings if n.kind == NodeKind.ATTN_SCORES]
    context = [n for n in siblings if n.kind == NodeKind.ATTN_CONTEXT]
    if len(expand) != 1 or len(scores) != 1 or len(context) != 1 or len(scores[0].facts.matmuls) != 1:
        raise QueryError(f"{node.path}: an MLA layer needs one latent-expanding linear (kv_b_proj), one scores "
                         "and one context node; the absorbed-MLA rule cannot apply")
    (weight,) = [w for w in expand[0].facts.weights if len(w.shape) == 2]
    sc, cx = _only_matmul(scores[0]), _only_matmul(context[0])
    heads = int(sc.batch(1, 1, 0))  # B*heads at B = 1
    qk, v_head = int(sc.k(1, 1, 0)), int(cx.n(1, 1, 0))
    out_features, kv_lora = weight.shape
    if out_features % heads:
        raise QueryError(f"{expand[0].path}: weight rows {out_features} are not a multiple of {heads} heads")
    qk_nope = out_features // heads - v_head
    latent = _latent_read(expand[0]) + _latent_read(scores[0])
    return _MlaDims(heads, qk_nope, qk - qk_nope, v_head, kv_lora, sc, cx, latent)


def _absorbed_projections(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """kv_b_proj in the absorbed form: its weight's W^UK half absorbs q_nope into the latent space
    (batch H of (B*S x qk_nope) @ (qk_nope x kv_lora)) and its W^UV half maps the latent context back
    (batch H of (B*S x kv_lora) @ (kv_lora x v_head)); no cached token is decompressed. The weight is read
    once; q_nope and the latent context are read, q_latent and the per-head output written."""
    d = _mla_dims(node, graph)
    rows = B * S
    counts = (ops.matmul(rows, d.kv_lora, d.qk_nope, batch=d.heads)
              + ops.matmul(rows, d.v_head, d.kv_lora, batch=d.heads))
    for metric, value in node.counts.items():  # params (and any non-arithmetic metric) stay the node's
        if metric not in (ADD, MULT, MACS, ACT):
            counts[metric] = value
    heads, f = Formula.const(d.heads), Formula.const
    matmuls = (Matmul(rows, f(d.kv_lora), f(d.qk_nope), heads), Matmul(rows, f(d.v_head), f(d.kv_lora), heads))
    counts.facts = Facts(weights=node.facts.weights, matmuls=matmuls, reads=rows * d.heads * (d.qk_nope + d.kv_lora))
    return replace(node, counts=counts, facts=counts.facts)


def _absorbed_scores(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """Scores over the latent plus the shared rope key: per kept pair and head kv_lora + qk_rope MACs and
    the scaling; q_latent and q_pe read; the latent cache (kv_lora + qk_rope per cached token) read once
    (FlashMLA reads each latent tile once for scores and context)."""
    d = _mla_dims(node, graph)
    heads_rows = d.scores.batch  # B * heads
    pairs = heads_rows * causal_pairs(_layer_window(node, graph))
    width = d.kv_lora + d.qk_rope
    counts = Counts({MULT: pairs * width + pairs, ADD: pairs * (width - 1), MACS: pairs * width, ACT: ZERO})
    counts.facts = Facts(matmuls=(Matmul(Formula.const(1), pairs, Formula.const(width), Formula.const(1)),),
                         reads=heads_rows * S * width, states=(State(StateKind.LATENT, read=d.latent_read),))
    return replace(node, counts=counts, facts=counts.facts)


def _absorbed_softmax(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """The flash rule's online softmax with the latent-space accumulator (kv_lora wide)."""
    d = _mla_dims(node, graph)
    return _online_softmax(node, d.context.batch, d.kv_lora, d.context.k, _layer_window(node, graph))


def _absorbed_context(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """Probabilities @ latent over the kept pairs: kv_lora MACs (and additions) per kept pair and head; the
    latent tile is already on chip (read by the scores); B*heads*S*kv_lora written."""
    d = _mla_dims(node, graph)
    heads_rows = d.context.batch
    pairs = heads_rows * causal_pairs(_layer_window(node, graph))
    r = d.kv_lora
    counts = Counts({MULT: pairs * r, ADD: pairs * r, MACS: pairs * r, ACT: heads_rows * S * r})
    counts.facts = Facts(matmuls=(Matmul(Formula.const(1), Formula.const(r), pairs, Formula.const(1)),),
                         reads=ZERO)
    return replace(node, counts=counts, facts=counts.facts)


_ABSORBED: dict[str, Rule] = {NodeKind.LINEAR: _absorbed_projections, NodeKind.ATTN_SCORES: _absorbed_scores,
                              NodeKind.ATTN_SOFTMAX: _absorbed_softmax, NodeKind.ATTN_CONTEXT: _absorbed_context}


def _mla_rule(node: Node, graph: Graph) -> Rule | None:
    """The absorbed-MLA rule of ``node`` when it is one of an MLA layer's rewritten nodes."""
    if node.layer is None or graph.spec.layers[node.layer].mixer.kind != "mla":
        return None
    if node.kind == NodeKind.LINEAR and not _is_latent_expansion(node):
        return None
    return _ABSORBED.get(node.kind)


_RULES: dict[str, dict[str, Rule]] = {
    "sdpa": {NodeKind.ATTN_SCORES: _sdpa_scores, NodeKind.ATTN_SOFTMAX: _fused_no_write,
             NodeKind.ATTN_CONTEXT: _fused_context, NodeKind.POSITIONS: _sdpa_positions},
    "flash": {NodeKind.ATTN_SCORES: _flash_scores, NodeKind.ATTN_SOFTMAX: _flash_softmax,
              NodeKind.ATTN_CONTEXT: _flash_context},
}


def apply_engine(graph: Graph, profile: ExecutionProfile) -> Graph:
    """The graph as ``profile`` runs it: nodes its rules concern rewritten, the others shared as they are
    (rewrites are memoised per distinct node so layers keep sharing their formulas)."""
    rules = dict(_RULES.get(profile.attention, {}))
    if not profile.builds_mask:
        rules[NodeKind.POSITIONS] = _positions_only
    if profile.kv_block is not None:
        rules[NodeKind.KV_CACHE] = _paged_append
    if profile.fused_elementwise:
        rules.update(dict.fromkeys(FUSED_KINDS, _fused_chain))
    absorbed = profile.mla == "absorbed"
    if not rules and not absorbed:
        return graph
    done: dict[tuple[int, int | None, str, bool], Node] = {}
    out = []
    for node in graph.nodes:
        mla_rule = _mla_rule(node, graph) if absorbed else None
        rule = mla_rule or rules.get(node.kind)
        if rule is _fused_chain and node.facts.fused_writes is None:
            rule = None  # not a chain a fused kernel is known to run
        if rule is None or (node.kind == NodeKind.ATTN_SCORES and len(node.facts.matmuls) != 1):
            out.append(node)
            continue
        window = _layer_window(node, graph)
        key = (id(node.counts), window, node.kind, mla_rule is not None)
        template = done.get(key)
        if template is None:
            template = done[key] = rule(node, graph, profile)
        out.append(replace(template, path=node.path, module=node.module, layer=node.layer))
    # the reference stays reachable, so a phase's variant (``for_phase``) can be built from any view
    meta = {**graph.meta, "engine": profile.name, "reference": graph.meta.get("reference", graph)}
    if absorbed and any(_mla_rule(node, graph) for node in graph.nodes):
        meta["mla"] = "absorbed"
    return Graph(spec=graph.spec, nodes=tuple(out), layer_prefix=graph.layer_prefix, meta=meta)


def paged_tokens(context: int, profile: ExecutionProfile) -> int:
    """Tokens of KV a sequence at ``context`` occupies: whole pages under a paged KV cache."""
    if profile.kv_block is None:
        return context
    return -(-context // profile.kv_block) * profile.kv_block


__all__ = ["FLASH_BLOCK", "HF_EAGER", "HF_SDPA", "PROFILES", "VLLM", "ExecutionProfile", "apply_engine",
           "causal_pairs", "get_engine", "paged_tokens"]
