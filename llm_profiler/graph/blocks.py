"""Building blocks shared by the families: each returns the counts of one node as formulas in B, S, P.

Every formula follows the eager transformers computation op by op (see docs/flops.md) and calls the op
table (llm_profiler.ops), the same table the measuring side maps aten ops through. A block returns a
``Part``: a node relative to its owner, so one layer's parts are built once and stamped onto every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import ops
from ..facts import NO_FACTS, Facts, State, StateKind, TensorClass, Weight
from ..formula import ZERO, B, Formula, P, S, fmin
from ..metrics import ACT, CACHE, KV, PARAMS
from ..ops import Counts
from .activations import activation_counts
from .node import ATTN, MLP, Node, NodeKind

TOKENS = B * S  # rows every token-wise op sees


def keys_full() -> Formula:
    """Keys a full-attention layer attends to: the cache (P) plus the new tokens (S)."""
    return P + S


def keys_sliding(window: int) -> Formula:
    """Keys a sliding-window layer attends to in transformers' DynamicSlidingWindowLayer.

    The layer keeps the last ``window - 1`` tokens, so after a prefill of P it holds min(P, window-1)
    and attends to those plus the S new ones.
    """
    return fmin(P, window - 1) + S


def cached_full() -> Formula:
    return P + S


def cached_sliding(window: int) -> Formula:
    """Tokens a sliding-window layer holds after the forward: the last window-1 of P+S."""
    return fmin(P + S, window - 1)


@dataclass(frozen=True, slots=True)
class Part:
    """A node relative to an owner prefix: ``suffix`` is appended to the prefix for the path,
    ``module_suffix`` for the module whose forward runs the ops."""

    suffix: str
    module_suffix: str
    kind: str
    counts: Counts
    block: str | None = None
    group: str | None = None  # scope group when it differs from the kind's (Node.group_tag)
    label: str | None = None  # report label when it differs from the kind's (Node.label_tag)
    facts: Facts = field(init=False, repr=False, compare=False)  # completed once, shared by every layer

    def __post_init__(self) -> None:
        object.__setattr__(self, "facts", complete_facts(self.kind, self.counts))

    def at(self, prefix: str, layer: int | None = None) -> Node:
        return Node(
            path=_join(prefix, self.suffix),
            module=_join(prefix, self.module_suffix),
            kind=self.kind,
            counts=self.counts,
            layer=layer,
            block=self.block,
            facts=self.facts,
            group_tag=self.group,
            label_tag=self.label,
        )


TWO_OPERAND_KINDS = frozenset({NodeKind.RESIDUAL, NodeKind.ELEMENTWISE})


def complete_facts(kind: str, counts: Counts) -> Facts:
    """A node's facts: what its counts carry, plus the defaults every node of a kind has.

    - reads: a two-operand elementwise node (residual add, gate product) reads two tensors of its output's
      size; any other node without explicit reads one (``ops.reads_of``).
    - weights: parameters the facts do not name (norm scales, biases of non-linear nodes) are one vector
      of ``params`` elements.
    """
    facts = counts.facts or NO_FACTS
    reads = facts.reads
    if reads is None:
        act = Formula.of(counts.get(ACT, 0))
        reads = 2 * act if kind in TWO_OPERAND_KINDS else act
    weights = facts.weights
    named = sum(w.numel for w in weights if not w.tied)
    params = int(Formula.of(counts.get(PARAMS, 0)))
    if params > named:
        weights = weights + (Weight("weight", (params - named,), TensorClass.VECTOR),)
    return replace(facts, reads=reads, weights=weights)


def _join(prefix: str, suffix: str) -> str:
    if not prefix:
        return suffix.lstrip(".")
    return prefix + suffix


def with_params(counts: Counts, params: int) -> Counts:
    out = Counts(counts)
    out.facts = counts.facts
    out[PARAMS] = Formula.const(params)
    return out


def fusable(counts: Counts, reads: Formula, writes: Formula) -> Counts:
    """Counts of an elementwise chain, with what one fused kernel would read (its distinct inputs) and write
    (its final output) instead of every op's tensor: ``Facts.fused_reads`` / ``fused_writes``."""
    return counts.with_facts(fused_reads=Formula.of(reads), fused_writes=Formula.of(writes))


# --- nodes --------------------------------------------------------------------------------------


def embedding(vocab: int, hidden: int, rows: Formula = TOKENS) -> Counts:
    """A lookup: no arithmetic, writes rows x hidden; vocab x hidden parameters, of which it reads the
    gathered rows (the token ids it reads are not counted)."""
    table = Weight("weight", (vocab, hidden), TensorClass.EMBEDDING, rows_read=Formula.of(rows))
    return with_params(ops.elementwise("gather", rows * hidden), vocab * hidden).with_facts(
        weights=(table,), reads=ZERO)


def linear(rows: Formula, in_features: int, out_features: int, bias: bool,
           tensor_class: str = TensorClass.MATRIX, tied: bool = False) -> Counts:
    """nn.Linear on ``rows`` tokens: one (rows x in) @ (in x out) product, the bias fused (addmm).

    Reads its (out x in) weight (``tensor_class`` picks the storage dtype; a ``tied`` weight belongs to
    another node: no params here) and the bias vector."""
    weights = [Weight("weight", (out_features, in_features), tensor_class, tied=tied)]
    if bias:
        weights.append(Weight("bias", (out_features,), TensorClass.VECTOR))
    params = (0 if tied else in_features * out_features) + (out_features if bias else 0)
    out = with_params(ops.matmul(rows, out_features, in_features, bias=bias), params)
    return out.with_facts(weights=tuple(weights))


def lm_head(rows: Formula, hidden: int, vocab: int, tied: bool, bias: bool = False) -> Counts:
    """The output projection: a linear whose (vocab x hidden) weight is kept at the embedding dtype (weight
    quantizers leave it), the embedding's own matrix when ``tied``."""
    return linear(rows, hidden, vocab, bias, TensorClass.EMBEDDING, tied=tied)


def rms_norm(rows: Formula, n: int, plus_one: bool = False) -> Counts:
    """Eager RMSNorm over n features for ``rows`` rows, with a learned scale of n parameters."""
    return fusable(with_params(ops.rms_norm(rows, n, weight=True, plus_one=plus_one), n), rows * n, rows * n)


def layer_norm(rows: Formula, n: int, bias: bool = True) -> Counts:
    """nn.LayerNorm (aten.native_layer_norm) over n features, weight and optional bias."""
    return fusable(with_params(ops.layer_norm(rows, n, weight=True, bias=bias), n * (2 if bias else 1)),
                   rows * n, rows * n)


def rotary_table(rotary_dim: int, rows: Formula = S) -> Counts:
    """cos / sin tables of the rotary embedding (LlamaRotaryEmbedding.forward), for ``rows`` positions:

    freqs = position_ids[..., None] * inv_freq: rows * rotary_dim/2 MULT;
    emb = cat(freqs, freqs) (a copy); cos(emb), sin(emb): 2 * rows * rotary_dim EXP;
    each times attention_scaling: 2 * rows * rotary_dim MULT.
    """
    half = rotary_dim // 2
    return (
        ops.elementwise("mul", rows * half)
        + ops.elementwise("cos", rows * rotary_dim) + ops.elementwise("mul", rows * rotary_dim)
        + ops.elementwise("sin", rows * rotary_dim) + ops.elementwise("mul", rows * rotary_dim)
    )


def apply_rope(heads: int, rotary_dim: int, rows: Formula = TOKENS) -> Counts:
    """apply_rotary_pos_emb for one of q / k with ``heads`` heads: x * cos + rotate_half(x) * sin.

    Per head and token: x * cos: d MULT; rotate_half negates half: d/2 ADD (neg); * sin: d MULT; +: d ADD.
    """
    n = rows * heads * rotary_dim
    out = (
        ops.elementwise("mul", n) + ops.elementwise("neg", rows * heads * (rotary_dim // 2))
        + ops.elementwise("mul", n) + ops.elementwise("add", n)
    )
    return fusable(out, n, n)  # a fused rotary kernel rotates q / k in place


def kv_cache(kv_heads: int, head_dim: int, cached_tokens: Formula, v_head_dim: int | None = None,
             kind: str = StateKind.KEYS_VALUES) -> Counts:
    """K and V of every cached token: B * kv_heads * (head_dim + v_head_dim) * tokens elements held (the
    update is a copy); the S new tokens' K and V are appended (written) this forward."""
    per_token = B * kv_heads * (head_dim + (head_dim if v_head_dim is None else v_head_dim))
    out = state_cache(kind, held=per_token * cached_tokens, appended=per_token * S)
    # DynamicCache.update: torch.cat([cached, new]) re-copies the tokens held before this forward
    return out.with_facts(cache_copies=per_token * cached_tokens.substitute({"S": 0}))


# The kinds the ``kv`` metric counts: what an attention layer caches (MLA caches its latent instead of K, V).
KV_KINDS = frozenset({StateKind.KEYS_VALUES, StateKind.LATENT})


def state_cache(kind: str, held: Formula, appended: Formula = ZERO, read: Formula = ZERO) -> Counts:
    """One kind of cache state (``facts.StateKind``) a layer holds after the forward: ``held`` elements,
    ``appended`` of them written this forward, ``read`` of them read. No arithmetic (the update is a copy).
    ``cache`` counts every kind; ``kv`` only the attention's keys and values (``KV_KINDS``)."""
    out = Counts({CACHE: held, KV: held}) if kind in KV_KINDS else Counts({CACHE: held})
    return out.with_facts(states=(State(kind, read=read, appended=appended, held=held),), reads=ZERO)


def state_read(kind: str, elements: Formula) -> Counts:
    """Reading ``elements`` of cache state (no arithmetic)."""
    return Counts().with_facts(states=(State(kind, read=elements),), reads=ZERO)


def attn_scores(heads: int, head_dim: int, keys: Formula, scale: bool = True, mask: bool = True,
                kv_heads: int | None = None) -> Counts:
    """Eager scores: (q @ k^T) per head as a bmm of B*heads (S x d) @ (d x keys), times the scaling,
    plus the additive mask: B*heads*S*keys MULT and ADD each.

    The keys: ``kv_heads`` given, read from the cache (B*kv_heads*keys*d elements of state); None, an
    activation of B*heads*keys*d elements (e.g. MLA's keys decompressed from the latent)."""
    out = ops.matmul(S, keys, head_dim, batch=B * heads) + _keys_or_values(heads, head_dim, keys, kv_heads)
    n = B * heads * S * keys
    if scale:
        out = out + ops.elementwise("mul", n)
    if mask:
        out = out + ops.elementwise("add", n)
    return out


def attn_softmax(heads: int, keys: Formula) -> Counts:
    """Softmax over the keys of every (batch, head, query) row."""
    return ops.softmax(B * heads * S, keys)


def attn_context(heads: int, head_dim: int, keys: Formula, kv_heads: int | None = None) -> Counts:
    """probs @ v per head: a bmm of B*heads (S x keys) @ (keys x d); the values read as ``attn_scores``
    reads the keys."""
    return ops.matmul(S, head_dim, keys, batch=B * heads) + _keys_or_values(heads, head_dim, keys, kv_heads)


def _keys_or_values(heads: int, head_dim: int, keys: Formula, kv_heads: int | None) -> Counts:
    if kv_heads is None:
        return Counts().with_facts(reads=B * heads * keys * head_dim)
    out = state_read(StateKind.KEYS_VALUES, B * kv_heads * keys * head_dim)
    if kv_heads == heads:
        return out
    # grouped KV heads: eager attention's repeat_kv copies them to every query head, which the bmm reads
    return out.with_facts(copies=B * heads * keys * head_dim)


def causal_mask(keys: Formula, sliding_window: int | None = None, expand: bool = True) -> Counts:
    """One call of transformers' create_causal_mask / create_sliding_window_causal_mask (eager):

    cache_position = arange(S) + P: S ADD; kv_idx = arange(keys) + offset: keys ADD;
    causal: kv_idx <= q_idx over S x keys: S*keys CMP;
    sliding overlay: q_idx - window: S ADD; kv_idx > q_idx - window: S*keys CMP; two bitwise ANDs
    (with the all-true start and with the causal part): 2*S*keys CMP;
    where(mask, 0, min) expands over the batch: writes B*S*keys (no arithmetic). ``expand=False``: the boolean
    mask as SDPA takes it (no where, no batch expansion).
    """
    out = ops.elementwise("add", S) + ops.elementwise("add", keys) + ops.elementwise("cmp", S * keys)
    if sliding_window is not None:
        out = out + ops.elementwise("sub", S) + ops.elementwise("cmp", S * keys) + ops.elementwise("logic", 2 * S * keys)
    return out + ops.elementwise("select", B * S * keys) if expand else out


def position_ids() -> Counts:
    """position_ids = arange(S) + past_seen_tokens: S ADD (once per forward, in the base model)."""
    return ops.elementwise("add", S)


def residual(hidden: int, count: int = 2) -> Counts:
    """``count`` residual additions of B*S*hidden each."""
    n = count * TOKENS * hidden
    return fusable(ops.elementwise("add", n), 2 * n, n)


def activation(name: str, n: Formula) -> Counts:
    """The Hugging Face activation ``name`` (graph.activations.HF_ACTIVATIONS) over n elements."""
    return fusable(activation_counts(name, n), n, n)


def gate_product(intermediate: int) -> Counts:
    """act(gate) * up in a gated MLP: B*S*intermediate MULT."""
    n = TOKENS * intermediate
    return fusable(ops.elementwise("mul", n), 2 * n, n)


__all__ = ["ATTN", "MLP", "NodeKind", "Part"]
