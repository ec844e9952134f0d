"""Experts that gather their tokens by index and scatter the results back with ``index_add`` (DBRX's
``DbrxExperts``, JetMoE's ``JetMoeParallelExperts`` / ``JetMoeMoE`` / ``JetMoeMoA``), op by op.

These modules have no batched-experts implementation in transformers 5.23: each expert runs one matmul over
the rows routed to it (a Python loop), so the per-expert row counts are data. The totals are not: every token
sends its rows to exactly top_k experts, so over all experts the matmuls multiply B*S*top_k rows, and every
count below is a formula in B, S, P whatever the routing (the CPU runs validate it with real routing).
Bookkeeping on the integer routing tensors is counted as the measuring side counts any op: JetMoE's
per-expert row counts (a sum), its sort of the expert ids, DBRX's expert-mask sums and comparisons.
"""

from __future__ import annotations

from .. import ops
from ..facts import TensorClass, Weight
from ..formula import Formula
from ..metrics import ACTIVE_PARAMS
from ..ops import Counts
from .blocks import with_params


def grouped_experts(pairs: Formula, in_features: int, out_features: int, experts: int, top_k: int,
                    name: str = "weight") -> Counts:
    """Every expert's (rows x in) @ (in x out) product over the rows routed to it, which sum to ``pairs``
    (B*S*top_k): one (pairs x in) @ (in x out) product in all. params: every expert's matrix; active_params:
    top_k of them (what one token uses). Reads min(experts, pairs) experts' weights (``Weight.pairs``)."""
    one = in_features * out_features
    out = with_params(ops.matmul(pairs, out_features, in_features), experts * one)
    out[ACTIVE_PARAMS] = Formula.const(top_k * one)
    return out.with_facts(weights=(Weight(name, (experts, one), TensorClass.EXPERTS, pairs=pairs),))


def topk_gating(rows: Formula, experts: int, top_k: int) -> Counts:
    """JetMoE's ``JetMoeTopKGating.forward`` after its logits linear, on ``rows`` tokens:

    topk(logits, k) (ops.topk); softmax over the k kept; gates = zeros.scatter(1, idx, 1) and .long() (moves);
    .sum(0), the rows routed to each expert: experts*(rows-1) ADD; sort of the rows*k expert ids, one row
    (ops.sort); index // top_k (div, rounding trunc): rows*k DIV; the gates gathered in that order (a move).
    """
    pairs = rows * top_k
    return (ops.topk(rows, experts, top_k) + ops.softmax(rows, top_k) + ops.reduce_sum(experts, rows)
            + ops.sort(1, pairs) + ops.elementwise("div", pairs))


def weighted_scatter(pairs: Formula, width: int, rows: Formula, bias: bool) -> Counts:
    """Expert outputs times their gate (pairs*width MULT), scattered back to token order by
    zeros.index_add(0, index, out) (pairs*width ADD, ops.index_add), then + the block's bias (rows*width ADD)."""
    out = ops.elementwise("mul", pairs * width) + ops.index_add(pairs * width)
    return out + ops.elementwise("add", rows * width) if bias else out


__all__ = ["grouped_experts", "topk_gating", "weighted_scatter"]
