"""The per-rank prediction of a plan at one shape: counts of every node one rank runs, and the collectives.

``per_rank(model, plan, batch, seq, past)`` is what a measured sharded run is compared with: for pipeline
``stage`` (default the first), every node of that stage with its per-rank counts (the profile's metrics:
macs, add, mult, div, sqrt, exp, cmp, act, params, active_params, cache) and the rule that sharded it, and
every collective of the forward with its kind, group, ranks and exact payload bytes. ``batch`` is the
global batch; one rank runs batch / (dp x micro_batches) sequences per forward. ``seq`` is the whole prompt:
under ``cp`` a rank's counts are its S / cp share (``shard.context_split``).

For a comparison with transformers' own tensor parallelism (``tp_plan="auto"``), use
``make_plan(tp=N)`` (transformers 5.23 shards the embedding by vocabulary rows too), ``engine="hf-eager"``
and ``lm_head="all"`` (the defaults here), and ``act_dtype`` the run's dtype (``fp32`` on a CPU).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .. import metrics as M
from ..engines import HF_EAGER, get_engine
from ..hardware.dtypes import get_dtype
from ..profile import ModelProfile, metric_formula, profile_model, with_engine
from .collectives import collectives
from .plan import ParallelPlan, check_batch, check_plan, check_seq
from .shard import layout, rank_model, rule


class RankNode(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    kind: str
    rule: str  # how it was sharded (shard.rule): column, row, q_heads, ..., replicated
    counts: dict[str, int]


class RankCollective(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    group: str
    ranks: int
    after: str
    site: str
    stage: int
    payload_bytes: int


class RankPrediction(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    model: str
    plan: ParallelPlan
    engine: str
    batch: int  # global
    rank_batch: int  # sequences one rank runs per forward
    seq: int
    past: int
    stage: int
    act_dtype: str
    nodes: list[RankNode]
    collectives: list[RankCollective]
    notes: list[str] = []

    def total(self, metric: str) -> int:
        return sum(n.counts.get(metric, 0) for n in self.nodes)


def per_rank(source: Any, plan: ParallelPlan, batch: int, seq: int, past: int = 0, *, stage: int = 0,
             act_dtype: str = "bf16", engine: str | None = HF_EAGER, lm_head: str = "all") -> RankPrediction:
    """One rank's counts per node and the forward's collectives (module docstring); ``engine`` defaults to
    the transformers forward (hf-eager), ``lm_head`` to every position (a plain forward)."""
    base = source if isinstance(source, ModelProfile) else profile_model(source)
    model = with_engine(base, get_engine(engine))
    notes = check_plan(plan, model.spec)
    rank_b = check_batch(plan, batch)
    check_seq(plan, seq)
    ranked = rank_model(model, plan, stage, lm_head == "last")
    lay = layout(model.spec, plan)
    reference = {n.path: n for n in model.nodes}
    nodes = []
    for node in ranked.nodes:
        values = {m: int(metric_formula(node.counts, m)(rank_b, seq, past)) for m in M.STORED}
        if lm_head == "last" and node.kind == "lm_head":
            values = {m: int(metric_formula(node.counts, m)(rank_b, 1, past)) for m in M.STORED}
        nodes.append(RankNode(path=node.path, kind=node.kind, rule=rule(reference[node.path], lay), counts=values))
    act = get_dtype(act_dtype).bits // 8
    colls = [RankCollective(kind=c.kind, group=c.group, ranks=c.ranks, after=c.after, site=c.site, stage=c.stage,
                            payload_bytes=c.bytes_at(rank_b, seq, past))
             for c in collectives(model.graph, plan, act, last_position=lm_head == "last")]
    return RankPrediction(model=model.spec.name or model.spec.model_type, plan=plan, engine=model.engine, batch=batch,
                          rank_batch=rank_b, seq=seq, past=past, stage=stage, act_dtype=get_dtype(act_dtype).name,
                          nodes=nodes, collectives=colls, notes=notes)


__all__ = ["RankCollective", "RankNode", "RankPrediction", "per_rank"]
