"""Graph nodes: one unit of computation at a real module path, with its counts as formulas in B, S, P."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ops import Counts
from ..spec import ArchSpec


class NodeKind:
    """Node kinds (a node's role; scopes such as ``norm`` and ``lm_head`` select by kind)."""

    EMBEDDING = "embedding"
    POSITIONS = "positions"  # position ids and the attention mask, built once per forward
    ROTARY = "rotary"  # cos / sin tables
    NORM = "norm"
    LINEAR = "linear"
    ROPE = "rope"  # applying the rotary embedding to q and k
    KV_CACHE = "kv_cache"
    ATTN_SCORES = "attn_scores"  # q @ k^T, scaling, mask
    ATTN_SOFTMAX = "attn_softmax"
    ATTN_CONTEXT = "attn_context"  # probabilities @ v
    ACTIVATION = "activation"
    ELEMENTWISE = "elementwise"  # e.g. the gate * up product of a gated MLP
    RESIDUAL = "residual"
    ROUTER = "router"
    EXPERTS = "experts"  # routed experts of a MoE block (all experts' params, top-k experts' compute)
    LM_HEAD = "lm_head"


ATTN, MLP = "attn", "mlp"  # the blocks a node can belong to


@dataclass(frozen=True, slots=True)
class Node:
    path: str  # module path, or "<module path>:<part>" for computation a module does itself
    module: str  # the module whose forward runs these ops ("" is the root model)
    kind: str
    counts: Counts  # metric -> sympy expression in B, S, P (params and cache included)
    layer: int | None = None
    block: str | None = None  # ATTN / MLP / None


@dataclass(frozen=True)
class Graph:
    spec: ArchSpec
    nodes: tuple[Node, ...]
    layer_prefix: str  # e.g. "model.layers." (family-specific)
    meta: dict[str, object] = field(default_factory=dict)

    def node(self, path: str) -> Node:
        for n in self.nodes:
            if n.path == path:
                return n
        raise KeyError(path)
