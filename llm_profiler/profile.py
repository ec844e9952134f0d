"""Profiling: a config's graph, rolled up by scope, evaluated exactly at a shape or kept symbolic.

``ModelProfile`` holds the formulas of one config (built once and cached); ``Profile`` is that model
evaluated at one (batch, seq, past) shape and answers fvcore-style queries: ``total(metric, scope)``,
``by_layer``, ``by_module``, ``by_kind``, ``summary`` and the per-layer ``table``.
"""

from __future__ import annotations

import json
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from . import checks
from . import metrics as M
from .config import ModelConfig, load_config
from .errors import QueryError, ShapeError
from .families import Family, build_spec
from .formula import ZERO, Formula, compile_formula, total
from .graph import Graph, Node
from .ops import Counts
from .scopes import MODEL, TRANSFORMER, node_filter, valid_scopes_text
from .spec import ArchSpec

if TYPE_CHECKING:
    from .results import ProfileResult


def check_shape(batch: Any, seq: Any, past: Any = 0) -> tuple[int, int, int]:
    """Validate a shape: batch and seq positive integers, past a non-negative integer."""
    out = []
    for name, value, minimum in (("batch", batch, 1), ("seq", seq, 1), ("past", past, 0)):
        if isinstance(value, bool):
            raise ShapeError(f"{name} must be an integer, got {value!r}")
        try:
            number = operator.index(value)
        except TypeError:
            raise ShapeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None
        if abs(number) > 2**63 - 1:  # no tensor has such a dimension; and 4300+ digits cannot be printed
            raise ShapeError(f"{name} must be < 2**63, got a {number.bit_length()}-bit number")
        if number < minimum:
            raise ShapeError(f"{name} must be >= {minimum}, got {number}")
        out.append(number)
    return out[0], out[1], out[2]


def scope_name(scope: Any) -> str:
    """A scope argument as the string key it is looked up by (None: the default scope)."""
    if scope is None:
        return TRANSFORMER
    if not isinstance(scope, str):
        raise QueryError(f"scope must be a string or None, got {type(scope).__name__}; valid: {valid_scopes_text()}")
    return scope


def metric_formula(counts: Counts, metric: str) -> Formula:
    """A node's count of one canonical metric (derived metrics from their parts)."""
    if metric in M.DERIVED:
        return total(factor * Formula.of(counts.get(part, ZERO)) for part, factor in M.DERIVED[metric])
    if metric == M.ACTIVE_PARAMS and metric not in counts:  # dense nodes: every parameter is active
        metric = M.PARAMS
    return Formula.of(counts.get(metric, ZERO))


class ModelProfile:
    """The formulas of one model: exact totals by scope (``Formula``), symbolic on request (sympy)."""

    def __init__(self, family: Family, graph: Graph) -> None:
        self.family = family
        self.graph = graph
        self._compiled: dict[tuple[str, str], Callable[..., Any]] = {}
        self._formulas: dict[tuple[str, str], Formula] = {}

    @property
    def spec(self) -> ArchSpec:
        return self.graph.spec

    @property
    def engine(self) -> str:
        """The execution profile the formulas describe (``hf-eager``: the validated reference)."""
        return str(self.graph.meta.get("engine", "hf-eager"))

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.graph.nodes

    def select(self, scope: str | None = None) -> list[Node]:
        pred = node_filter(scope, self.nodes)
        return [n for n in self.nodes if pred(n)]

    # --- formulas -----------------------------------------------------------------------------------
    def formula(self, metric: str, scope: str | None = TRANSFORMER) -> Formula:
        """The exact count as a ``Formula`` in B, S, P (no sympy involved)."""
        key = (M.canonical(metric), scope_name(scope))
        out = self._formulas.get(key)
        if out is None:
            # Layers share their Counts objects: add each distinct one once, times how often it occurs.
            multiplicity: dict[int, int] = defaultdict(int)
            by_id: dict[int, Counts] = {}
            for node in self.select(key[1]):
                multiplicity[id(node.counts)] += 1
                by_id[id(node.counts)] = node.counts
            out = total(k * metric_formula(by_id[i], key[0]) for i, k in multiplicity.items())
            self._formulas[key] = out
        return out

    def expr(self, metric: str, scope: str | None = TRANSFORMER) -> Any:
        """The exact count as a sympy expression in B, S, P (for symbolic export and closed forms)."""
        return self.formula(metric, scope).to_sympy()

    def _raw(self, metric: str, scope: str | None) -> Callable[..., Any]:
        key = (M.canonical(metric), scope_name(scope))
        fn = self._compiled.get(key)
        if fn is None:
            fn = compile_formula(self.formula(*key))
            self._compiled[key] = fn
        return fn

    def compiled(self, metric: str, scope: str | None = TRANSFORMER) -> Callable[..., Any]:
        """A compiled function (batch, seq, past) -> count, exact on Python ints, vectorised on numpy arrays;
        it checks its arguments as ``count`` and ``sweep`` do."""
        fn = self._raw(metric, scope)

        def checked(batch: Any, seq: Any, past: Any = 0) -> Any:
            return fn(*checks.check_compiled_args(batch, seq, past))

        return checked

    def count(self, metric: str, scope: str | None = TRANSFORMER, batch: int = 1, seq: int = 1, past: int = 0) -> int:
        b, s, p = check_shape(batch, seq, past)
        return int(self._raw(metric, scope)(b, s, p))

    def sweep(self, metric: str, scope: str | None = TRANSFORMER, *, batch: Any = 1, seq: Any = 2048,
              past: Any = 0) -> Any:
        """Vectorised evaluation over numpy arrays (broadcast together), always exact.

        int64 results while every count fits in int64 (below 9.2e18); otherwise an object array of exact
        Python ints (slower), since int64 arithmetic would wrap around silently.
        """
        import numpy as np

        b, s, p = checks.check_shape_arrays(batch, seq, past)
        shape = np.broadcast_shapes(b.shape, s.shape, p.shape)
        fn = self._raw(metric, scope)
        # A float64 shadow finds counts near or past 2**63 (float error is ~1e-16 relative: margin 2**-40).
        approx = np.asarray(fn(*(x.astype(np.float64) for x in (b, s, p))))
        if approx.size and np.abs(approx).max() >= 2.0**63 * (1 - 2.0**-40):
            return np.broadcast_to(fn(*(x.astype(object) for x in (b, s, p))), shape)
        return np.broadcast_to(fn(b, s, p), shape)

    def at(self, batch: int, seq: int, past: int = 0) -> Profile:
        return Profile(self, *check_shape(batch, seq, past))

    # --- per-node evaluation --------------------------------------------------------------------------
    def node_values(self, batch: int, seq: int, past: int) -> dict[str, dict[str, int]]:
        """path -> metric -> exact count (stored metrics and the derived ones)."""
        env = {"B": batch, "S": seq, "P": past}
        out: dict[str, dict[str, int]] = {}
        cache: dict[int, dict[str, int]] = {}
        for node in self.nodes:
            values = cache.get(id(node.counts))
            if values is None:
                values = {m: int(metric_formula(node.counts, m).evaluate(env)) for m in M.STORED}
                for derived, parts in M.DERIVED.items():
                    values[derived] = sum(values[p] * f for p, f in parts)
                cache[id(node.counts)] = values
            out[node.path] = values
        return out


class Profile:
    """One model at one shape: exact integer answers to queries by scope, layer, module and kind."""

    def __init__(self, model: ModelProfile, batch: int, seq: int, past: int = 0) -> None:
        self.model = model
        self.batch, self.seq, self.past = batch, seq, past

    @property
    def spec(self) -> ArchSpec:
        return self.model.spec

    @cached_property
    def values(self) -> dict[str, dict[str, int]]:
        return self.model.node_values(self.batch, self.seq, self.past)

    def total(self, metric: str = M.FLOPS, scope: str | None = TRANSFORMER) -> int:
        return self.model.count(metric, scope, self.batch, self.seq, self.past)

    def summary(self, scope: str | None = TRANSFORMER, metrics: Iterable[str] = M.SUMMARY) -> dict[str, int]:
        return {M.canonical(m): self.total(m, scope) for m in metrics}

    def symbolic(self, metric: str, scope: str | None = TRANSFORMER) -> Any:
        return self.model.expr(metric, scope)

    def _sum(self, nodes: Iterable[Node], metric: str) -> int:
        return sum(self.values[n.path][metric] for n in nodes)

    def by_module(self, metric: str = M.FLOPS, scope: str | None = MODEL) -> dict[str, int]:
        """Node path -> count, in graph order."""
        metric = M.canonical(metric)
        return {n.path: self.values[n.path][metric] for n in self.model.select(scope)}

    def by_layer(self, metric: str = M.FLOPS) -> dict[int, int]:
        metric = M.canonical(metric)
        out: dict[int, int] = defaultdict(int)
        for n in self.model.nodes:
            if n.layer is not None:
                out[n.layer] += self.values[n.path][metric]
        return dict(out)

    def by_kind(self, metric: str = M.FLOPS, scope: str | None = MODEL) -> dict[str, int]:
        metric = M.canonical(metric)
        out: dict[str, int] = defaultdict(int)
        for n in self.model.select(scope):
            out[n.kind] += self.values[n.path][metric]
        return dict(out)

    def table(self, metrics: Sequence[str] = M.SUMMARY, exact: bool = False, fmt: str = "text",
              layers: Sequence[int] | None = None) -> str:
        from .report.table import breakdown_rows, render

        metrics, exact, fmt, layers = checks.check_table_args(metrics, exact, fmt, layers, self.spec.num_layers)

        return render(breakdown_rows(self, [M.canonical(m) for m in metrics], layers), exact=exact, fmt=fmt)

    def result(self, scope: str | None = TRANSFORMER, metrics: Iterable[str] = M.SUMMARY) -> ProfileResult:
        from .results import ProfileResult  # the pydantic result models cost import time: built on demand

        return ProfileResult(
            model=self.spec.name, model_type=self.spec.model_type, family=self.spec.family,
            batch=self.batch, seq=self.seq, past=self.past, scope=scope_name(scope),
            totals=self.summary(scope, metrics), notes=list(self.spec.notes),
        )


def _config_key(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=str)


@lru_cache(maxsize=64)
def _model_profile(key: str, name: str, as_family: str | None, engine: str = "hf-eager") -> ModelProfile:
    from .engines import HF_EAGER, apply_engine, get_engine

    if engine != HF_EAGER:  # the engine's rules rewrite the reference graph (shared, cached) node by node
        reference = _model_profile(key, name, as_family, HF_EAGER)
        return ModelProfile(reference.family, apply_engine(reference.graph, get_engine(engine)))
    data = json.loads(key)
    family, spec = build_spec(data, name, as_family)
    return ModelProfile(family, family.graph(spec))


def profile_model(source: Any, *, as_family: str | None = None, hf_token: str | None = None,
                  revision: str | None = None, engine: str | None = None) -> ModelProfile:
    """The formulas of a model (built once per config and engine, and cached). ``engine``: the execution
    profile (``llm_profiler.engines``; default ``hf-eager``, the validated reference)."""
    as_family = checks.check_as_family(as_family)
    engine_name = _engine_name(engine)
    config = source if isinstance(source, ModelConfig) else load_config(source, hf_token=hf_token, revision=revision)
    if not isinstance(config.data, dict):  # pragma: no cover - ModelConfig guarantees it
        raise QueryError("config data must be a dict")
    return _model_profile(_config_key(config.data), config.name, as_family, engine_name)


def profile_from_data(data: dict[str, Any], name: str = "", *, as_family: str | None = None,
                      engine: str | None = None) -> ModelProfile:
    """The formulas of a raw config dict (what ``profile_model`` builds after loading; cached the same way)."""
    return _model_profile(_config_key(data), name, checks.check_as_family(as_family), _engine_name(engine))


_ENGINE_VIEWS: dict[tuple[int, str], tuple[ModelProfile, ModelProfile]] = {}


def with_engine(model: ModelProfile, engine: Any) -> ModelProfile:
    """``model`` as the execution profile ``engine`` runs it (built once per model and engine)."""
    from .engines import HF_EAGER, apply_engine, get_engine

    eng = get_engine(engine)
    if model.engine == eng.name:
        return model
    if model.engine != HF_EAGER:
        raise QueryError(f"the formulas are already those of engine {model.engine!r}; start from the reference")
    key = (id(model), eng.name)
    if key not in _ENGINE_VIEWS:  # the reference is kept alive beside its view, so ids are not reused
        _ENGINE_VIEWS[key] = (model, ModelProfile(model.family, apply_engine(model.graph, eng)))
    return _ENGINE_VIEWS[key][1]


def _engine_name(engine: Any) -> str:
    from .engines import get_engine

    return get_engine(engine).name


def profile(source: Any, batch: int = 1, seq: int = 2048, past: int = 0, *, as_family: str | None = None,
            hf_token: str | None = None, revision: str | None = None, engine: str | None = None) -> Profile:
    """Profile a model at one shape: ``profile("llama-2-7b", batch=16, seq=200).total("macs", "attn")``.
    The defaults are the CLI's (docs/cli.md#defaults): one sequence, a 2048-token prompt, an empty cache."""
    return profile_model(source, as_family=as_family, hf_token=hf_token, revision=revision,
                         engine=engine).at(batch, seq, past)
