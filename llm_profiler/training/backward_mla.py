"""Backward counts of multi-head latent attention (MLA) and the DeepSeek MoE: deepseek_v3, glm4_moe_lite,
deepseek_v2, and with DeepSeek sparse attention (DSA) deepseek_v32 and glm_moe_dsa.

The transformers 5.23 eager code (modeling_deepseek_v3.py; glm4_moe_lite is the same modular code) runs, per
layer and T = B*S tokens, H heads, q_lora rank qr, kv_lora rank kr, the nope / rope / value head dims dn, dr,
dv:

- q = q_b_proj(q_a_layernorm(q_a_proj(x))) (or q_proj(x)), split into q_pass (dn) and q_rot (dr);
  compressed = kv_a_proj_with_mqa(x), split into the latent (kr, normed by kv_a_layernorm) and ONE shared
  rope key k_rot (dr); rope on q_rot and k_rot; kv_b_proj expands the latent to k_nope and v per head; the
  keys are k_nope and k_rot **expanded** to the H heads (``k_rot.expand(-1, H, -1, -1)``), copied into one
  tensor (``new_empty`` then two ``copy_`` into its slices); then eager attention (no GQA: H KV heads).

Backward, as autograd runs it (``tools/autograd/derivatives.yaml``):

- the linears, norms, scores / softmax / context, o_proj: the rules of ``training.backward``;
- the interleaved rope (``rope_interleave``, DeepSeek-V3's default): q1, q2 = q[..., 0::2], q[..., 1::2];
  cat(q1*cos - q2*sin, q2*cos + q1*sin): each of the 4 muls by a table (no gradient) is one mul back (4 MULT
  per pair, the forward's MULT), the sub's second operand one neg (1 ADD per pair, half the forward's ADD),
  the add and the cat nothing. rotate_half (``rope_interleave`` false): the rule of ``training.backward``;
  DeepSeek-V2's complex rope, ``view_as_complex(x) * freqs_cis``: ``grad * conj(freqs_cis)``, one complex
  product per pair (4 MULT, 2 ADD: the forward's counts), q_rot and k_rot read once (no fan-out);
- the shared rope key expanded to H heads: ExpandBackward sums the H copies, (H - 1) * T * dr ADD, charged to
  ``:scores`` (the keys' reader, as GQA's repeat_kv; ``validation.parts`` names the expand ``scores``); the
  copies into the key tensor (CopySlices): data movement;
- the router (``mlp.gate``, V3: sigmoid scores + correction bias, grouped top-k, renormalisation, routed
  scaling; V2: softmax scores, top-k (its values scattered back: a move), routed scaling) and the batched_mm
  experts: ``training.backward.router_backward`` / ``experts_backward`` on the spec's
  router read as a ``graph.routers.Router``; routed + shared (``:combine``): an add, nothing back.

DSA (deepseek_v32, glm_moe_dsa): the lightning indexer (its own projections, scores and top-k) hands only the
top-k indices to the attention, as a mask added to the scores: no gradient flows into it, so autograd runs
none of its backward (its nodes: nothing; its weights get no gradient) and its reads of q's latent and of the
block's input add no accumulation; the mask add passes the gradient on.

Gradient accumulation (``training.backward.accumulations``' rules, with MLA's readers): the attention block's
input is read by q_a_proj (or q_proj) and kv_a_proj_with_mqa only (2 reads; q_b_proj and kv_b_proj read the
latents); q_a_proj's output by q_a_layernorm twice (T*qr ADD); kv_a_proj_with_mqa's latent by kv_a_layernorm
twice (T*kr ADD); the rotated parts, q_rot (T*H*dr) and k_rot (T*dr): interleaved, each of the two slices q1,
q2 is read twice (1 add of half the part each) and q_rot by the two slices (1 add of the part): 2 adds of the
part; rotate_half: x*cos and rotate_half's two slices, also 2 adds of the part. Charged to the linear that
wrote the split tensor (q_b_proj / q_proj, kv_a_proj_with_mqa).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from .. import ops
from ..formula import Formula
from ..graph.node import Node, NodeKind
from ..graph.routers import Router
from ..metrics import ACT, ADD, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base

MLA_TYPES: frozenset[str] = frozenset({"deepseek_v3", "glm4_moe_lite", "deepseek_v2", "deepseek_v32", "glm_moe_dsa",
                                       "minicpm3"})
_INNER = frozenset({"q_b_proj", "kv_b_proj"})  # linears of the attention block that read its latents


@dataclass(frozen=True)
class _MoE:
    """The fields ``router_backward`` / ``experts_backward`` read, from a DeepSeek spec."""

    num_experts: int
    experts_per_token: int
    hidden_size: int
    moe_intermediate_size: int
    router: Router
    norm_topk_prob: bool


def moe_view(spec: Any) -> _MoE:
    """DeepSeek's router as a ``graph.routers.Router``: V3 (``sigmoid_group``) sigmoid scores, a correction
    bias, grouped choice, renormalised when ``norm_topk_prob`` (+ 1e-20), always scaled."""
    if spec.router == "sigmoid_group":
        router = Router(scoring="sigmoid", correction_bias=True, grouped=True, n_group=spec.n_group,
                        topk_group=spec.topk_group, normalize=spec.norm_topk_prob, norm_eps=True, scaling=True)
    else:  # V2: softmax, top-k (its values scattered back: a move), * routed_scaling_factor; no renormalising
        router = Router(scoring="softmax", normalize=False, scaling=True)
    return _MoE(spec.n_routed_experts, spec.num_experts_per_tok, spec.hidden_size, spec.moe_intermediate_size,
                router, spec.norm_topk_prob)


def rope_backward(node: Node, style: str) -> Counts:
    """The rope node backwards: interleaved, 4 table muls (one mul back each) and one neg per pair (the
    forward's MULT, half its ADD); rotate_half: ``training.backward``'s rule."""
    c = node.counts
    if style == "complex":  # V2: grad * conj(freqs_cis), one complex product per pair, as the forward
        return ops.complex_mul(Formula.of(c[ADD]) / 2)
    if style != "interleave":
        return base.node_backward(node)
    mult, neg = Formula.of(c[MULT]), Formula.of(c[ADD]) / 2
    return Counts({MULT: mult, ADD: neg, ACT: mult + neg})


def scores_backward(node: Node, spec: Any) -> Counts:
    """scores' rule plus the shared rope key's expansion summed back: (H - 1) * T * dr ADD."""
    rope_key = base.TOKENS * spec.qk_rope_head_dim
    return Counts(base.node_backward(node) + Counts({ADD: rope_key * (spec.num_heads - 1), ACT: rope_key}))


def mla_node_backward(node: Node, spec: Any) -> Counts:
    name = node.path.rsplit(".", 1)[-1]
    if ".indexer" in node.path:
        return Counts()  # DSA's lightning indexer: only top-k indices leave it, no gradient flows back
    if node.kind == NodeKind.ROPE:
        return rope_backward(node, spec.rope_style)
    if node.kind == NodeKind.ATTN_SCORES:
        return scores_backward(node, spec)
    if node.kind in (NodeKind.ROUTER, NodeKind.EXPERTS):
        return base.node_backward(node, spec.norm, spec.activation, 1, moe_view(spec))
    if node.kind == NodeKind.ELEMENTWISE and name.endswith(":combine"):
        return Counts()  # routed + shared: the add passes the gradient to both
    return base.node_backward(node, spec.norm, spec.activation, 1)


def mla_accumulations(model: ModelProfile) -> dict[str, Counts]:
    """``training.backward.accumulations`` on the layers without MLA's inner linears and rope (the block reads
    the stream through q_a_proj / q_proj and kv_a_proj_with_mqa only), plus MLA's own reads (module
    docstring)."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    kept = tuple(n for n in model.nodes if n.kind != NodeKind.ROPE and n.path.rsplit(".", 1)[-1] not in _INNER
                 and ".indexer" not in n.path)
    out = base.accumulations_over(model, kept)
    t, dr = base.TOKENS, spec.qk_rope_head_dim  # type: ignore[attr-defined]
    fan_out = spec.rope_style != "complex"  # type: ignore[attr-defined]  # V2's complex rope reads q, k once

    add = partial(base.accumulate, out)

    for node in model.nodes:
        name = node.path.rsplit(".", 1)[-1]
        if name == "q_a_proj":
            add(node.path, t * spec.q_lora_rank)  # type: ignore[attr-defined]
        elif name in ("q_b_proj", "q_proj") and fan_out:
            add(node.path, 2 * t * spec.num_heads * dr)
        elif name == "kv_a_proj_with_mqa":
            add(node.path, t * spec.kv_lora_rank + (2 * t * dr if fan_out else 0))  # type: ignore[attr-defined]
    return out


def mla_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (own ops plus accumulations), and ``loss``."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    acc = mla_accumulations(model)
    return base.family_counts(model, lambda n: mla_node_backward(n, spec), acc)


__all__ = ["MLA_TYPES", "mla_accumulations", "mla_backward", "mla_node_backward", "moe_view"]
