"""Mixture-of-experts building blocks: routers, routed experts, shared experts, expected expert loads.

Every formula follows the eager transformers code op by op, with the routed experts run by the
``batched_mm`` experts implementation (``transformers.integrations.moe.batched_mm_experts_forward``,
which the validation module selects): each token is repeated top_k times, each (token, expert) pair
gathers its expert's weights and runs one bmm per projection. The expert compute is therefore exactly
tokens x top_k x one expert's cost, whatever the routing, so every count here is an integer formula.

Metrics: ``params`` counts every expert; ``active_params`` (what one token uses) counts top_k experts
on the routed-experts node, and everything else fully (nodes without it default to their params).

Where a family stores the modules (``mlp.gate``, ``mlp.experts``, ``mlp.shared_expert``...) is given by
the caller through module suffixes, so other MoE families (DeepSeek, ...) reuse the same blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from .. import ops
from ..facts import TensorClass, Weight
from ..formula import Formula
from ..metrics import ACT, ACTIVE_PARAMS, PARAMS
from ..ops import Counts
from ..spec import FFN, ArchSpec, LayerSpec
from .activations import activation_counts
from .blocks import TOKENS, Part, linear, with_params
from .node import MLP, NodeKind


class MoESpec(ArchSpec):
    """An ArchSpec with a sparse MoE block on some layers (and a dense MLP of ``intermediate_size`` on the
    others). ``num_experts`` = 0 means no MoE layer at all."""

    num_experts: int = Field(ge=0)
    experts_per_token: int = Field(ge=1)  # top_k
    moe_intermediate_size: int = Field(gt=0)  # one routed expert's hidden width
    norm_topk_prob: bool = True  # renormalise the top-k probabilities to sum to one
    shared_expert_intermediate_size: int = Field(default=0, ge=0)  # 0: no shared expert
    shared_expert_gate: bool = False  # sigmoid(Linear(hidden, 1)) scales the shared expert (qwen2_moe)
    dense_layers: tuple[int, ...] = ()  # layers that run a dense MLP instead of the MoE block

    @model_validator(mode="after")
    def _check_moe(self) -> MoESpec:
        if any(not 0 <= i < self.num_layers for i in self.dense_layers):
            raise ValueError(f"dense layer indices {self.dense_layers} must lie in [0, {self.num_layers})")
        if self.moe_layers() and not 1 <= self.experts_per_token <= self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.experts_per_token}) must be between 1 and the number of experts "
                f"({self.num_experts})"
            )
        return self

    def is_moe_layer(self, layer: int) -> bool:
        return self.layers[layer].moe

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        """Dense layers keep the gated MLP; every other layer is a MoE block (when there are experts)."""
        dense = frozenset(self.dense_layers)  # a set: per-layer membership stays O(1)
        if self.num_experts and len(dense) < self.num_layers and not 1 <= self.experts_per_token <= self.num_experts:
            raise ValueError(f"num_experts_per_tok ({self.experts_per_token}) must be between 1 and the number of "
                             f"experts ({self.num_experts})")
        moe = FFN(kind="moe", intermediate=self.moe_intermediate_size, experts=self.num_experts,
                  top_k=self.experts_per_token, shared_intermediate=self.shared_expert_intermediate_size)
        layers = super().derive_layers()
        if not self.num_experts:
            return layers
        return tuple(layer if i in dense else layer.model_copy(update={"ffn": moe}) for i, layer in enumerate(layers))

    def moe_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_layers) if self.is_moe_layer(i))


# --- routing --------------------------------------------------------------------------------------


def router(hidden: int, num_experts: int, top_k: int, normalize: bool, rows: Formula = TOKENS) -> Counts:
    """The softmax top-k router (Mixtral / Qwen2-MoE / Qwen3-MoE ``TopKRouter``), op by op:

    logits = F.linear(x, weight): rows x (hidden -> num_experts), no bias;
    probs = softmax(logits) over the experts; topk(probs, top_k) (ops.topk: k max scans, values + indices);
    normalize: top /= top.sum(-1): top_k-1 ADD + top_k DIV per row.
    params: num_experts * hidden (the ``weight`` of the router module).
    """
    out = linear(rows, hidden, num_experts, bias=False)
    out = out + ops.softmax(rows, num_experts) + ops.topk(rows, num_experts, top_k)
    if normalize:
        out = out + ops.reduce_sum(rows, top_k) + ops.elementwise("div", rows * top_k)
    return out


# --- routed experts -------------------------------------------------------------------------------


def expert_pairs_compute(hidden: int, intermediate: int, pairs: Formula, gated: bool = True) -> Counts:
    """What ``pairs`` (token, expert) pairs cost in the batched_mm experts forward, activation excluded
    (the ``act_fn`` submodule runs it; see ``expert_activation``):

    gate_up: bmm of pairs x (2I x hidden) @ (hidden x 1) (I x hidden without a gate): pairs*2I outputs of
    hidden products; gate product act(gate) * up: pairs*I MULT; down: bmm pairs x (hidden x I) @ (I x 1);
    routing weight: out * w: pairs*hidden MULT.
    """
    up_width = 2 * intermediate if gated else intermediate
    out = ops.matmul(up_width, 1, hidden, batch=pairs)
    if gated:
        out = out + ops.elementwise("mul", pairs * intermediate)
    out = out + ops.matmul(hidden, 1, intermediate, batch=pairs)
    return out + ops.elementwise("mul", pairs * hidden)


def expert_params(hidden: int, intermediate: int, gated: bool = True) -> int:
    """One expert: gate_up_proj (2I x hidden) or up_proj (I x hidden), and down_proj (hidden x I)."""
    return (3 if gated else 2) * hidden * intermediate


def routed_experts(hidden: int, intermediate: int, num_experts: int, top_k: int, gated: bool = True,
                   rows: Formula = TOKENS) -> Counts:
    """The experts module (batched_mm), activation excluded: rows*top_k pairs of one expert's compute,
    then the top-k outputs of each token summed (view(rows, top_k, hidden).sum(1): rows*hidden sums of
    top_k). params: all experts; active_params: top_k experts (what one token uses)."""
    out = expert_pairs_compute(hidden, intermediate, rows * top_k, gated)
    out = out + ops.reduce_sum(rows * hidden, top_k)
    one = expert_params(hidden, intermediate, gated)
    out = with_params(out, num_experts * one)
    out[ACTIVE_PARAMS] = Formula.const(top_k * one)
    # the pairs read min(E, pairs) experts' weights (the bmms' weight operands); activations: one tensor
    # of the output's size per op, as elsewhere
    experts = Weight("experts", (num_experts, one), TensorClass.EXPERTS, pairs=rows * top_k)
    return out.with_facts(weights=(experts,), reads=Formula.of(out[ACT]))


def expert_activation(activation: str, intermediate: int, top_k: int, rows: Formula = TOKENS) -> Counts:
    """The experts' ``act_fn`` on the gate half of every (token, expert) pair: rows*top_k*I elements."""
    return activation_counts(activation, rows * top_k * intermediate)


# --- per-expert detail (reporting only: expected values, never node counts) -----------------------


def expected_expert_load(num_experts: int, top_k: int, rows: Formula = TOKENS) -> Formula:
    """Expected (token, expert) pairs one expert processes under uniform routing: rows*top_k/num_experts.

    Generally fractional: it is an expectation for reports, not a count (node counts stay integers)."""
    return rows * top_k / num_experts


def per_expert_counts(hidden: int, intermediate: int, num_experts: int, top_k: int, activation: str = "silu",
                      gated: bool = True, loads: Sequence[Formula] | None = None,
                      rows: Formula = TOKENS) -> list[Counts]:
    """Counts of each expert (its share of the experts module plus its activation) for ``loads`` pairs
    each; by default the expected load of uniform routing (``expected_expert_load``), so values may be
    fractional. When the loads sum to rows*top_k (any real routing), the experts add up to the routed
    experts' compute except the top-k combine (rows*hidden sums), which belongs to no single expert.
    Each expert's ``params`` / ``active_params`` are one expert's weights."""
    if loads is None:
        loads = [expected_expert_load(num_experts, top_k, rows)] * num_experts
    if len(loads) != num_experts:
        raise ValueError(f"expected {num_experts} expert loads, got {len(loads)}")
    one = expert_params(hidden, intermediate, gated)
    out = []
    for load in loads:
        counts = expert_pairs_compute(hidden, intermediate, load, gated)
        counts = counts + ops.elementwise(activation, load * intermediate)
        counts[PARAMS] = counts[ACTIVE_PARAMS] = Formula.const(one)
        out.append(counts)
    return out


# --- shared experts -------------------------------------------------------------------------------


def gated_mlp_parts(prefix: str, hidden: int, intermediate: int, activation: str, bias: bool = False,
                    rows: Formula = TOKENS) -> list[Part]:
    """A gated SiLU MLP (``down(act(gate(x)) * up(x))``) under ``prefix`` (e.g. ".mlp.shared_expert"),
    as the Llama-style MLP classes run it: the shared expert of Qwen2-MoE / DeepSeek, or a dense layer."""
    return [
        Part(f"{prefix}.gate_proj", f"{prefix}.gate_proj", NodeKind.LINEAR, linear(rows, hidden, intermediate, bias), MLP),
        Part(f"{prefix}.act_fn", f"{prefix}.act_fn", NodeKind.ACTIVATION,
             activation_counts(activation, rows * intermediate), MLP),
        Part(f"{prefix}.up_proj", f"{prefix}.up_proj", NodeKind.LINEAR, linear(rows, hidden, intermediate, bias), MLP),
        Part(f"{prefix}:gate_mul", prefix, NodeKind.ELEMENTWISE, ops.elementwise("mul", rows * intermediate), MLP),
        Part(f"{prefix}.down_proj", f"{prefix}.down_proj", NodeKind.LINEAR, linear(rows, intermediate, hidden, bias), MLP),
    ]


def shared_expert_mix(hidden: int, gate: bool, rows: Formula = TOKENS) -> Counts:
    """Combining the shared expert with the routed output, in the MoE block's own forward:
    with a gate (qwen2_moe): sigmoid(gate_logit): rows sigmoids, * shared: rows*hidden MULT; then
    routed + shared: rows*hidden ADD."""
    out = Counts()
    if gate:
        out = ops.elementwise("sigmoid", rows) + ops.elementwise("mul", rows * hidden)
    return out + ops.elementwise("add", rows * hidden)


# --- a whole block --------------------------------------------------------------------------------


def sparse_moe_parts(spec: MoESpec, block: str = ".mlp", router_name: str = ".gate", experts_name: str = ".experts",
                     shared_name: str = ".shared_expert", shared_gate_name: str = ".shared_expert_gate",
                     gated: bool = True) -> list[Part]:
    """The parts of a softmax top-k sparse MoE block (Mixtral / Qwen2-MoE / Qwen3-MoE ``SparseMoeBlock``)
    in the order its forward runs them (shared expert first, as Qwen2-MoE does; order changes no count).
    Module names are suffixes under ``block``."""
    h, E, k, inter = spec.hidden_size, spec.num_experts, spec.experts_per_token, spec.moe_intermediate_size
    parts: list[Part] = []
    if spec.shared_expert_intermediate_size:
        parts += gated_mlp_parts(block + shared_name, h, spec.shared_expert_intermediate_size, spec.activation)
    parts += [
        Part(block + router_name, block + router_name, NodeKind.ROUTER, router(h, E, k, spec.norm_topk_prob), MLP),
        Part(block + experts_name, block + experts_name, NodeKind.EXPERTS, routed_experts(h, inter, E, k, gated), MLP),
        Part(f"{block}{experts_name}.act_fn", f"{block}{experts_name}.act_fn", NodeKind.ACTIVATION,
             expert_activation(spec.activation, inter, k), MLP),
    ]
    if spec.shared_expert_intermediate_size:
        if spec.shared_expert_gate:
            parts.append(Part(block + shared_gate_name, block + shared_gate_name, NodeKind.LINEAR,
                              linear(TOKENS, h, 1, bias=False), MLP))
        parts.append(Part(f"{block}:shared_mix", block, NodeKind.ELEMENTWISE,
                          shared_expert_mix(h, spec.shared_expert_gate), MLP))
    return parts


__all__ = [
    "MoESpec", "expected_expert_load", "expert_activation", "expert_pairs_compute", "expert_params",
    "gated_mlp_parts", "per_expert_counts", "router", "routed_experts", "shared_expert_mix", "sparse_moe_parts",
]
