"""Scope names, and how a scope string selects graph nodes."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence

from .errors import QueryError
from .graph.node import ATTN as ATTN_BLOCK
from .graph.node import EMBED_GROUP, HEAD_GROUP, NORM_GROUP, Node, NodeKind
from .graph.node import MLP as MLP_BLOCK

TRANSFORMER = "transformer"  # everything but the task head (the seed's meaning; the default)
MODEL = "model"  # everything, lm_head included
ATTN = "attn"
MLP = "mlp"
NORM = "norm"
EMBED = "embed"
LM_HEAD = "lm_head"

HEAD_KINDS = frozenset({NodeKind.LM_HEAD})
NAMED: dict[str, str] = {
    TRANSFORMER: "all but the task head (lm_head)",
    MODEL: "everything, lm_head included",
    ATTN: "attention blocks (projections, rope, scores, softmax, context, q/k norms)",
    MLP: "MLP / MoE blocks (projections, activation, routers, experts)",
    NORM: "every normalisation layer",
    EMBED: "token (and learned position) embeddings",
    LM_HEAD: "the output projection to the vocabulary",
}
_LAYER = re.compile(r"^layers?\.(\d+)$")

NodeFilter = Callable[[Node], bool]


def node_filter(scope: str | None, nodes: Sequence[Node]) -> NodeFilter:
    """A predicate for the nodes in ``scope``; raises QueryError when the scope selects nothing."""
    if scope is None:
        scope = TRANSFORMER
    if not isinstance(scope, str) or not scope.strip():
        raise QueryError(f"scope must be a non-empty string; valid: {valid_scopes_text()}")
    key = scope.strip()
    low = key.lower()
    named: dict[str, NodeFilter] = {
        TRANSFORMER: lambda n: n.group != HEAD_GROUP,
        MODEL: lambda n: True,
        ATTN: lambda n: n.block == ATTN_BLOCK,
        MLP: lambda n: n.block == MLP_BLOCK,
        NORM: lambda n: n.group == NORM_GROUP,
        EMBED: lambda n: n.group == EMBED_GROUP,
        LM_HEAD: lambda n: n.group == HEAD_GROUP,
    }
    if low in named:
        return named[low]
    match = _LAYER.match(low)
    if match:
        index = int(match.group(1))
        layers = {n.layer for n in nodes if n.layer is not None}
        if index not in layers:
            raise QueryError(f"scope {scope!r}: no layer {index}; the model has layers 0..{max(layers, default=-1)}")
        return lambda n: n.layer == index
    if any(ch in key for ch in "*?["):
        def by_glob(n: Node) -> bool:
            return fnmatch.fnmatchcase(n.path, key) or fnmatch.fnmatchcase(n.module, key)
        pred = by_glob
    else:
        def by_prefix(n: Node) -> bool:
            return n.path == key or n.path.startswith((key + ".", key + ":"))
        pred = by_prefix
    if not any(pred(n) for n in nodes):
        raise QueryError(f"scope {scope!r} matches no node; valid: {valid_scopes_text()}")
    return pred


def valid_scopes_text() -> str:
    return ", ".join(NAMED) + ", layers.N, a module path (model.layers.3.self_attn) or a glob (*.k_proj)"
