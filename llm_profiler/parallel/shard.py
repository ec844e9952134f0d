"""Per-rank graphs: every node of a model as one rank of a parallel plan computes, stores and reads it.

Each node is rewritten from its own facts (``llm_profiler.facts``), never by dividing a model total:

- column-parallel linear (``rules.style``: q/k/v, gate/up, MLA's q_b / kv_b; the lm_head): its weight
  (out x in) becomes (out_local x in) and its recorded matmul (m x k) @ (k x out) becomes one of out_local
  columns; the counts are the node's counts less the op table's count of the full matmul plus that of the
  local one (``ops.matmul``), so a bias, the accumulation adds and ``act`` follow the op table exactly.
  out_local = out / tp; k / v projections hold kv_local heads (``plan.kv_heads_per_rank``).
- row-parallel linear (o_proj, down_proj): weight (out x in / tp), the matmul's k becomes k / tp (its
  output is a partial sum: the all-reduce of ``collectives`` completes it); a bias stays whole.
- attention internals (rope, scores, softmax, context, the per-head q / k norms, the KV cache): every
  count is one per query head (scores, softmax, context, q_norm) or per KV head (k_norm, K / V state):
  scaled by heads_local / heads (kv_local / kv); rope rotates q's and k's heads alike, so
  (heads_local + kv_local) / (heads + kv) (MLA: one shared rope key head). MLA's latent state and norms
  are replicated.
- MLP internals (the activation, the gate product): one per intermediate feature, scaled by 1 / tp.
- linear-attention and state-space mixers (vLLM's sharding; ``plan.linear_mixer_error`` says which are
  modelled): their input projections (``in_proj*``) column-parallel (out / tp), ``out_proj`` row-parallel
  (an all-reduce after it, as after o_proj), a Mamba-1 ``x_proj`` row-parallel too (its dt_rank + 2N outputs
  all-reduced; Jamba's dt / B / C norms then run whole on every rank); every other node of the mixer (the causal conv and its state, the
  gates, the scan or delta rule and the recurrent state, the per-group gated norm, A_log / D / dt_bias) works
  on heads / tp heads (channels / tp channels): counts, reads, writes, states and weights x 1 / tp, except a
  gated DeltaNet's output norm, whose weight (one head_dim vector shared by every head) stays whole.
- routed experts: ``ep`` places experts / ep of them on each rank (weights (experts / ep, one / tp));
  every rank runs the (token, expert) pairs of its own tokens (their count under balanced routing, the
  same formula at the rank's batch); with tp the experts' gate_up and down are split as transformers'
  ``moe_tp_experts`` (packed colwise / rowwise): the two bmms' widths and the gate product by 1 / tp.
- embedding: vocab-parallel (vocab / tp rows, ceil for a vocabulary that does not divide; every rank gathers
  B*S rows, out-of-range ids masked to row 0 as Megatron-LM's VocabParallelEmbedding) or replicated.
- norms, residuals, positions, rotary tables, routers: replicated; with ``sp`` the layer norms and residual
  adds run on S / tp tokens (scaled by 1 / tp).
- context parallelism (``cp``, a prefill): every node runs S / cp of the prompt's tokens: each count, read,
  write and matmul x 1 / cp (token-wise nodes are linear in S; the eager scores of S / cp queries against all
  P + S keys are 1 / cp of the whole; under flash the causal pairs' mean share, as a load-balanced split
  gives), the K / V appended and held x 1 / cp, the keys and values read whole (gathered); weights whole.
  The lm_head on the last position runs on the rank holding it: not split (the busiest rank's count).
- pipeline: layers in ``pp`` contiguous stages (the first L mod pp stages one layer more); the embedding on
  the first stage, the final norm and lm_head on the last, position ids and rotary tables on every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from .. import ops
from ..facts import Facts, Matmul, State, StateKind, TensorClass, Weight
from ..formula import ZERO, Formula
from ..graph import Graph, Node, NodeKind
from ..graph.node import ATTN, MLP
from ..metrics import ACT, ACTIVE_PARAMS, CACHE, PARAMS
from ..ops import Counts
from ..profile import ModelProfile
from .plan import LINEAR_MIXERS, ParallelPlan, check_plan, has_attention, kv_heads_per_rank
from .rules import COLUMN, KV_PROJECTIONS, ROW, leaf, style

ONE = Fraction(1)
# Jamba's RMSNorms on dt, B and C read x_proj's all-reduced output: every rank computes them whole
MAMBA1_REPLICATED = frozenset({"dt_layernorm", "b_layernorm", "c_layernorm"})


@dataclass(frozen=True)
class Layout:
    """What one rank holds of the model's heads, features and experts under a plan."""

    plan: ParallelPlan
    heads: int
    kv_heads: int
    heads_local: int
    kv_local: int
    vocab: int
    vocab_local: int
    mla: bool
    mixer_layers: frozenset[int] = frozenset()  # layers whose mixer is split by heads / channels (not attention)
    shared_norm_layers: frozenset[int] = frozenset()  # of those, gated DeltaNets (their norm weight is replicated)

    @property
    def q_fraction(self) -> Fraction:
        return Fraction(self.heads_local, self.heads)

    @property
    def kv_fraction(self) -> Fraction:
        return Fraction(self.kv_local, self.kv_heads)


def layout(spec: Any, plan: ParallelPlan) -> Layout:
    tp = plan.tp
    attends = has_attention(spec)  # a pure state-space stack's head fields are placeholders: left whole
    mixers = frozenset(i for i, layer in enumerate(spec.layers) if layer.mixer.kind in LINEAR_MIXERS)
    delta_net = getattr(spec, "delta_net", None) is not None
    return Layout(plan=plan, heads=spec.num_heads, kv_heads=spec.num_kv_heads,
                  heads_local=spec.num_heads // tp if attends else spec.num_heads,
                  kv_local=kv_heads_per_rank(spec.num_kv_heads, tp) if attends else spec.num_kv_heads,
                  vocab=spec.vocab_size, vocab_local=-(-spec.vocab_size // tp),
                  mla=any(layer.mixer.kind == "mla" for layer in spec.layers), mixer_layers=mixers,
                  shared_norm_layers=frozenset(i for i in mixers if delta_net
                                               and spec.layers[i].mixer.kind == "linear_attention"))


# --- counts and facts arithmetic --------------------------------------------------------------------


def _scaled(counts: Counts, f: Fraction, keep: tuple[str, ...] = (PARAMS, ACTIVE_PARAMS)) -> dict[str, Formula]:
    return {k: Formula.of(v) if k in keep else Formula.of(v) * f for k, v in counts.items()}


def _swap(counts: dict[str, Formula], old: Matmul, new: Matmul) -> dict[str, Formula]:
    """``counts`` with the op-table counts of matmul ``old`` replaced by those of ``new``."""
    out = dict(counts)
    for k, v in ops.matmul(old.m, old.n, old.k, old.batch, old.bias).items():
        out[k] = out.get(k, ZERO) - Formula.of(v)
    for k, v in ops.matmul(new.m, new.n, new.k, new.batch, new.bias).items():
        out[k] = out.get(k, ZERO) + Formula.of(v)
    return out


def _states(states: tuple[State, ...], kv: Fraction) -> tuple[State, ...]:
    """Keys / values state scaled by the KV heads a rank holds; latents and other states replicated."""
    return tuple(replace(s, read=s.read * kv, appended=s.appended * kv, held=s.held * kv)
                 if s.kind == StateKind.KEYS_VALUES else s for s in states)


def _with(node: Node, counts: dict[str, Formula], facts: Facts) -> Node:
    out = Counts({k: v for k, v in counts.items()})
    out.facts = facts
    return replace(node, counts=out, facts=facts)


def _params(weights: tuple[Weight, ...]) -> Formula:
    return Formula.const(sum(w.numel for w in weights if not w.tied))


def _opt(f: Formula | None, x: Fraction) -> Formula | None:
    return None if f is None else f * x


# --- rules ---------------------------------------------------------------------------------------


def _linear(node: Node, split: str, out_local: int, tp: int) -> Node:
    """A column- (``out_local`` outputs) or row-parallel (in / tp inputs; ``out_local`` unused) linear, from
    its weight and matmul."""
    facts, counts = node.facts, _scaled(node.counts, ONE)
    (mm,) = facts.matmuls
    weights = []
    for w in facts.weights:
        if w.name == "weight" and len(w.shape) == 2:
            out, inp = w.shape
            weights.append(replace(w, shape=(out_local, inp) if split == COLUMN else (out, inp // tp)))
        elif w.name == "bias" and split == COLUMN:
            weights.append(replace(w, shape=(out_local,)))
        else:
            weights.append(w)
    if split == COLUMN:
        new = replace(mm, n=Formula.const(out_local))
        reads = facts.reads
    else:
        new = replace(mm, k=mm.k / tp)
        reads = None if facts.reads is None else facts.reads - mm.batch * mm.m * mm.k + new.batch * new.m * new.k
    counts = _swap(counts, mm, new)
    counts[PARAMS] = _params(tuple(weights))
    if ACTIVE_PARAMS in counts:
        counts[ACTIVE_PARAMS] = counts[PARAMS]
    return _with(node, counts, replace(facts, weights=tuple(weights), matmuls=(new,), reads=reads))


def _share(node: Node, f: Fraction, states: tuple[State, ...], weights: tuple[Weight, ...] | None = None) -> Node:
    """``node`` doing ``f`` of its work: every count, activation read / write and matmul x f, its states
    replaced by ``states`` (the cache count their held elements); params kept, or, with ``weights`` (its
    weights split alike), x f too (a node whose weights are facts only keeps its zero params)."""
    facts = node.facts
    counts = _scaled(node.counts, f, keep=(PARAMS, ACTIVE_PARAMS) if weights is None else ())
    if CACHE in counts:
        counts[CACHE] = sum((s.held for s in states), ZERO)
    mms = tuple(replace(m, batch=m.batch * f) for m in facts.matmuls)
    return _with(node, counts, replace(facts, weights=facts.weights if weights is None else weights,
                                       reads=_opt(facts.reads, f), matmuls=mms, states=states,
                                       fused_reads=_opt(facts.fused_reads, f), fused_writes=_opt(facts.fused_writes, f)))


def _fraction(node: Node, f: Fraction, kv: Fraction = ONE) -> Node:
    """Every count, activation read / write, matmul and K / V state scaled (params kept)."""
    return _share(node, f, _states(node.facts.states, kv))  # the held K / V follow the heads a rank keeps


def _mixer_share(node: Node, tp: int, split_weights: bool) -> Node:
    """A linear-attention / state-space node on heads / tp heads: counts, reads, writes, matmuls and states
    x 1 / tp, and (``split_weights``) its per-head / per-channel weights' first dimension / tp."""
    f = Fraction(1, tp)
    states = tuple(replace(s, read=s.read * f, appended=s.appended * f, held=s.held * f) for s in node.facts.states)
    weights = (tuple(replace(w, shape=(w.shape[0] // tp, *w.shape[1:])) for w in node.facts.weights)
               if split_weights else None)
    return _share(node, f, states, weights)


def _experts(node: Node, lay: Layout) -> Node:
    """Routed experts: experts / ep on the rank, each split by tp (gate_up packed colwise, down rowwise)."""
    tp, ep, facts = lay.plan.tp, lay.plan.ep, node.facts
    counts = _scaled(node.counts, ONE)
    mms = list(facts.matmuls)
    if tp > 1 and len(mms) == 2:
        up, down = mms
        new_up, new_down = replace(up, m=up.m / tp), replace(down, k=down.k / tp)
        counts = _swap(_swap(counts, up, new_up), down, new_down)
        inter = down.k
        if Formula.of(up.m) == 2 * Formula.of(inter):  # gated: act(gate) * up, one MULT per pair and feature
            gate = ops.elementwise("mul", up.batch * inter)
            for k, v in gate.items():
                counts[k] = counts[k] - Formula.of(v) + Formula.of(v) / tp
        mms = [new_up, new_down]
    weights = tuple(replace(w, shape=(w.shape[0] // ep, w.shape[1] // tp)) if w.tensor_class == TensorClass.EXPERTS
                    else w for w in facts.weights)
    counts[PARAMS] = _params(weights)
    if ACTIVE_PARAMS in counts:  # top_k experts, each with one / tp of its weights on this rank
        counts[ACTIVE_PARAMS] = Formula.of(node.counts[ACTIVE_PARAMS]) * Fraction(1, tp)
    return _with(node, counts, replace(facts, weights=weights, matmuls=tuple(mms)))


def _embedding(node: Node, lay: Layout) -> Node:
    facts = node.facts
    weights = tuple(replace(w, shape=(lay.vocab_local, w.shape[1])) if len(w.shape) == 2 else w for w in facts.weights)
    counts = _scaled(node.counts, ONE)
    counts[PARAMS] = _params(weights)
    return _with(node, counts, replace(facts, weights=weights))


def _lm_head(node: Node, lay: Layout) -> Node:
    facts = node.facts
    (mm,) = facts.matmuls
    weights = tuple(replace(w, shape=(lay.vocab_local, w.shape[1])) if w.name == "weight" else
                    replace(w, shape=(lay.vocab_local,)) for w in facts.weights)
    new = replace(mm, n=Formula.const(lay.vocab_local))
    counts = _swap(_scaled(node.counts, ONE), mm, new)
    counts[PARAMS] = _params(weights)
    return _with(node, counts, replace(facts, weights=weights, matmuls=(new,)))


def _per_token_outputs(node: Node) -> int:
    """Elements one token's pass of the node writes (its ``act`` at B = S = 1, no cache)."""
    return int(Formula.of(node.counts.get(ACT, 0)).evaluate({"B": 1, "S": 1, "P": 0}))


def rule(node: Node, lay: Layout) -> str:
    """The sharding rule of a node under the layout's plan (the module docstring's list)."""
    tp = lay.plan.tp
    if node.kind == NodeKind.EXPERTS:
        return "experts" if tp > 1 or lay.plan.ep > 1 else "replicated"
    if tp == 1:
        return "replicated"
    if node.layer in lay.mixer_layers and node.block == ATTN:  # a linear-attention / state-space mixer
        name = leaf(node.path)
        if node.kind == NodeKind.LINEAR and node.facts.matmuls:
            return COLUMN if name.startswith("in_proj") else ROW if name in ("out_proj", "x_proj") else "replicated"
        if name in MAMBA1_REPLICATED:
            return "replicated"
        if node.kind == NodeKind.NORM and node.layer in lay.shared_norm_layers:
            return "mixer_shared_weights"
        return "mixer"
    if node.kind == NodeKind.EMBEDDING:
        return "vocab" if lay.plan.embedding == "vocab" else "replicated"
    if node.kind == NodeKind.LM_HEAD:
        if node.facts.matmuls:
            return "vocab_column"
        # an elementwise op on the logits (granite's / cohere's scaling) is split with them; one on the hidden
        # states before the head (minicpm3's) stays replicated
        return "vocab_elementwise" if _per_token_outputs(node) == lay.vocab else "replicated"
    if node.kind in (NodeKind.LINEAR, NodeKind.ROUTER) and node.facts.matmuls:
        return style(node.path) or "replicated"
    if node.block == ATTN:
        name = leaf(node.path)
        if node.kind == NodeKind.NORM:
            return {"q_norm": "q_heads", "k_norm": "kv_heads"}.get(name, "replicated")
        if node.kind == NodeKind.ROPE:
            return "rope"
        if node.kind == NodeKind.KV_CACHE:
            return "kv_heads"
        return "q_heads"
    if node.block == MLP and (node.kind == NodeKind.ACTIVATION or node.path.endswith(":gate_mul")):
        return "intermediate"
    if lay.plan.sp and node.kind in (NodeKind.NORM, NodeKind.RESIDUAL) and node.layer is not None:
        return "tokens"
    return "replicated"


def context_split(node: Node, cp: int) -> Node:
    """``node`` on S / cp of the tokens (the module docstring's context-parallel rule)."""
    f = Fraction(1, cp)
    return _share(node, f, tuple(replace(s, appended=s.appended * f, held=s.held * f) for s in node.facts.states))


def shard_node(node: Node, lay: Layout, last_position: bool = False) -> Node:
    """``node`` as one rank of the plan computes it (``rule`` picks how; then the context split under cp).
    ``last_position``: the lm_head runs on the last position only (not split by cp)."""
    out = _tensor_shard(node, lay)
    if lay.plan.cp > 1 and not (last_position and node.kind == NodeKind.LM_HEAD):
        out = context_split(out, lay.plan.cp)
    return out


def _tensor_shard(node: Node, lay: Layout) -> Node:
    tp, how = lay.plan.tp, rule(node, lay)
    if how == "replicated":
        return node
    if how == COLUMN:
        out = node.facts.matmuls[0].n
        width = int(out)
        local = width // lay.kv_heads * lay.kv_local if leaf(node.path) in KV_PROJECTIONS else width // tp
        return _linear(node, COLUMN, local, tp)
    if how == ROW:
        return _linear(node, ROW, 0, tp)
    if how == "experts":
        return _experts(node, lay)
    if how == "vocab":
        return _embedding(node, lay)
    if how == "vocab_column":
        return _lm_head(node, lay)
    if how == "vocab_elementwise":
        return _share(node, Fraction(lay.vocab_local, lay.vocab), node.facts.states)
    if how == "q_heads":
        return _fraction(node, lay.q_fraction, lay.kv_fraction)
    if how == "kv_heads":
        return _fraction(node, lay.kv_fraction, lay.kv_fraction)
    if how == "rope":
        kv, kv_local = (1, 1) if lay.mla else (lay.kv_heads, lay.kv_local)
        return _fraction(node, Fraction(lay.heads_local + kv_local, lay.heads + kv))
    if how in ("intermediate", "tokens"):
        return _fraction(node, Fraction(1, tp))
    if how in ("mixer", "mixer_shared_weights"):
        return _mixer_share(node, tp, split_weights=how == "mixer")
    raise AssertionError(how)  # pragma: no cover


# --- pipeline stages -----------------------------------------------------------------------------


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """Contiguous layer ranges of the ``pp`` stages; the first ``num_layers % pp`` stages hold one more."""
    base, extra = divmod(num_layers, pp)
    out, start = [], 0
    for i in range(pp):
        size = base + (1 if i < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def _stage_nodes(graph: Graph, pp: int, stage: int) -> list[Node]:
    layers = stage_layers(graph.spec.num_layers, pp)[stage]
    first = next((i for i, n in enumerate(graph.nodes) if n.layer is not None), len(graph.nodes))
    out = []
    for i, node in enumerate(graph.nodes):
        if node.layer is not None:
            keep = node.layer in layers
        elif i < first:  # head of the model: the embedding on the first stage, positions / rotary on each
            keep = stage == 0 or node.kind != NodeKind.EMBEDDING
        else:  # tail: final norm and lm_head on the last stage
            keep = stage == pp - 1
        if keep:
            out.append(node)
    return out


def rank_graph(graph: Graph, plan: ParallelPlan, stage: int = 0, last_position: bool = False) -> Graph:
    """The nodes of pipeline ``stage`` as one of its ranks computes them (``shard_node``)."""
    lay = layout(graph.spec, plan)
    done: dict[tuple[int, int], Node] = {}
    nodes = []
    for node in _stage_nodes(graph, plan.pp, stage):
        key = (id(node.counts), id(node.facts))  # layers share counts and facts: shard each distinct node once
        if key not in done or done[key].kind != node.kind or rule(done[key], lay) != rule(node, lay):
            done[key] = shard_node(node, lay, last_position)
        nodes.append(replace(done[key], path=node.path, module=node.module, layer=node.layer))
    meta = {**graph.meta, "plan": plan.describe(), "stage": stage, "full_spec": graph.spec}
    return Graph(spec=rank_spec(graph.spec, lay), nodes=tuple(nodes), layer_prefix=graph.layer_prefix, meta=meta)


def rank_spec(spec: Any, lay: Layout) -> Any:
    """The widths one tensor-parallel rank holds (heads, KV heads, MLP intermediate, vocabulary), for what
    reads sizes from the spec rather than the nodes (the peak-activation model of ``memory``); the full spec
    stays in the graph's ``meta["full_spec"]``. Unchanged without tp."""
    tp = lay.plan.tp
    if tp == 1:
        return spec
    return spec.model_copy(update={"num_heads": lay.heads_local, "num_kv_heads": lay.kv_local,
                                   "intermediate_size": -(-spec.intermediate_size // tp), "vocab_size": lay.vocab_local})


_RANK_MODELS: dict[tuple[int, ParallelPlan, int, bool], tuple[ModelProfile, ModelProfile]] = {}


def rank_model(model: ModelProfile, plan: ParallelPlan, stage: int = 0, last_position: bool = False) -> ModelProfile:
    """``model``'s pipeline ``stage`` as one rank runs it, as a ``ModelProfile`` (traffic, roofline and memory
    work on it unchanged); checked against the model first (``check_plan``). Built once per model, plan, stage."""
    key = (id(model), plan, stage, last_position and plan.cp > 1)
    if key not in _RANK_MODELS:  # the model is kept beside its rank view, so its id is not reused
        check_plan(plan, model.spec)
        if plan.tp > 1 and not any(rule(n, layout(model.spec, plan)) == ROW for n in model.nodes):
            from .plan import PlanError

            raise PlanError(f"tp={plan.tp}: the linear modules of {model.spec.name or model.spec.model_type} "
                            f"({model.spec.model_type}) are not in the tensor-parallel table (q/k/v_proj, o_proj, "
                            "gate/up/down_proj: llm_profiler/parallel/rules.py); allowed tp: 1")
        graph = rank_graph(model.graph, plan, stage, last_position)
        _RANK_MODELS[key] = (model, ModelProfile(model.family, graph))
    return _RANK_MODELS[key][1]


__all__ = ["Layout", "context_split", "layout", "rank_spec", "rank_graph", "rank_model", "rule", "shard_node", "stage_layers"]
