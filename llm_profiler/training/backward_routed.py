"""Backward counts of flex_olmo, apertus, dbrx and jetmoe (transformers 5.23, eval mode, use_cache=True).

flex_olmo (modeling_flex_olmo.py): olmoe's attention (q/k norms over all heads, before rope) and batched_mm
experts, in olmo2's post-norm layout: ``x + post_attention_layernorm(attn(x))``, ``x + post_feedforward_
layernorm(moe(x))``. The node rules are olmoe's (``training.backward.node_backward``); the accumulations
``training.backward.accumulations``', with the MoE's post-norm reading the experts' output (the top-k sum,
T*h): the eager RMSNorm reads it twice, T*h ADD on the experts node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base

FLEX_OLMO_TYPES: frozenset[str] = frozenset({"flex_olmo"})


@dataclass(frozen=True)
class _Nodes:
    """A model seen through a subset of its nodes (what ``accumulations`` reads: spec and nodes)."""

    spec: Any
    nodes: tuple[Node, ...]


def _add(acc: dict[str, Counts], path: str, n: Any) -> None:
    acc[path] = acc.get(path, Counts()) + Counts({ADD: n, ACT: n})


def _generic(node: Node, spec: Any) -> Counts:
    group = spec.num_heads // spec.num_kv_heads if spec.num_kv_heads else 1
    return base.node_backward(node, spec.norm, spec.activation, group, spec if hasattr(spec, "num_experts") else None)


def _with_loss(model: ModelProfile, rule: Any, acc: dict[str, Counts]) -> dict[str, Counts]:
    out = {n.path: Counts(rule(n) + acc.get(n.path, Counts())) for n in model.nodes}
    out[base.LOSS] = base.loss_backward(model.spec.vocab_size)
    return out


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
    acc = dict(base.accumulations(cast(ModelProfile, _Nodes(spec, kept))))
    reads = 2 if spec.norm == "rmsnorm" else 1
    for node in model.nodes:
        if node.kind == NodeKind.EXPERTS and node.layer in post:
            _add(acc, node.path, (reads - 1) * base.TOKENS * spec.hidden_size)
    return _with_loss(model, lambda node: _generic(node, spec), acc)


__all__ = ["FLEX_OLMO_TYPES", "flex_olmo_backward"]
