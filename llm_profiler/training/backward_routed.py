"""Backward counts of flex_olmo, apertus, dbrx and jetmoe (transformers 5.23, eval mode, use_cache=True).

flex_olmo (modeling_flex_olmo.py): olmoe's attention (q/k norms over all heads, before rope) and batched_mm
experts, in olmo2's post-norm layout: ``x + post_attention_layernorm(attn(x))``, ``x + post_feedforward_
layernorm(moe(x))``. The node rules are olmoe's (``training.backward.node_backward``); the accumulations
``training.backward.accumulations``', with the MoE's post-norm reading the experts' output (the top-k sum,
T*h): the eager RMSNorm reads it twice, T*h ADD on the experts node.

apertus (modeling_apertus.py): llama's layout with qwen3's per-head q/k norms before rope and an MLP without a
gate, ``down(xielu(up(x)))``. xIELU (``graph/xielu.py``), transformers' Python version, over n = T*I elements:

    alpha_p = softplus(ap); alpha_n = beta + softplus(an)
    where(x > 0, alpha_p * x * x + beta * x, (expm1(min(x, eps)) - x) * alpha_n + beta * x)

backwards (``tools/autograd/derivatives.yaml``), per element unless said: where: ``where(c, g, 0)`` and
``where(c, 0, g)`` (2 selects written); beta * x, twice (beta a buffer): one mul each; (expm1(m) - x) * alpha_n:
g * alpha_n, and alpha_n's gradient sum(g * left) (2 MULT, n - 1 ADD in all); the sub: -g (a neg, 1 ADD);
expm1: ``g * (result + 1)`` (1 ADD, 1 MULT); minimum(x, eps) (eps a buffer): ``where(x == eps, g / 2, g)
.masked_fill_(x > eps, 0)`` (2 CMP, 1 DIV, eq / div / where / gt written); (alpha_p * x) * x: two muls;
alpha_p * x: g * alpha_p, and alpha_p's gradient sum(g * x) (2 MULT, n - 1 ADD). In all MULT 9n, ADD 4n - 2,
DIV n, CMP 2n, 17n + 2 written; once per call the two softplus_backward on the one-element parameters (MULT 2,
EXP, ADD, DIV, CMP 1 each) and beta + softplus (nothing). x gets six gradients (alpha_p * x, (.) * x, beta * x
twice, minimum, the sub; x > 0 none): 5n ADD on the linear that wrote it (up_proj).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from ..formula import Formula
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, CMP, DIV, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base
from .backward_ssm import softplus_backward  # the one definition of the aten op's counts

FLEX_OLMO_TYPES: frozenset[str] = frozenset({"flex_olmo"})
APERTUS_TYPES: frozenset[str] = frozenset({"apertus"})
XIELU_READS = 6  # the gradients xIELU sends its input (module docstring)


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


def xielu_backward(n: Formula | int) -> Counts:
    """xIELU over n elements, backwards (module docstring), with its two parameters' softplus_backward."""
    return Counts({MULT: 9 * n, ADD: 4 * n - 2, DIV: n, CMP: 2 * n, ACT: 17 * n + 2}) + softplus_backward(2)


def apertus_backward(model: ModelProfile) -> dict[str, Counts]:
    """llama / qwen3's rules (``training.backward``), xIELU's backward, its input's six gradients summed."""
    spec: Any = model.spec
    acc = dict(base.accumulations(model))
    nodes = list(model.nodes)

    def rule(node: Node) -> Counts:
        if node.kind == NodeKind.ACTIVATION and spec.activation == "xielu":
            return xielu_backward(_elements(node))
        return _generic(node, spec)

    for i, node in enumerate(nodes):
        if node.kind == NodeKind.ACTIVATION and spec.activation == "xielu":
            _add(acc, nodes[i - 1].path, (XIELU_READS - 1) * _elements(node))  # the linear before it wrote x
    return _with_loss(model, rule, acc)


def _elements(node: Node) -> Formula:
    if node.facts.fused_reads is None:
        raise base.BackwardUnsupportedError(f"node {node.path}: its input size is not among its facts")
    return node.facts.fused_reads


__all__ = ["APERTUS_TYPES", "FLEX_OLMO_TYPES", "apertus_backward", "flex_olmo_backward", "xielu_backward"]
