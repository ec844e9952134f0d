"""Graph nodes: one unit of computation at a real module path, with its counts and the facts behind them.

A node carries what the family knew when it built it, so nothing downstream re-derives it:

- ``counts``: metric -> ``Formula`` in B, S, P (the op table's arithmetic, act, params, active params,
  cache);
- ``weights``: the tensors it reads (shape, tensor class for the storage dtype, tied or not, rows or
  experts actually read);
- ``matmuls``: its matrix products as (m, n, k, batch) formulas;
- ``reads``: activation elements it reads (``None``: as many as it writes);
- ``states``: what it reads from, appends to and holds in the cache, per kind of state.

Three separate tags: ``kind`` is what the node computes (traffic and roofline rules key on it),
``block`` / ``group`` what scope selects it (attn, mlp, embed, norm, head), ``label`` how a report names
it outside the layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..facts import NO_FACTS, Facts
from ..ops import Counts
from ..spec import ArchSpec


class NodeKind:
    """Node kinds (what a node computes)."""

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
# Scope groups of nodes outside the attention / MLP blocks (scopes ``embed``, ``norm``, ``lm_head``).
EMBED_GROUP, NORM_GROUP, HEAD_GROUP = "embed", "norm", "head"
_DEFAULT_GROUP = {NodeKind.EMBEDDING: EMBED_GROUP, NodeKind.NORM: NORM_GROUP, NodeKind.LM_HEAD: HEAD_GROUP}
_DEFAULT_LABEL = {
    NodeKind.EMBEDDING: "embed",
    NodeKind.POSITIONS: "positions & mask",
    NodeKind.ROTARY: "rotary tables",
    NodeKind.NORM: "final norm",
    NodeKind.LM_HEAD: "lm_head",
}


@dataclass(frozen=True, slots=True)
class Node:
    path: str  # module path, or "<module path>:<part>" for computation a module does itself
    module: str  # the module whose forward runs these ops ("" is the root model)
    kind: str
    counts: Counts  # metric -> Formula in B, S, P (params and cache included)
    layer: int | None = None
    block: str | None = None  # ATTN / MLP / None
    facts: Facts = field(default=NO_FACTS)
    group_tag: str | None = None  # scope group when it differs from the kind's (e.g. an embedding add)
    label_tag: str | None = None  # report label outside the layers when it differs from the kind's

    @property
    def group(self) -> str | None:
        return self.group_tag if self.group_tag is not None else _DEFAULT_GROUP.get(self.kind)

    @property
    def label(self) -> str:
        return self.label_tag or _DEFAULT_LABEL.get(self.kind, self.kind)

    @property
    def part(self) -> str | None:
        """The part name of computation a module runs itself (``scores`` of ``...self_attn:scores``)."""
        return self.path.rsplit(":", 1)[1] if ":" in self.path else None


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
