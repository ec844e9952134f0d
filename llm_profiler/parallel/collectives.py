"""The collectives a parallel plan inserts into one forward, with their exact payload bytes.

Payloads are formulas in B, S, P at the rank's batch (B = the sequences one rank of a data-parallel
replica runs in that forward, i.e. a micro-batch under a pipeline), ``act_bytes`` per activation element:

| where | plan | collective | payload (bytes of the buffer each rank holds) |
|---|---|---|---|
| after the vocab-parallel embedding | tp | all-reduce (sp: reduce-scatter) | B*S*hidden*act |
| after each row-parallel linear (o_proj, a linear mixer's out_proj; down_proj or the experts) | tp | all-reduce | B*S*hidden*act |
| after a Mamba-1 mixer's row-parallel x_proj (mid-block) | tp | all-reduce | B*S*(dt_rank + 2*state)*act |
| the same with sequence parallelism | tp, sp | reduce-scatter + all-gather before the next block | B*S*hidden*act each |
| before the lm_head (sp) | tp, sp | all-gather of the final hidden states | B*S*hidden*act |
| after the column-parallel lm_head | tp | all-gather of the logits | rows*vocab_padded*act (rows = B*S, or B on the last position) |
| around the routed experts of a MoE layer | ep | all-to-all dispatch + combine | B*S*top_k*hidden*act each |
| between pipeline stages | pp | send / recv | B*S*hidden*act per stage boundary |
| at each layer's cache (cp, a prefill) | cp | all-gather of the keys and values | the layer's K / V held after the forward (tp-local heads), at the KV dtype |

An all-reduce / all-gather / reduce-scatter payload is the full (reduced or gathered) buffer; an
all-to-all's is what one rank sends in all (its tokens' top_k copies; (ep - 1) / ep of it leaves the rank).
Data parallelism inserts nothing into an inference forward. Megatron-LM (Shoeybi et al. 2019, section 3:
two all-reduces per layer in the forward; Korthikanti et al. 2022 for sequence parallelism), DeepSpeed-MoE
(Rajbhandari et al. 2022) and GShard (Lepikhin et al. 2020) for the expert all-to-all.
"""

from __future__ import annotations

from fractions import Fraction

from pydantic import BaseModel, ConfigDict

from ..facts import StateKind
from ..formula import B, Formula, S
from ..graph import Graph, NodeKind
from ..graph.node import ATTN
from .plan import ParallelPlan
from .rules import ROW
from .shard import layout, rule, stage_layers

ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL, SEND_RECV = (
    "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
KINDS = (ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL, SEND_RECV)


class Collective(BaseModel):
    """One collective of a forward: its kind, the group it runs in and after which node."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: str
    group: str  # "tp", "ep" or "pp"
    ranks: int  # ranks taking part (2 for a send / recv)
    after: str  # the node path it follows (pp: the last node of the sending stage)
    site: str  # embedding, attention, mlp, experts, lm_head or stage boundary
    stage: int  # the pipeline stage that runs it
    payload: Formula  # bytes, in B, S, P at the rank's batch

    def bytes_at(self, batch: int, seq: int, past: int) -> int:
        return int(self.payload(batch, seq, past))


def collectives(graph: Graph, plan: ParallelPlan, act_bytes: int, last_position: bool = True,
                kv_bytes: int | None = None) -> list[Collective]:
    """Every collective ``plan`` inserts into one forward of ``graph`` (the model's reference or engine graph,
    whole), in forward order. ``last_position``: the lm_head runs on the last position only (B rows)."""
    spec, tp, ep, cp = graph.spec, plan.tp, plan.ep, plan.cp
    kv_b = act_bytes if kv_bytes is None else kv_bytes
    lay = layout(spec, plan)
    hidden = B * S * spec.hidden_size * act_bytes * Fraction(1, cp)  # the rank's tokens (S / cp under cp)
    stages = stage_layers(spec.num_layers, plan.pp)
    stage_of = {layer: i for i, r in enumerate(stages) for layer in r}
    out: list[Collective] = []
    graph_nodes = {n.path: n for n in graph.nodes}

    def add(kind: str, group: str, ranks: int, after: str, stage: int, payload: Formula) -> None:
        node = graph_nodes[after.partition(":dispatch")[0].partition(":combine")[0]]
        site = ("stage boundary" if kind == SEND_RECV else "embedding" if node.kind == NodeKind.EMBEDDING
                else "lm_head" if node.kind == NodeKind.LM_HEAD else "experts" if node.kind == NodeKind.EXPERTS
                else "attention" if node.block == ATTN else "mlp")
        out.append(Collective(kind=kind, group=group, ranks=ranks, after=after, site=site, stage=stage, payload=payload))

    previous: tuple[int, str] | None = None  # (stage, path) of the last node seen
    for node in graph.nodes:
        if node.kind in (NodeKind.POSITIONS, NodeKind.ROTARY):
            continue  # every stage builds its own
        stage = stage_of[node.layer] if node.layer is not None else (0 if node.kind == NodeKind.EMBEDDING else plan.pp - 1)
        if previous is not None and stage != previous[0]:  # the activations cross to the next stage
            add(SEND_RECV, "pp", 2, previous[1], previous[0], hidden)
        previous = (stage, node.path)
        if cp > 1 and node.kind == NodeKind.KV_CACHE:  # every rank gathers the whole sequence's K / V
            held = sum(((s.held * lay.kv_fraction if s.kind == StateKind.KEYS_VALUES else s.held)
                        for s in node.facts.states), Formula())
            add(ALL_GATHER, "cp", cp, node.path, stage, held * kv_b)
        if ep > 1 and node.kind == NodeKind.EXPERTS:
            top_k = next(layer.ffn.top_k for layer in spec.layers if layer.moe)
            routed = B * S * top_k * spec.hidden_size * act_bytes
            routed = routed * Fraction(1, cp)  # the rank's S / cp tokens
            add(ALL_TO_ALL, "ep", ep, f"{node.path}:dispatch", stage, routed)
            add(ALL_TO_ALL, "ep", ep, f"{node.path}:combine", stage, routed)
        if tp == 1:
            continue
        if node.kind == NodeKind.EMBEDDING and plan.embedding == "vocab":
            add(REDUCE_SCATTER if plan.sp else ALL_REDUCE, "tp", tp, node.path, stage, hidden)
        elif node.kind == NodeKind.LM_HEAD:
            if plan.sp:
                add(ALL_GATHER, "tp", tp, node.path, stage, hidden)
            rows = B if last_position else B * S * Fraction(1, cp)
            add(ALL_GATHER, "tp", tp, node.path, stage, rows * lay.vocab_local * tp * act_bytes)
        elif node.kind == NodeKind.LINEAR and rule(node, lay) == ROW and node.facts.matmuls[0].n != spec.hidden_size:
            # a row-parallel linear inside a block (Mamba-1's x_proj): its own outputs all-reduced, mid-block
            width = Formula.of(node.facts.matmuls[0].n)
            add(ALL_REDUCE, "tp", tp, node.path, stage, B * S * width * act_bytes * Fraction(1, cp))
        elif node.kind == NodeKind.EXPERTS or (node.kind == NodeKind.LINEAR and rule(node, lay) == ROW
                                               and ".shared_expert" not in node.path):
            # the experts' rowwise down_proj ends its block as o_proj / down_proj do (a shared expert's down
            # is summed into the routed output first, then reduced with it)
            if plan.sp:
                add(REDUCE_SCATTER, "tp", tp, node.path, stage, hidden)
                add(ALL_GATHER, "tp", tp, node.path, stage, hidden)
            else:
                add(ALL_REDUCE, "tp", tp, node.path, stage, hidden)
    return out


__all__ = ["ALL_GATHER", "ALL_REDUCE", "ALL_TO_ALL", "KINDS", "REDUCE_SCATTER", "SEND_RECV", "Collective",
           "collectives"]
