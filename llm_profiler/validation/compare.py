"""validate(): predicted (the graph) against measured (the real transformers model), node by node.

Every measured (module, part) lands on one node path:

- a part named by ``parts.RULES`` -> ``<module>:<part>`` (whether or not the graph has that node: if it does
  not, the row has nothing predicted and fails);
- an op no rule names (part None) -> the module's own node (a node whose path is the module path), else the
  module's only computing node (``kv_cache`` nodes hold no arithmetic), else the module path itself, which
  no node predicts: a mismatch, listed with its source lines in ``ValidationReport.unattributed_ops``.

Params are the module's own parameters, placed like an op with no part. The cache is compared per layer
(elements of every state the cache object holds after the forward; per kind of state as well, ``cache[conv]``
..., for a layer that holds more than keys and values) and so is its growth over the forward (after minus what
the prefill left, against the prediction at (B, S, P) minus the prediction at the prefill's (B, P, 0)).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .. import metrics as M
from ..engines import HF_EAGER, HF_SDPA, get_engine
from ..errors import QueryError
from ..facts import StateKind
from ..graph import Node, NodeKind
from ..profile import ModelProfile, check_shape, with_engine
from .report import ValidationReport, ValidationRow

COMPARED: tuple[str, ...] = (*M.ARITHMETIC, M.MACS, M.ACT, M.PARAMS)
# the execution profiles transformers runs itself -> its attn_implementation
VALIDATED_ENGINES: dict[str, str] = {HF_EAGER: "eager", HF_SDPA: "sdpa"}
CACHE_GROWTH = "cache_growth"  # elements the forward added to a layer's cache (after minus before)


class NodeResolver:
    """Maps a measured (module, part) to the node path it is compared with."""

    def __init__(self, nodes: tuple[Node, ...]) -> None:
        self.paths = {n.path for n in nodes}
        self.module_of = {n.path: n.module for n in nodes}
        by_module: dict[str, list[Node]] = defaultdict(list)
        for n in nodes:
            by_module[n.module].append(n)
        self.by_module = dict(by_module)

    def node(self, module: str, part: str | None) -> str:
        if part is not None:
            return f"{module}:{part}"
        nodes = self.by_module.get(module, [])
        if any(n.path == module for n in nodes):
            return module
        computing = [n for n in nodes if n.kind != NodeKind.KV_CACHE]
        if len(computing) == 1:
            return computing[0].path
        return module

    def is_node(self, path: str) -> bool:
        return path in self.paths


def predicted_by_node(model: ModelProfile, batch: int, seq: int, past: int) -> dict[str, dict[str, int]]:
    """node path -> metric -> count, in graph order."""
    values = model.node_values(batch, seq, past)
    return {node.path: {metric: int(values[node.path][metric]) for metric in COMPARED} for node in model.nodes}


def predicted_cache(model: ModelProfile, batch: int, seq: int, past: int) -> dict[int, tuple[str, int]]:
    """layer -> (label: the first cache node's path, cache elements held after a forward at (B, S, P))."""
    values = model.node_values(batch, seq, past)
    cache: dict[int, tuple[str, int]] = {}
    for node in model.nodes:
        v = values[node.path][M.CACHE]
        if v or node.kind == NodeKind.KV_CACHE:
            layer = node.layer if node.layer is not None else -1
            label, total = cache.get(layer, (node.path, 0))
            cache[layer] = (label, total + int(v))
    return cache


def predicted_state_kinds(model: ModelProfile, batch: int, seq: int, past: int) -> dict[int, dict[str, int]]:
    """layer -> state kind -> elements held after a forward at (B, S, P), from the nodes' state facts.

    An MLA latent is compared as keys and values: transformers keeps it in the cache layer's ``keys`` /
    ``values`` slots, which is all the measurement can see."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for node in model.nodes:
        for state in node.facts.states:
            held = int(state.held(batch, seq, past))
            kind = StateKind.KEYS_VALUES if state.kind == StateKind.LATENT else state.kind
            if held:
                out[node.layer if node.layer is not None else -1][kind] += held
    return {layer: dict(kinds) for layer, kinds in out.items()}


def cache_kind_metric(kind: str) -> str:
    """The row metric of one kind of cache state, e.g. ``cache[conv]``."""
    return f"{M.CACHE}[{kind}]"


def measured_by_node(model: ModelProfile, measured: Any) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """The measured counts and params on the graph's node paths (node path -> metric -> count), and each
    path's module. Ops and params land where ``NodeResolver`` puts them; a path no node has is kept (a
    mismatch for ``compare``)."""
    resolve = NodeResolver(model.nodes)
    got: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    module_of = dict(resolve.module_of)
    for (module, part), counts in measured.counts.items():
        path = resolve.node(module, part)
        module_of.setdefault(path, module)
        for metric in COMPARED:
            got[path][metric] += int(counts.get(metric, 0))
    # a parameter belongs to the node whose facts name it (e.g. gpt_oss's per-head sinks on self_attn:sinks),
    # else to the node an op of its module with no part would go to
    owner = {(node.module, w.name): node.path for node in model.nodes for w in node.facts.weights if not w.tied}
    for module, params in measured.params.items():
        for name, numel in params.items():
            path = owner.get((module, name)) or resolve.node(module, None)
            module_of.setdefault(path, module)
            got[path][M.PARAMS] += numel
    return got, module_of


def compare(model: ModelProfile, measured: Any, batch: int, seq: int,
            past: int) -> tuple[list[ValidationRow], list[str], list[str]]:
    """Rows (node x metric, then the cache and its growth per layer), unknown ops, unattributed ops."""
    resolve = NodeResolver(model.nodes)
    predicted = predicted_by_node(model, batch, seq, past)
    got, module_of = measured_by_node(model, measured)

    rows: list[ValidationRow] = []
    extra = sorted(p for p in got if p not in predicted)
    for path in [*predicted, *extra]:
        want, have = predicted.get(path, {}), got.get(path, {})
        for metric in COMPARED:
            p, m = int(want.get(metric, 0)), int(have.get(metric, 0))
            if p or m:
                rows.append(ValidationRow(node=path, module=module_of[path], metric=metric, predicted=p, measured=m))

    after = predicted_cache(model, batch, seq, past)
    before = predicted_cache(model, batch, past, 0) if past else {}
    measured_before = getattr(measured, "cache_before", {}) or {}
    kinds_after = predicted_state_kinds(model, batch, seq, past)
    measured_kinds = getattr(measured, "cache_kinds", {}) or {}
    for layer in sorted(set(after) | set(measured.cache_by_layer)):
        label, p = after.get(layer, (f"{model.graph.layer_prefix}{layer} (cache)", 0))
        m = measured.cache_by_layer.get(layer, 0)
        module = resolve.module_of.get(label, label)
        if p or m:
            rows.append(ValidationRow(node=label, module=module, metric=M.CACHE, predicted=int(p), measured=int(m)))
        kinds_p = kinds_after.get(layer, {})
        kinds_m = measured_kinds.get(layer, {})
        if (set(kinds_p) | set(kinds_m)) - {StateKind.KEYS_VALUES}:  # a layer with more than keys and values
            for kind in sorted(set(kinds_p) | set(kinds_m)):
                rows.append(ValidationRow(node=label, module=module, metric=cache_kind_metric(kind),
                                          predicted=kinds_p.get(kind, 0), measured=kinds_m.get(kind, 0)))
        grow_p = p - before.get(layer, (label, 0))[1]
        grow_m = m - measured_before.get(layer, 0)
        if grow_p or grow_m:
            rows.append(ValidationRow(node=label, module=module, metric=CACHE_GROWTH, predicted=grow_p,
                                      measured=grow_m))

    unknown = [f"{mod or '(root)'}: {op} ({n} calls)" for (mod, op), n in sorted(measured.unknown_ops.items())]
    unattributed = []
    for module, sites in sorted(getattr(measured, "unnamed", {}).items()):
        if not resolve.is_node(resolve.node(module, None)):
            unattributed += [f"{module or '(root)'}: {site} ({n} calls)" for site, n in sorted(sites.items())]
    return rows, unknown, unattributed


def validate(config: Any, batch: int = 1, seq: int = 8, past: int = 0, *, tiny: bool = False,
             as_family: str | None = None, model: Any = None, engine: str | None = None) -> ValidationReport:
    """Run the reference model (full size on meta, or ``tiny`` on the CPU with real random weights) and
    compare every metric of every node with the graph. ``model`` reuses an already built reference.
    ``engine``: ``hf-eager`` (the default, transformers' eager attention) or ``hf-sdpa`` (transformers'
    SDPA attention, against the ``hf-sdpa`` execution profile; the fused op is counted by its documented
    definition, ``aten.scaled_dot_product_attention``).

    Fails like the profile: a shape too large for the run is a ``LimitError``, a config transformers or torch
    refuses (building the model or running it) a ``ValidationBuildError`` (``guard``), never a mismatch."""
    import torch
    import transformers

    from .guard import check_size, refusing
    from .measure import measure, retry_forward
    from .reference import reference

    b, s, p = check_shape(batch, seq, past)
    eng = get_engine(engine)
    if eng.name not in VALIDATED_ENGINES:
        raise QueryError(f"validate runs transformers itself: engine must be one of {', '.join(VALIDATED_ENGINES)}"
                         f", got {eng.name!r} (a serving engine's rules are tested against their references, "
                         "docs/engines.md)")
    ref = reference(config, tiny=tiny, as_family=as_family)
    profile = with_engine(ref.profile, eng)
    check_size(profile, b, s, p, tiny=tiny if model is None else next(model.parameters()).device.type != "meta")
    built = ref.build(attention=VALIDATED_ENGINES[eng.name]) if model is None else model
    with refusing(f"running the forward at batch {b}, seq {s}, past {p}", ref.hf_config, retry_forward(b, s, p)):
        measured = measure(built, b, s, p)
    rows, unknown, unattributed = compare(profile, measured, b, s, p)
    return ValidationReport(
        model=ref.name, model_type=profile.spec.model_type, batch=b, seq=s, past=p,
        attn_implementation=VALIDATED_ENGINES[eng.name],
        device=ref.device, tiny=tiny, transformers_version=transformers.__version__,
        torch_version=torch.__version__, rows=rows, unknown_ops=unknown, unattributed_ops=unattributed,
        data_ops=[f"{kind}: {op} ({n} calls)" for (kind, op), n in sorted(measured.data_ops.items())],
    )
