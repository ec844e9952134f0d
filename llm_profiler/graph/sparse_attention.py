"""DeepSeek Sparse Attention (DSA): the lightning indexer and its key cache, as transformers 5.23 computes them
(``DeepseekV32Indexer`` in modeling_deepseek_v32.py; ``GlmMoeDsaIndexer`` differs only in its RoPE).

Per layer, with Hi = ``index_n_heads``, Di = ``index_head_dim``, r = the rotary dims (``qk_rope_head_dim``),
K = ``index_topk`` and T = P + S keys, the indexer module ``a`` (``self_attn.indexer``) runs:

- ``wq_b``: q_lora_rank -> Hi*Di on the query latent ``q_resid`` (the MLA's ``q_a_layernorm`` output);
- ``wk``: hidden -> Di (ONE key head shared by the Hi query heads), ``k_norm``: nn.LayerNorm(Di) with bias;
- ``:rope`` on the first r dims of the Hi query heads and of the one key (rotate_half for DeepSeek-V3.2,
  interleaved pairs for GLM-MoE-DSA);
- ``:indexer_keys``: the Di-wide key of every token is appended to the layer's ``indexer_keys`` cache
  (``DynamicIndexedLayer.update_indexer``, a cat): B * Di * (P + S) elements held;
- ``weights_proj``: hidden -> Hi (a per-head weight of each query token);
- ``:scores``: q @ k^T per query token as a bmm of B*S (Hi x Di) @ (Di x T) (torch.matmul broadcasts the
  one key head), * softmax_scale, ReLU, the head weights * Hi**-0.5, the weighted head sum as a bmm of B*S
  (1 x Hi) @ (Hi x T), + the causal mask (eager's additive float mask): B*S*T;
- ``:topk``: top min(K, T) of the T index scores per query token.

The chosen indices only mask the attention (``scatter`` and ``masked_fill``: data movement, no arithmetic):
transformers' eager attention still computes the full S x T scores and context of every head, so the MLA
attention's counts are the dense ones over all T keys. A sparse kernel (FlashMLA's sparse decoding / prefill,
vLLM's and SGLang's DSA backends) computes only min(K, T) keys per query instead.
"""

from __future__ import annotations

from typing import Literal

from .. import ops
from ..facts import StateKind
from ..formula import B, Formula, P, S, fmin
from ..metrics import ACT, CMP
from ..ops import Counts
from . import blocks as blk
from .blocks import Part
from .node import ATTN, NodeKind

IndexerRope = Literal["rotate_half", "interleave"]


def index_keys() -> Formula:
    """Keys the indexer scores: every cached token and the new ones, P + S."""
    return P + S


def topk_counts(rows: Formula, n: Formula, topk: int) -> Counts:
    """``ops.topk``'s formula, k successive max scans (k*(2n-k-1)/2 CMP per row; k values and k indices
    written), for the k = min(n, topk) an index top-k keeps of n scores.

    Written linear in the one min atom so that a generation's sum over decode steps stays a closed form:
    with m = min(n, K), m^2 = (n + K) * m - n * K for every n (n <= K: n^2; n > K: K^2), so
    m * (2n - m - 1) / 2 = (m * (n - K - 1) + n * K) / 2, an integer (n(n-1)/2 or K(2n-K-1)/2)."""
    m = fmin(n, topk)
    return Counts({CMP: rows * (m * (n - topk - 1) + n * topk) / 2, ACT: 2 * rows * m})


def indexer_key_cache(head_dim: int, cached: Formula) -> Counts:
    """The indexer's key cache (``indexer_keys``): B * Di elements per token held; the S new keys appended."""
    per_token = B * head_dim
    return blk.state_cache(StateKind.INDEXER_KEYS, held=per_token * cached, appended=per_token * S)


def indexer_rope(style: IndexerRope, heads: int, rope_dim: int) -> Counts:
    """The rotary embedding on the first ``rope_dim`` dims of ``heads`` heads (per token)."""
    if style == "rotate_half":
        return blk.apply_rope(heads, rope_dim)
    pairs = blk.TOKENS * heads * (rope_dim // 2)  # q1*cos - q2*sin, q2*cos + q1*sin: 4 MULT + 2 ADD per pair
    return ops.elementwise("mul", 4 * pairs) + ops.elementwise("sub", pairs) + ops.elementwise("add", pairs)


def index_scores(heads: int, head_dim: int, keys: Formula) -> Counts:
    """The index scores of every query token against ``keys`` cached indexer keys (module docstring)."""
    rows = B * S
    n = rows * heads * keys
    out = ops.matmul(heads, keys, head_dim, batch=rows)  # q (Hi x Di) @ k^T (Di x T) per token
    out = out + ops.elementwise("mul", n) + ops.elementwise("relu", n)  # * softmax_scale, ReLU
    out = out + ops.elementwise("mul", rows * heads)  # weights_proj(x) * Hi**-0.5
    out = out + ops.matmul(1, keys, heads, batch=rows)  # weights (1 x Hi) @ relu scores (Hi x T)
    out = out + ops.elementwise("add", rows * keys)  # + the causal mask
    # the keys come from the indexer cache (B * T * Di elements read)
    return out + blk.state_read(StateKind.INDEXER_KEYS, B * keys * head_dim)


def lightning_indexer(a: str, *, hidden: int, q_lora_rank: int, heads: int, head_dim: int, rope_dim: int,
                      topk: int, rope: IndexerRope) -> list[Part]:
    """The lightning indexer of attention module ``a`` + ``.indexer`` (module docstring), in forward order."""
    t, keys = blk.TOKENS, index_keys()
    i = f"{a}.indexer"

    def node(suffix: str, kind: str, counts: Counts) -> Part:
        return Part(suffix, suffix.partition(":")[0], kind, counts, ATTN)

    return [
        node(f"{i}.wq_b", NodeKind.LINEAR, blk.linear(t, q_lora_rank, heads * head_dim, False)),
        node(f"{i}.wk", NodeKind.LINEAR, blk.linear(t, hidden, head_dim, False)),
        node(f"{i}.k_norm", NodeKind.NORM, blk.layer_norm(t, head_dim)),
        node(f"{i}:rope", NodeKind.ROPE, indexer_rope(rope, heads, rope_dim) + indexer_rope(rope, 1, rope_dim)),
        node(f"{i}:indexer_keys", NodeKind.KV_CACHE, indexer_key_cache(head_dim, blk.cached_full())),
        node(f"{i}.weights_proj", NodeKind.LINEAR, blk.linear(t, hidden, heads, False)),
        node(f"{i}:scores", NodeKind.ELEMENTWISE, index_scores(heads, head_dim, keys)),
        node(f"{i}:topk", NodeKind.ELEMENTWISE, topk_counts(B * S, keys, topk)),
    ]
