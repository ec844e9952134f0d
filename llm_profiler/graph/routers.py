"""Top-k routers beyond the plain softmax one of graph/moe.py: sigmoid scores, a score-correction bias,
group-limited choice, an epsilon before renormalising, a routed scaling factor.

``Router`` names the quirks of one router; ``topk_router`` counts its forward op by op, following the eager
transformers code (GLM-4-MoE's ``Glm4MoeTopkRouter``, MiniMax-M2's ``MiniMaxM2TopKRouter``, OLMoE's
``OlmoeTopKRouter`` ...). ``RoutedMoESpec`` is a ``MoESpec`` carrying one, and ``routed_moe_parts`` the
whole sparse block (router, batched experts, shared experts and their combine) under module suffixes the
family gives. The correction bias is a buffer (``e_score_correction_bias``), not a parameter: it adds no
params, as transformers' ``parameters()`` holds none.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import ops
from ..formula import Formula
from ..ops import Counts
from .blocks import TOKENS, Part, linear
from .moe import MoESpec, expert_activation, gated_mlp_parts, routed_experts, shared_expert_mix
from .node import MLP, NodeKind


class Router(BaseModel):
    """One top-k router's quirks.

    scoring: softmax or sigmoid over the router logits, or ``topk_softmax``: the top-k logits chosen first,
    then a softmax over those k (Granite-MoE, JetMoE; no renormalisation: they already sum to one). correction_bias: the experts are chosen on
    scores + bias, their weights gathered from the unbiased scores. n_group / topk_group (grouped): the
    experts fall in n_group groups scored by the sum of their top-2; only the topk_group best groups are
    eligible. normalize: the top-k weights divided by their sum (``norm_eps``: sum + 1e-20 first).
    scaling: the weights times routed_scaling_factor (a multiply even when the factor is 1.0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scoring: Literal["softmax", "sigmoid", "topk_softmax"] = "softmax"
    correction_bias: bool = False
    grouped: bool = False
    n_group: int = Field(default=1, ge=1)
    topk_group: int = Field(default=1, ge=1)
    normalize: bool = True
    norm_eps: bool = False
    scaling: bool = False

    @model_validator(mode="after")
    def _check(self) -> Router:
        if self.grouped and self.topk_group > self.n_group:
            raise ValueError(f"topk_group ({self.topk_group}) must be <= n_group ({self.n_group})")
        return self


def topk_router(hidden: int, experts: int, top_k: int, router: Router, rows: Formula = TOKENS,
                logits: bool = True) -> Counts:
    """The router's forward on ``rows`` tokens, op by op:

    logits = F.linear(x, weight): rows x (hidden -> experts), no bias; scores: softmax over the experts
    (ops.softmax) or sigmoid (rows*E EXP, ADD, DIV); + correction bias: rows*E ADD;
    grouped: each group's top-2 (topk over E/G) summed, the topk_group best groups (topk over G), and
    ``~mask`` before masked_fill: rows*E logic; top-k over the experts (k max scans); with a correction
    bias the weights are gathered from the unbiased scores (rows*k, no arithmetic);
    topk_softmax: top-k of the logits, then a softmax over the k values, nothing else;
    normalize: sum of k (k-1 ADD), + 1e-20 (rows ADD) when norm_eps, rows*k DIV; scaling: rows*k MULT.
    params: experts * hidden (the router's ``weight``). ``logits`` False: without the logits linear (a
    family whose router holds it as a submodule, e.g. HunYuan's ``gate.wg``, puts it on its own node)."""
    E, k = experts, top_k
    out = linear(rows, hidden, E, bias=False) if logits else Counts()
    if router.scoring == "topk_softmax":  # topk(logits), softmax over the k chosen
        return out + ops.topk(rows, E, k) + ops.softmax(rows, k)
    out = out + (ops.softmax(rows, E) if router.scoring == "softmax" else ops.elementwise("sigmoid", rows * E))
    if router.correction_bias:
        out = out + ops.elementwise("add", rows * E)
    if router.grouped:
        G = router.n_group
        out = out + ops.topk(rows * G, E // G, 2) + ops.reduce_sum(rows * G, 2)
        out = out + ops.topk(rows, G, router.topk_group) + ops.elementwise("logic", rows * E)
    out = out + ops.topk(rows, E, k)
    if router.correction_bias:
        out = out + ops.elementwise("gather", rows * k)
    if router.normalize:
        out = out + ops.reduce_sum(rows, k)
        if router.norm_eps:
            out = out + ops.elementwise("add", rows)
        out = out + ops.elementwise("div", rows * k)
    if router.scaling:
        out = out + ops.elementwise("mul", rows * k)
    return out


class RoutedMoESpec(MoESpec):
    """A MoESpec whose router is ``router`` (its ``normalize`` replaces ``norm_topk_prob``); the shared
    experts (``shared_expert_intermediate_size`` wide in all) are one gated MLP added to the routed output."""

    router: Router = Router()


def routed_moe_parts(spec: RoutedMoESpec, block: str = ".mlp", router_name: str = ".gate",
                     experts_name: str = ".experts", shared_name: str | None = ".shared_experts",
                     top_k: int | None = None) -> list[Part]:
    """The parts of a sparse MoE block with ``spec.router``, in forward order: router, routed experts
    (batched_mm) and their activation, the shared experts, then routed + shared (rows*hidden ADD).
    ``shared_name`` None: the family builds its shared experts itself (they live outside the block).
    ``top_k``: this layer's top-k when it differs from ``spec.experts_per_token`` (per-layer top-k)."""
    h, E, inter = spec.hidden_size, spec.num_experts, spec.moe_intermediate_size
    k = spec.experts_per_token if top_k is None else top_k
    parts = [
        Part(block + router_name, block + router_name, NodeKind.ROUTER, topk_router(h, E, k, spec.router), MLP),
        Part(block + experts_name, block + experts_name, NodeKind.EXPERTS, routed_experts(h, inter, E, k), MLP),
        Part(f"{block}{experts_name}.act_fn", f"{block}{experts_name}.act_fn", NodeKind.ACTIVATION,
             expert_activation(spec.activation, inter, k), MLP),
    ]
    if spec.shared_expert_intermediate_size and shared_name is not None:
        parts += gated_mlp_parts(block + shared_name, h, spec.shared_expert_intermediate_size, spec.activation,
                                 bias=spec.mlp_bias)
        parts.append(Part(f"{block}:shared_mix", block, NodeKind.ELEMENTWISE, shared_expert_mix(h, False), MLP))
    return parts


__all__ = ["Router", "RoutedMoESpec", "routed_moe_parts", "topk_router"]
