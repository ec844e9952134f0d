"""Parallel plans (TP, PP, DP, EP, SP) applied to the graph: per-rank counts, collectives, their time.

- ``plan``: ``ParallelPlan``, ``make_plan`` (the shared defaults), ``check_plan``;
- ``rules``: the TP style of each linear (transformers' ``base_model_tp_plan``, one table);
- ``shard``: per-rank nodes from each node's facts; pipeline stages;
- ``collectives``: what a plan inserts into a forward, with payload bytes;
- ``comm``: collective time on a system's links; the pipeline bubble;
- ``predict``: ``per_rank`` (counts per node and collectives, to compare with a measured sharded run);
- ``search``: the plans of a system ranked by latency or throughput under the memory limit.

See docs/parallel.md.
"""

from .plan import ParallelPlan, PlanError, check_plan, make_plan
from .predict import RankPrediction, per_rank

__all__ = ["ParallelPlan", "PlanError", "RankPrediction", "check_plan", "make_plan", "per_rank"]
