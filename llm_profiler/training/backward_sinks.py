"""Backward of granite_swa / granitemoe_swa: the generic dense / MoE rules plus the ``:sink_scale`` node
(``families._granite_swa``), over R = B*heads*S rows of K keys and head_dim D, as autograd runs it:

- out = o * sink_scale[..., None]: grad o = g * s (R*D MULT); grad s = g * o (R*D MULT) summed over D
  (R*(D - 1) ADD, R written);
- s = sigmoid(lse - sinks): sigmoid_backward over R (R ADD, 2R MULT); the sub's sink gradient -g (R ADD) summed
  over the B*S tokens of the (1, heads, 1) view (heads*(B*S - 1) ADD, heads written);
- lse = logsumexp(scores): grad * exp(scores - lse): R*K ADD, R*K EXP, R*K MULT;
- the scores are read by the softmax and by logsumexp: R*K ADD (and written) on ``:scores``.
"""

from __future__ import annotations

from typing import Any

from ..formula import Formula
from ..graph.node import Node
from ..metrics import ACT, ADD, DIV, EXP, MULT, PARAMS
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base

SINK_TYPES: frozenset[str] = frozenset({"granite_swa", "granitemoe_swa"})


def _shape(node: Node) -> tuple[Formula, Formula, Formula]:
    """R, R*K and R*D of a ``:sink_scale`` node from its forward counts: one sigmoid DIV per row, logsumexp's
    K + 1 EXP and the sigmoid's one per row, one MULT per output element."""
    c = node.counts
    rows = Formula.of(c[DIV])
    return rows, Formula.of(c[EXP]) - 2 * rows, Formula.of(c[MULT])


def sink_scale_backward(node: Node) -> Counts:
    rows, scores, out = _shape(node)
    heads = Formula.of(node.counts[PARAMS])
    # the sum over D (out - rows), sigmoid_backward (rows), -g (rows), the sinks' sum, logsumexp's sub
    add = out + rows + heads * (base.TOKENS - 1) + scores
    # g * s, g * o, the sum, sigmoid_backward, -g, the sinks' sum, logsumexp's sub, exp and mul
    act = 2 * out + 3 * rows + heads + 3 * scores
    return Counts({MULT: 2 * out + 2 * rows + scores, ADD: add, EXP: scores, ACT: act})


def sinks_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (the generic rules, the sink scale's own and its scores read)."""
    spec: Any = model.spec
    group = spec.num_heads // spec.num_kv_heads
    moe = spec if hasattr(spec, "num_experts") else None
    acc = base.accumulations(model)
    nodes = {n.path: n for n in model.nodes}
    out: dict[str, Counts] = {}
    for node in model.nodes:
        if node.part == "sink_scale":
            counts = sink_scale_backward(node)
        else:
            counts = base.node_backward(node, spec.norm, spec.activation, group, moe)
            sink = nodes.get(node.path.replace(":scores", ":sink_scale")) if node.part == "scores" else None
            if sink is not None:
                scores = _shape(sink)[1]
                counts = counts + Counts({ADD: scores, ACT: scores})
        out[node.path] = Counts(counts + acc.get(node.path, Counts()))
    out[base.LOSS] = base.loss_backward(spec.vocab_size)
    return out
