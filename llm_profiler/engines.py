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
    the output out); each mask the base model builds (full, sliding, chunked) as the boolean mask, built
    only when ``sdpa_mask`` does not skip it (``sdpa_local_mask_built``); DSA's boolean index mask.
    Validated per node against transformers' SDPA forward on every preset it runs (docs/engines.md).
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

    - DSA layers (deepseek_v32, glm_moe_dsa) as FlashMLA's sparse kernels run them: absorbed MLA over the
      min(index_topk, P + i + 1) selected latent entries per query, in every forward; the lightning
      indexer's logits over the causal keys only (DeepGEMM's fp8_mqa_logits);
    - DeepSeek-V4's compressed layers over the window keys plus the compressed entries each query sees
      (``compressed_pairs``);
    - gated DeltaNet and Mamba scans, and their causal conv, as fused kernels (fla, mamba_ssm,
      causal_conv1d): only the outputs written; attention sinks once per row.

    Not modelled yet (named so nobody reads them into the numbers): the residual add fused into the
    following norm, the fused-MoE grouped GEMM's traffic (the experts' weights are already read only for
    the experts the tokens use).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict

from . import ops
from .errors import QueryError
from .facts import Facts, Matmul, State, StateKind
from .formula import ZERO, B, Formula, P, S, ceil_div, fmin
from .graph import Graph, Node, NodeKind
from .graph import attention_variants as av
from .graph import blocks as blk
from .graph import compressed_attention as ca
from .graph.sparse_attention import index_keys
from .metrics import ACT, ACTIVE_PARAMS, ADD, CMP, DIV, EXP, MACS, MULT, PARAMS
from .ops import Counts
from .phases import DECODE
from .spec import ArchSpec

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


def _floor_sum(n: Formula, m: int, cap: int | None = None) -> Formula:
    """sum_{x=0}^{n-1} min(floor(x / m), cap) for an integer n >= 0 (cap None: no cap).

    Uncapped: with q = floor(n / m), the sum is m * (0 + 1 + ... + (q - 1)) + q * (n - q m) = q (n - m (q + 1) / 2).
    Capped at K: the terms reach K at x = K m, so the sum is the uncapped one up to n' = min(n, K m) (whose
    q' = min(q, K)) plus K for each of the n - n' later terms."""
    if cap is None:
        q = ca.floor_div(n, m)
        return q * (n - m * (q + 1) / 2)
    q, n_capped = fmin(ca.floor_div(n, m), cap), fmin(n, cap * m)
    return q * (n_capped - m * (q + 1) / 2) + cap * (n - n_capped)


def compressed_pairs(ratio: int, top_k: int | None = None) -> Formula:
    """Compressed entries the S new queries (after P cached tokens) attend to, summed over the queries, per
    sequence and head (DeepSeek-V4's compressed layers, ``graph.compressed_attention``): query i, at
    absolute position t = P + i, sees the floor((t + 1) / m) entries whose window closed (transformers'
    causal threshold (position_ids + 1) // m), and a CSA layer only the ``top_k`` best of them:
    sum_{x=P+1}^{P+S} min(floor(x / m), K) = F(P + S + 1) - F(P + 1), F = ``_floor_sum``."""
    return _floor_sum(P + S + 1, ratio, top_k) - _floor_sum(P + 1, ratio, top_k)


_LAYER_FACTS: dict[int, tuple[tuple[Node, ...], frozenset[int], frozenset[int]]] = {}


def _layer_facts(graph: Graph) -> tuple[frozenset[int], frozenset[int]]:
    """(layers running a compressor, layers running a DSA lightning indexer) of ``graph``, computed once per
    graph (its node tuple is kept beside the entry, so a reused id never answers for another graph)."""
    entry = _LAYER_FACTS.get(id(graph.nodes))
    if entry is None or entry[0] is not graph.nodes:
        compressed = frozenset(n.layer for n in graph.nodes if n.layer is not None and ".compressor" in n.path)
        dsa = frozenset(n.layer for n in graph.nodes if n.layer is not None and _is_dsa_index_scores(n))
        if len(_LAYER_FACTS) > 64:
            _LAYER_FACTS.clear()
        entry = _LAYER_FACTS[id(graph.nodes)] = (graph.nodes, compressed, dsa)
    return entry[1], entry[2]


def _is_compressed_layer(node: Node, graph: Graph) -> bool:
    """A DeepSeek-V4 compressed layer (HCA or CSA): its mixer has a compression ratio (``chunk``) and a
    window, and the layer runs a compressor."""
    if node.layer is None:
        return False
    mixer = graph.spec.layers[node.layer].mixer
    return mixer.chunk is not None and mixer.window is not None and node.layer in _layer_facts(graph)[0]


def _dsa_top_k(node: Node, graph: Graph) -> int | None:
    """``index_topk`` of a DSA layer (deepseek_v32, glm_moe_dsa: a ``sparse_attention`` layer whose keys a
    lightning indexer picks, its own or, on glm_moe_dsa's shared-indexer layers, the previous one's), else
    None (DeepSeek-V4's CSA layers are compressed layers: ``compressed_pairs``)."""
    if node.layer is None or graph.spec.layers[node.layer].mixer.kind != "sparse_attention":
        return None
    if _is_compressed_layer(node, graph) or not _layer_facts(graph)[1]:
        return None
    top_k = getattr(graph.spec, "index_topk", None)
    return int(top_k) if isinstance(top_k, int) else None


def kept_pairs(node: Node, graph: Graph) -> Formula:
    """(query, key) pairs per sequence and head a fused kernel computes in ``node``'s layer: the causal (and
    sliding-window) pairs; a DSA layer's min(top_k, P + i + 1) keys per query (``causal_pairs`` with the
    top-k as the window); a DeepSeek-V4 compressed layer's window keys plus the compressed entries it sees
    (``compressed_pairs``; a CSA layer's top-k of them)."""
    window = _layer_window(node, graph)
    if _is_compressed_layer(node, graph):
        mixer = graph.spec.layers[node.layer].mixer  # type: ignore[index]
        assert mixer.chunk is not None
        top_k = getattr(graph.spec, "index_topk", None) if mixer.kind == "sparse_attention" else None
        return causal_pairs(window) + compressed_pairs(mixer.chunk, top_k)
    top_k = _dsa_top_k(node, graph)
    return causal_pairs(top_k if top_k is not None else window)


def _flash_scores(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """q @ k^T over the kept pairs, times the scaling, on chip: B*heads*pairs*D MACs; q read once."""
    mm = _only_matmul(node)  # (S x D) @ (D x keys), batch B*heads
    heads_rows = mm.batch  # B * heads
    pairs = heads_rows * kept_pairs(node, graph)
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
    return _online_softmax(node, mm.batch, mm.n, mm.k, kept_pairs(node, graph))


def _flash_sinks(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """Attention sinks in a flash kernel (gpt_oss; vLLM's FlashAttention ``s_aux``): the sink logit joins each
    query row's running max (CMP) and sum (x - m: ADD, exp, + into the sum: ADD) once per row; nothing
    written. The row count comes from the context bmm (B*heads rows of S queries)."""
    rows = _only_matmul(_context_of(node, graph)).batch * S
    counts = Counts({CMP: rows, ADD: 2 * rows, EXP: rows, ACT: ZERO})
    for kept in (PARAMS, ACTIVE_PARAMS):
        if kept in node.counts:
            counts[kept] = node.counts[kept]
    counts.facts = Facts(reads=ZERO, weights=node.facts.weights)
    return replace(node, counts=counts, facts=counts.facts)


def _online_softmax(node: Node, heads_rows: Formula, dv: Formula | int, keys: Formula, kept: Formula) -> Node:
    """The online softmax's counts for ``heads_rows`` (B*heads) rows of S queries over ``keys`` keys, ``kept``
    pairs per row group (sequence and head) computed, with a ``dv``-wide output accumulator."""
    rows = heads_rows * S
    pairs = heads_rows * kept
    visits = rows * ceil_div(keys, FLASH_BLOCK)
    counts = Counts({CMP: pairs, ADD: 2 * pairs + 2 * visits, EXP: pairs + visits, MULT: visits * (1 + dv),
                     DIV: rows * dv, ACT: ZERO})
    for kept_metric in (PARAMS, ACTIVE_PARAMS):  # a softmax with parameters (gpt_oss's sinks) keeps them
        if kept_metric in node.counts:
            counts[kept_metric] = node.counts[kept_metric]
    counts.facts = Facts(reads=ZERO, weights=node.facts.weights)
    return replace(node, counts=counts, facts=counts.facts)


def _flash_context(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """P @ V over the kept pairs, accumulated on chip: B*heads*pairs*Dv MACs and as many additions (each
    output element adds its keys' products into the running output); writes B*heads*S*Dv."""
    mm = _only_matmul(node)
    heads_rows, dv = mm.batch, mm.n
    pairs = heads_rows * kept_pairs(node, graph)
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
    """1 when transformers' SDPA path builds the full causal mask, else 0: it passes none (``is_causal``, or
    one query row) unless S > 1 and P > 0 (``masking_utils._ignore_causal_mask_sdpa``, no padding). For
    integers S >= 1, P >= 0, min(S - 1, 1) * min(P, 1) is exactly that."""
    return fmin(S - 1, 1) * fmin(P, 1)


def _at_least(x: Formula, n: int) -> Formula:
    """1 when the integer x >= n, else 0: min(x, n) - min(x, n - 1)."""
    return fmin(x, n) - fmin(x, n - 1)


def sdpa_local_mask_built(keys: Formula, local: int | None) -> Formula:
    """1 when transformers' ``sdpa_mask`` builds a mask over ``keys`` key positions with the local size
    ``local`` (a sliding window or an attention chunk; None: the full causal mask), else 0
    (``masking_utils._ignore_causal_mask_sdpa``): once ``kv_length >= local_size`` it is always built; a
    shorter one is skipped for one query row or a prefill from an empty cache, as the full mask is."""
    if local is None:
        return sdpa_mask_built()
    return 1 - (1 - _at_least(keys, local)) * (1 - sdpa_mask_built())


# Families whose base model asks for the mask with ``allow_is_causal_skip=False`` (transformers 5.23): it is
# built at every shape. falcon: "Always materialize the mask so alibi can be added onto it"
# (FalconModel.forward); deepseek_v32 / glm_moe_dsa: the indexer scores against it ("Always force creation to
# account for causality in the indexer", the ``indexed_attention`` mask).
ALWAYS_BUILT_MASK = frozenset({"falcon", "deepseek_v32", "glm_moe_dsa"})


@dataclass(frozen=True)
class _Mask:
    """One mask a base model may build: its eager counts, its SDPA counts (the boolean mask: no ``where``, no
    expansion over the batch) and when SDPA's path builds it at all."""

    eager: Counts
    sdpa: Counts
    built: Formula


def _mask_candidates(spec: ArchSpec) -> list[_Mask]:
    """The masks a base model may build for ``spec``'s layer types (full, sliding window, chunked), over the
    key lengths its layers see (the eager graph's ``keys``: P + S, min(P, w - 1) + S, min(P, c - 1) + S)."""
    windows = {layer.mixer.window for layer in spec.layers if layer.mixer.window is not None}
    # the config's window; none: 0, as transformers sets it for qwen2_moe without use_sliding_window (whose base
    # model builds a sliding mask all the same: a local size of 0, so always built)
    windows.add(spec.sliding_window if spec.sliding_window is not None else 0)
    chunks = {layer.mixer.chunk for layer in spec.layers
              if layer.mixer.kind == "chunked_attention" and layer.mixer.chunk}
    always = spec.model_type in ALWAYS_BUILT_MASK

    def mask(eager: Counts, sdpa: Counts, keys: Formula, local: int | None) -> _Mask:
        return _Mask(eager, sdpa, Formula.const(1) if always else sdpa_local_mask_built(keys, local))

    out: list[_Mask] = []
    key_sets: list[tuple[Formula, int | None]] = [(blk.keys_full(), None)]
    key_sets += [(blk.keys_sliding(w), w) for w in sorted(windows) if w > 1]
    key_sets += [(av.keys_chunked(c), c) for c in sorted(chunks)]
    for keys, own in key_sets:
        out.append(mask(blk.causal_mask(keys), blk.causal_mask(keys, expand=False), keys, None))
        # the sliding overlay over a window layer's own keys, or over all keys (the window a full layer's
        # config names: qwen2_moe builds a sliding mask whether a layer slides or not)
        for w in [own] if own is not None and own in windows else sorted(windows):
            out.append(mask(blk.causal_mask(keys, w), blk.causal_mask(keys, w, expand=False), keys, w))
        for c in sorted(chunks):
            chunked = av.chunked_causal_mask(keys, c)
            out.append(mask(chunked, chunked + ops.elementwise("select", B * S * keys) * -1, keys, c))
    return out


def _nonnegative(counts: Counts) -> bool:
    """Every metric of ``counts`` >= 0 at a few shapes (what is left of a node once its masks are out)."""
    return all(Formula.of(v)(b, s, p) >= 0 for v in counts.values() for b, s, p in ((1, 1, 0), (2, 3, 5), (3, 9, 70)))


def _sdpa_positions(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """transformers' SDPA path: every mask the base model builds (full causal, sliding window, chunked) as the
    boolean mask SDPA takes (no ``where``, no expansion over the batch), each only when ``sdpa_mask`` does
    not skip it (``sdpa_local_mask_built``; always for ``ALWAYS_BUILT_MASK``); the rest of the node (position
    ids, opt's cumsum) as eager. The masks are found in the eager node as the smallest set of candidates
    (``_mask_candidates``) whose removal leaves no comparison; a node no set explains keeps its eager count."""
    counts = Counts(node.counts)
    candidates = _mask_candidates(graph.spec)
    for size in range(1, 4):
        for subset in itertools.combinations(candidates, size):
            rest = counts + ops.total(m.eager for m in subset) * -1
            if Formula.of(rest.get(CMP, 0)) or not _nonnegative(rest):
                continue
            new = Counts({k: v for k, v in (rest + ops.total(m.sdpa * m.built for m in subset)).items()
                          if Formula.of(v)})
            return replace(node, counts=new, facts=blk.complete_facts(node.kind, new))
    return node


def _eager_scores(mm: Matmul) -> Counts:
    """The plain eager scores: q @ k^T, times the scaling, plus the additive mask."""
    return ops.matmul(mm.m, mm.n, mm.k, batch=mm.batch) + ops.elementwise("mul", mm.outputs) + ops.elementwise(
        "add", mm.outputs)


def _same_counts(a: Counts, b: Counts) -> bool:
    return {k: Formula.of(v) for k, v in a.items() if v} == {k: Formula.of(v) for k, v in b.items() if v}


def _sdpa_scores(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """SDPA by PyTorch's documented definition: q @ k^T * scale, the mask a boolean select (no add), nothing
    written. Only plain scores (matmul, a scaling by multiplication or, falcon's, by division, an additive
    mask) are rewritten; softcapping, alibi or sinks keep the eager arithmetic (transformers runs those
    families eagerly)."""
    fused = _fused_no_write(node, graph, profile)
    mm = _only_matmul(node)
    product = ops.matmul(mm.m, mm.n, mm.k, batch=mm.batch)
    for scaling in ("mul", "div"):
        eager = product + ops.elementwise(scaling, mm.outputs) + ops.elementwise("add", mm.outputs)
        if _same_counts(node.counts, eager):
            return _rewritten(fused, (product + ops.elementwise("mul", mm.outputs)).without_act())
    return fused


def _is_dsa_index_scores(node: Node) -> bool:
    """The lightning indexer's scores of a DSA layer (deepseek_v32, glm_moe_dsa: ``graph.sparse_attention``)."""
    return node.kind == NodeKind.ELEMENTWISE and node.path.endswith(".indexer:scores")


def _sdpa_index_scores(node: Node) -> Node:
    """The DSA indexer under SDPA gets the boolean mask: ``index_scores.masked_fill(~mask, -inf)`` (one NOT
    per score, B*S*T CMP, T = P + S; the fill a copy) instead of eager's additive float mask (B*S*T ADD)."""
    n = B * S * index_keys()
    counts = node.counts + ops.elementwise("add", n).without_act() * -1 + ops.elementwise("logic", n).without_act()
    return _rewritten(node, counts)


def _sdpa_index_mask(scores: Node) -> Node:
    """DSA under SDPA: the attention's boolean mask loses the keys the indexer did not pick,
    ``attention_mask & ~index_mask`` (DeepseekV32Attention.forward): a NOT and an AND over B*S*T, T = P + S,
    each written (eager's masked_fill is a copy); run by the attention module itself."""
    counts = ops.elementwise("logic", 2 * B * S * index_keys())
    return Node(path=scores.module, module=scores.module, kind=NodeKind.ELEMENTWISE, counts=counts,
                layer=scores.layer, block=scores.block, facts=blk.complete_facts(NodeKind.ELEMENTWISE, counts),
                label_tag="index mask")


def _sdpa_dsa(nodes: list[Node]) -> list[Node]:
    """The DSA layers' extra SDPA ops (``_sdpa_index_scores``, ``_sdpa_index_mask``)."""
    dsa_layers = {n.layer for n in nodes if _is_dsa_index_scores(n)}
    out: list[Node] = []
    for node in nodes:
        if _is_dsa_index_scores(node):
            node = _sdpa_index_scores(node)
        elif node.kind == NodeKind.ATTN_SCORES and node.layer in dsa_layers:
            out.append(_sdpa_index_mask(node))
        out.append(node)
    return out


def _rewritten(node: Node, counts: Counts | None = None, facts: Facts | None = None) -> Node:
    """``node`` with new counts and / or facts (its own where not given); the counts carry the facts."""
    new = Counts(node.counts if counts is None else counts)
    new.facts = node.facts if facts is None else facts
    return replace(node, counts=new, facts=new.facts)


def _sdpa_copies(node: Node, graph: Graph) -> Formula | None:
    """transformers' SDPA path repeats grouped K / V heads (``repeat_kv``) only when several queries come with a
    mask (else ``enable_gqa``; one query row with a mask is packed by ``pack_gqa``, no copy): the layer's
    mask is built (``sdpa_local_mask_built``, its window's or chunk's) and S > 1."""
    if node.facts.copies is None:
        return None
    local = _layer_window(node, graph)
    if local is None and node.layer is not None and graph.spec.layers[node.layer].mixer.kind == "chunked_attention":
        local = graph.spec.layers[node.layer].mixer.chunk
    keys = blk.keys_full() if local is None else blk.keys_sliding(local)
    built = Formula.const(1) if graph.spec.model_type in ALWAYS_BUILT_MASK else sdpa_local_mask_built(keys, local)
    return node.facts.copies * built * fmin(S - 1, 1)


def _fused_no_write(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """SDPA's fused kernel: the same arithmetic, nothing of the S x keys matrices written or read back."""
    counts = Counts(node.counts)
    counts[ACT] = ZERO
    return _rewritten(node, counts, replace(node.facts, copies=_sdpa_copies(node, graph),
                                            reads=ZERO if node.kind != NodeKind.ATTN_SCORES else _q_reads(node)))


def _fused_context(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    # the probabilities stay on chip; the output is written
    return _rewritten(node, facts=replace(node.facts, reads=ZERO, copies=_sdpa_copies(node, graph)))


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
    pairs = heads_rows * kept_pairs(node, graph)
    width = d.kv_lora + d.qk_rope
    # a DSA layer's sparse kernel gathers each query's selected latent entries (FlashMLA's sparse kernels)
    latent = d.latent_read if _dsa_top_k(node, graph) is None else B * kept_pairs(node, graph) * width
    counts = Counts({MULT: pairs * width + pairs, ADD: pairs * (width - 1), MACS: pairs * width, ACT: ZERO})
    counts.facts = Facts(matmuls=(Matmul(Formula.const(1), pairs, Formula.const(width), Formula.const(1)),),
                         reads=heads_rows * S * width, states=(State(StateKind.LATENT, read=latent),))
    return replace(node, counts=counts, facts=counts.facts)


def _absorbed_softmax(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """The flash rule's online softmax with the latent-space accumulator (kv_lora wide)."""
    d = _mla_dims(node, graph)
    top_k = _dsa_top_k(node, graph)  # a DSA row holds at most top_k keys: its key blocks
    keys = d.context.k if top_k is None else fmin(d.context.k, top_k)
    return _online_softmax(node, d.context.batch, d.kv_lora, keys, kept_pairs(node, graph))


def _absorbed_context(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """Probabilities @ latent over the kept pairs: kv_lora MACs (and additions) per kept pair and head; the
    latent tile is already on chip (read by the scores); B*heads*S*kv_lora written."""
    d = _mla_dims(node, graph)
    heads_rows = d.context.batch
    pairs = heads_rows * kept_pairs(node, graph)
    r = d.kv_lora
    counts = Counts({MULT: pairs * r, ADD: pairs * r, MACS: pairs * r, ACT: heads_rows * S * r})
    counts.facts = Facts(matmuls=(Matmul(Formula.const(1), Formula.const(r), pairs, Formula.const(1)),),
                         reads=ZERO)
    return replace(node, counts=counts, facts=counts.facts)


_ABSORBED: dict[str, Rule] = {NodeKind.LINEAR: _absorbed_projections, NodeKind.ATTN_SCORES: _absorbed_scores,
                              NodeKind.ATTN_SOFTMAX: _absorbed_softmax, NodeKind.ATTN_CONTEXT: _absorbed_context}


def _mla_rule(node: Node, graph: Graph, profile: ExecutionProfile) -> Rule | None:
    """The absorbed-MLA rule of ``node`` when it is one of the rewritten nodes of an MLA layer the profile runs
    absorbed: an ``mla`` layer when the profile's MLA form is absorbed (decode forwards under ``vllm``); a
    DSA layer (``sparse_attention`` with a lightning indexer) in every forward of a flash profile, because
    the sparse kernels run MLA in its MQA (absorbed) form only (``_sparse_mla`` rules)."""
    if node.layer is None:
        return None
    kind = graph.spec.layers[node.layer].mixer.kind
    dsa = profile.attention == "flash" and kind == "sparse_attention" and _dsa_top_k(node, graph) is not None
    if not dsa and not (profile.mla == "absorbed" and kind == "mla"):
        return None
    if node.kind == NodeKind.LINEAR and not _is_latent_expansion(node):
        return None
    return _ABSORBED.get(node.kind)


# --- DSA's lightning indexer as vLLM runs it (DeepGEMM's fp8_mqa_logits / fp8_paged_mqa_logits) ------------


def _flash_index_scores(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """The lightning indexer's logits over the causal keys only (DeepSeek-V3.2-Exp paper, eq. 1:
    I[t, s] = sum_j w[t, j] * ReLU(q[t, j] . k[s]); vLLM computes it with DeepGEMM's ``fp8_mqa_logits`` over
    each query's [start, end) key range for prefill and ``fp8_paged_mqa_logits`` for decode): per causal
    pair and index head Di MACs for q . k, a ReLU (CMP) and one MAC into the weighted sum; the head weights
    scaled once per token and head (B*S*Hi MULT); no mask; the B*S*(P + S) logits written for the top-k.
    Hi and Di come from the eager node's bmm (B*S batches of (Hi x Di) @ (Di x T))."""
    mm = node.facts.matmuls[0]
    hi, di = mm.m, mm.k
    pairs = B * causal_pairs()
    counts = Counts({MACS: pairs * hi * (di + 1), MULT: pairs * hi * (di + 1) + B * S * hi,
                     ADD: pairs * (hi * di - 1), CMP: pairs * hi, ACT: B * S * index_keys()})
    counts.facts = Facts(matmuls=(Matmul(Formula.const(1), pairs, hi * (di + 1), Formula.const(1)),),
                         reads=B * S * hi * (di + 1), states=node.facts.states)
    return replace(node, counts=counts, facts=counts.facts)


# --- fused linear-attention and state-space kernels (fla, mamba_ssm / causal_conv1d in vLLM) ---------------


def _fused_scan(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """A fused chunked scan writes only its output (fla's ``chunk_gated_delta_rule`` /
    ``fused_recurrent_gated_delta_rule``, mamba_ssm's ``mamba_chunk_scan_combined`` / ``selective_scan_fn`` /
    ``selective_state_update``: the chunk intermediates, decays and C x C systems stay in on-chip memory);
    its arithmetic is kept as the torch path counts it (an upper bound by the tail chunk's padding and, for
    DeltaNet, the repeat of q / k to the value heads). Reads: the scan's inputs, the state (facts.states)."""
    out_width, in_width = _scan_widths(graph)
    counts = Counts(node.counts)
    counts[ACT] = B * S * out_width
    return _rewritten(node, counts, replace(node.facts, reads=B * S * in_width))


def _scan_widths(graph: Graph) -> tuple[int, int]:
    """(output, input) elements per token of a layer's scan: DeltaNet (``spec.delta_net``): out Hv*Dv; in q and
    k at the key heads, v, g and beta; Mamba-2 (``spec.mamba``): out heads*head_dim; in x, dt, B and C;
    Mamba-1: out inner; in x, dt (inner), B and C (state each)."""
    d = getattr(graph.spec, "delta_net", None)
    if d is not None:
        return d.value_width, 2 * d.key_width + d.value_width + 2 * d.value_heads
    m = getattr(graph.spec, "mamba", None)
    if m is None:
        raise QueryError("a scan node without the spec's delta_net or mamba dims; the fused-scan rule cannot apply")
    if hasattr(m, "groups"):  # Mamba-2
        return m.inner, m.inner + m.heads + 2 * m.groups * m.state
    return m.inner, 2 * m.inner + 2 * m.state


def _fused_conv(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """``causal_conv1d_fn`` / ``causal_conv1d_update`` (the Dao-AILab kernel vLLM ships): the S new columns
    of every channel written once, the activation applied in the kernel; the arithmetic kept as the torch
    path counts it (an upper bound by its padded columns)."""
    channels = _conv_channels(graph)
    counts = Counts(node.counts)
    counts[ACT] = B * S * channels
    return _rewritten(node, counts, replace(node.facts, reads=B * S * channels))


def _conv_channels(graph: Graph) -> int:
    d = getattr(graph.spec, "delta_net", None)
    if d is not None:
        return int(d.conv_dim)
    m = getattr(graph.spec, "mamba", None)
    if m is None:
        raise QueryError("a conv node without the spec's delta_net or mamba dims; the fused-conv rule cannot apply")
    return int(m.conv_channels) if hasattr(m, "conv_channels") else int(m.inner)


def _in_kernel(node: Node, graph: Graph, profile: ExecutionProfile) -> Node:
    """Work a fused kernel does on data it already holds (the q / k l2norm inside fla's kernel,
    ``use_qk_l2norm_in_kernel``; Mamba-2's dt softplus and clamp inside ``mamba_chunk_scan_combined``;
    the conv's activation inside ``causal_conv1d``): the same arithmetic, nothing read or written."""
    counts = Counts(node.counts)
    counts[ACT] = ZERO
    return _rewritten(node, counts, replace(node.facts, reads=ZERO, fused_reads=None, fused_writes=None))


def _scan_rule(node: Node, graph: Graph) -> Rule | None:
    """The fused-kernel rule of a DeltaNet or Mamba node (``graph.linear_attention``, ``graph.ssm``)."""
    if node.layer is None:
        return None
    kind = graph.spec.layers[node.layer].mixer.kind
    if kind not in ("linear_attention", "state_space"):
        return None
    part = node.part
    if part in ("delta_rule", "scan"):
        return _fused_scan
    if part == "conv":
        return _fused_conv
    if part == "l2norm" or (part == "dt" and hasattr(getattr(graph.spec, "mamba", None), "groups")):
        return _in_kernel
    if part is None and node.kind == NodeKind.ACTIVATION and getattr(graph.spec, "delta_net", None) is not None:
        return _in_kernel  # DeltaNet's conv activation (the module path's node)
    return None


_RULES: dict[str, dict[str, Rule]] = {
    "sdpa": {NodeKind.ATTN_SCORES: _sdpa_scores, NodeKind.ATTN_SOFTMAX: _fused_no_write,
             NodeKind.ATTN_CONTEXT: _fused_context, NodeKind.POSITIONS: _sdpa_positions},
    "flash": {NodeKind.ATTN_SCORES: _flash_scores, NodeKind.ATTN_SOFTMAX: _flash_softmax,
              NodeKind.ATTN_CONTEXT: _flash_context},
}


def _rule_of(node: Node, graph: Graph, profile: ExecutionProfile, rules: dict[str, Rule]) -> Rule | None:
    """The rule ``profile`` applies to ``node``, or None."""
    mla_rule = _mla_rule(node, graph, profile)
    if mla_rule is not None:
        return mla_rule
    if profile.attention == "flash":
        if _is_dsa_index_scores(node):
            return _flash_index_scores
        if node.kind == NodeKind.ATTN_SOFTMAX and node.part == "sinks":
            return _flash_sinks
        scan = _scan_rule(node, graph)
        if scan is not None:
            return scan
    rule = rules.get(node.kind)
    if rule is _fused_chain and node.facts.fused_writes is None:
        return None  # not a chain a fused kernel is known to run
    if node.kind == NodeKind.ATTN_SCORES and (len(node.facts.matmuls) != 1 or node.part != "scores"):
        return None  # a second scores node (DeepSeek-V4's indexer scorer) keeps the reference count
    return rule


def apply_engine(graph: Graph, profile: ExecutionProfile) -> Graph:
    """The graph as ``profile`` runs it: nodes its rules concern rewritten, the others shared as they are
    (rewrites are memoised per distinct node and layer type so layers keep sharing their formulas)."""
    rules = dict(_RULES.get(profile.attention, {}))
    if not profile.builds_mask:
        rules[NodeKind.POSITIONS] = _positions_only
    if profile.kv_block is not None:
        rules[NodeKind.KV_CACHE] = _paged_append
    if profile.fused_elementwise:
        rules.update(dict.fromkeys(FUSED_KINDS, _fused_chain))
    if not rules and profile.mla != "absorbed":
        return graph
    done: dict[tuple[int, str, str, str], Node] = {}
    out = []
    for node in graph.nodes:
        rule = _rule_of(node, graph, profile, rules)
        if rule is None:
            out.append(node)
            continue
        mixer = repr(graph.spec.layers[node.layer].mixer) if node.layer is not None else ""
        key = (id(node.counts), mixer, node.kind, rule.__name__)
        template = done.get(key)
        if template is None:
            template = done[key] = rule(node, graph, profile)
        out.append(replace(template, path=node.path, module=node.module, layer=node.layer))
    if profile.attention == "sdpa":
        out = _sdpa_dsa(out)
    # the reference stays reachable, so a phase's variant (``for_phase``) can be built from any view
    meta = {**graph.meta, "engine": profile.name, "reference": graph.meta.get("reference", graph)}
    forms = {_mla_rule(node, graph, profile) is not None and graph.spec.layers[node.layer].mixer.kind  # type: ignore[index]
             for node in graph.nodes}
    if "mla" in forms:
        meta["mla"] = "absorbed"
    if "sparse_attention" in forms:
        meta["dsa"] = "sparse"
    return Graph(spec=graph.spec, nodes=tuple(out), layer_prefix=graph.layer_prefix, meta=meta)


def paged_tokens(context: int, profile: ExecutionProfile) -> int:
    """Tokens of KV a sequence at ``context`` occupies: whole pages under a paged KV cache."""
    if profile.kv_block is None:
        return context
    return -(-context // profile.kv_block) * profile.kv_block


__all__ = ["ALWAYS_BUILT_MASK", "FLASH_BLOCK", "HF_EAGER", "HF_SDPA", "PROFILES", "VLLM", "ExecutionProfile",
           "apply_engine", "causal_pairs", "compressed_pairs", "get_engine", "kept_pairs", "paged_tokens",
           "sdpa_local_mask_built", "sdpa_mask_built"]
