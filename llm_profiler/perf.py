"""Roofline performance of inference phases: per node, per phase, TTFT / TPOT / tokens/s.

Per node and forward: ``time = max(FLOPs / (peak x flops_efficiency), bytes / (bandwidth x
bandwidth_efficiency))``, bound by whichever is larger (``hardware.roofline.roofline_time``). FLOPs are the
roofline FLOPs of ``traffic`` (2 * macs + the non-matmul arithmetic), bytes the node's traffic (weights,
activations read and written, KV cache read and appended). Nodes run one after another (no overlap), so a
forward's time is the sum over its nodes, and a phase's the sum over its forwards. ``peak`` is the device's
dense peak at the compute dtype (default: the activation dtype), for every op, matmul or not.

A generation (prompt S, N new tokens) is one prefill forward plus N - 1 decode forwards: its FLOPs and
bytes are closed forms (``phases.generation_sum``); its time is the prefill time plus the sum of the
per-node roofline times of each decode step (a max per node and step has no useful closed form, so the
steps are evaluated together as numpy vectors, one entry per step). TTFT = the prefill's time; TPOT = the
mean decode step time; tokens/s = B * N / (TTFT + the decode time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from .engines import VLLM, ExecutionProfile, apply_engine, get_engine
from .errors import QueryError
from .formula import compile_formula, compile_formulas
from .hardware import DeviceSpec, compute_dtype_name, get_device, utilization
from .hardware.roofline import roofline_time
from .phases import DECODE, GENERATE, PREFILL, Phase
from .profile import ModelProfile, profile_model, with_engine
from .results import Counter, NodeRoofline, PhaseReport
from .traffic import CATEGORIES, Dtypes, ModelTraffic, dtypes, intensity, model_traffic, weights_label

_FIELDS: tuple[str, ...] = ("flops", *CATEGORIES)


@dataclass(frozen=True)
class Settings:
    """Everything a roofline prediction depends on besides the model and the shape."""

    device: DeviceSpec
    dtypes: Dtypes
    compute_dtype: str
    flops_efficiency: float = 1.0
    bandwidth_efficiency: float = 1.0
    weight_dtype: str | None = None  # as given: an explicit weight dtype overrides quantization_config
    quantization: Any = "config"  # "config" | "none" | a quantization.Quantization
    # a hardware.roofline.DeviceModel: per-node rates by kernel class and shape, plus ops x per-op cost
    # (llm_profiler.kernels); None: the plain roofline at peak x efficiency
    device_model: Any = None

    @cached_property
    def peak(self) -> float:
        return self.device.peak(self.compute_dtype) * self.flops_efficiency

    @cached_property
    def bandwidth(self) -> float:
        return self.device.memory_bandwidth * self.bandwidth_efficiency


def settings(device: DeviceSpec | str, weight_dtype: str | None = None, act_dtype: str = "bf16",
             kv_dtype: str | None = None, compute_dtype: str | None = None, flops_efficiency: float = 1.0,
             bandwidth_efficiency: float = 1.0, quantization: Any = "config", device_model: Any = None) -> Settings:
    """Validated settings; the compute dtype defaults to the activation dtype (int4 weights are dequantized
    to it), and the efficiencies (in (0, 1]) scale the peak FLOP/s and bandwidth. ``weight_dtype`` None:
    the weights as the model's ``quantization_config`` stores them (``quantization="config"``, the default),
    bf16 where it quantizes nothing; an explicit weight dtype stores every matrix at it, overriding the
    config; ``quantization="none"`` ignores the config (``llm_profiler.quantization.resolve``).
    ``device_model``: a ``hardware.roofline.DeviceModel`` (``hardware.cpu_bench.measure_cpu_model()`` for this
    CPU) or ``"datasheet"`` (``hardware.devices.datasheet_model`` of the device): each node's time at the rate
    of its kernel class and shape plus its ops x the per-op cost (``llm_profiler.kernels``)."""
    from .quantization import MODES, Quantization

    if not isinstance(quantization, Quantization) and quantization not in MODES:
        raise QueryError(f"quantization must be one of {', '.join(MODES)}, got {quantization!r}")
    dt = dtypes(weight_dtype or "bf16", act_dtype, kv_dtype)
    dev = get_device(device)
    compute = compute_dtype_name(compute_dtype or dt.act.name)
    dev.peak(compute)  # a clear error now when the device has no figure for it
    roofline_time(0, 0, dev, compute, flops_efficiency, bandwidth_efficiency)  # validates the efficiencies
    given = None if weight_dtype is None else dt.weight.name
    dm = _device_model(device_model, dev, compute)
    return Settings(dev, dt, compute, float(flops_efficiency), float(bandwidth_efficiency), given, quantization, dm)


def _device_model(device_model: Any, dev: DeviceSpec, compute: str) -> Any:
    """None, a DeviceModel, or "datasheet" resolved to the device's datasheet model; checked for ``compute``."""
    from .hardware.devices import datasheet_model
    from .hardware.roofline import DeviceModel

    if device_model is None:
        return None
    if isinstance(device_model, str) and device_model == "datasheet":
        device_model = datasheet_model(dev)
    if not isinstance(device_model, DeviceModel):
        raise QueryError(f"device_model must be a hardware.roofline.DeviceModel or 'datasheet', got {device_model!r}")
    if not device_model.has(compute):
        raise QueryError(f"device_model has no rates for compute dtype {compute!r}; it has: {', '.join(device_model.gemm)}")
    return device_model


def with_quantization(st: Settings, source: Any) -> tuple[Settings, list[str]]:
    """``st`` with the weight storage of ``source``'s ``quantization_config`` (as ``settings`` says), and
    the notes that say which storage was used."""
    from .quantization import resolve

    if st.dtypes.quant is not None:
        return st, []
    quant, notes = resolve(source, st.weight_dtype, st.quantization)
    if quant is None:
        return st, notes
    return replace(st, dtypes=replace(st.dtypes, quant=quant)), notes


class _Evaluator:
    """The per-node formulas of a model compiled once: exact integers at one shape, numpy vectors over steps."""

    def __init__(self, traffic: ModelTraffic, engine: str = "hf-eager", lm_head: str = "all") -> None:
        self.traffic = traffic
        self.engine, self.lm_head = engine, lm_head
        self._kernels: dict[str, Any] = {}
        self._fn = compile_formulas([t.get(f) for _, t in traffic.groups for f in _FIELDS])
        self._generation: dict[str, Callable[[int, int, int, int], int] | None] = {}
        self._numeric: dict[str, Callable[..., Any]] = {}

    def generation_total(self, field: str, phase: Phase) -> tuple[int, list[str]]:
        """A generation's total of ``field``: from its closed form in N when sympy finds one (summed and
        compiled once per field; later calls take microseconds), else the exact sum of the prefill and every
        decode step's value (the compiled formula over the steps' contexts, Python-int exact)."""
        from .generation import compile_exact, generation_sum

        if field not in self._generation:
            try:
                summed = generation_sum(self.traffic.total(field).to_sympy())  # symbolic in N
                self._generation[field] = compile_exact(summed.expr) if summed.closed_form else None
            except QueryError:  # a term with no closed form in N (a ceiling, a product of windows)
                self._generation[field] = None
        exact = self._generation[field]
        b, s, p, n = phase.batch, phase.seq, phase.past, phase.new_tokens
        if exact is not None:
            return exact(b, s, p, n), []
        fn = self._numeric.get(field)
        if fn is None:
            fn = self._numeric[field] = compile_formula(self.traffic.total(field))
        total = int(fn(b, s, p))
        if n > 1:
            contexts = np.arange(p + s, p + s + n - 1, dtype=np.int64)
            # counts grow with the context: the last step bounds every step; past int64's range, Python ints
            if abs(int(fn(b, 1, p + s + n - 2))) * (n - 1) >= 2**62:
                contexts = contexts.astype(object)
            total += int(np.sum(fn(b, 1, contexts)))
        return total, [f"{field}: summed over the {n - 1} decode steps (no closed form in N)"]

    def kernels(self, act_dtype: str) -> Any:
        """The groups' kernel facts (``kernels.kernel_facts``) at an activation dtype, built once."""
        if act_dtype not in self._kernels:
            from .kernels import kernel_facts

            self._kernels[act_dtype] = kernel_facts(self.traffic.groups, self.engine, act_dtype, self.lm_head)
        return self._kernels[act_dtype]

    def matrix(self, batch: int, seq: int, past: np.ndarray) -> np.ndarray:
        """The values over an array of contexts as one float array (groups, fields, contexts), so that the
        decode steps' arithmetic runs once over every group (46 groups of gemma-2-9b: a quarter of a warm
        generation roofline went into per-group numpy calls)."""
        flat = self._fn(batch, seq, past)
        out = np.empty((len(flat), len(past)), dtype=np.float64)
        for i, value in enumerate(flat):
            out[i] = value  # a formula free of P is a scalar: broadcast over the contexts
        return out.reshape(len(self.traffic.groups), len(_FIELDS), len(past))

    def values(self, batch: Any, seq: Any, past: Any) -> list[dict[str, Any]]:
        """Per group: field -> value (ints for int arguments, arrays for array arguments)."""
        flat = self._fn(batch, seq, past)
        width = len(_FIELDS)
        out = []
        for g in range(len(self.traffic.groups)):
            row = flat[g * width:(g + 1) * width]
            if isinstance(past, np.ndarray):  # scalars (formulas free of P) broadcast in the arithmetic
                row = [v if isinstance(v, int) else np.asarray(v, dtype=np.float64) for v in row]
            else:
                row = [int(v) for v in row]
            out.append(dict(zip(_FIELDS, row)))
        return out


_EVALUATORS: dict[tuple[int, Dtypes, str], tuple[ModelProfile, _Evaluator]] = {}


def _evaluator(model: ModelProfile, dt: Dtypes, lm_head: str) -> _Evaluator:
    key = (id(model), dt, lm_head)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = (model, _Evaluator(model_traffic(model, dt, lm_head), model.engine, lm_head))  # keeps the model alive
    return _EVALUATORS[key][1]


def _model(source: Any) -> ModelProfile:
    return source if isinstance(source, ModelProfile) else profile_model(source)


_PHASE_VIEWS: dict[tuple[int, ExecutionProfile], tuple[ModelProfile, ModelProfile]] = {}


def phase_model(source: Any, kind: str, engine: str | ExecutionProfile | None = None) -> ModelProfile:
    """The formulas a forward of phase ``kind`` (prefill or decode) runs under ``engine`` (default ``vllm``):
    the engine's view, except where the engine computes decode forwards differently (``vllm``: MLA layers
    in the absorbed form for decode, the naive form for prefill, as vLLM's MLA backend does)."""
    eng = get_engine(engine, default=VLLM)
    base = _model(source)
    view = with_engine(base, eng)
    variant = eng.for_phase(kind)
    if variant == eng or not any(layer.mixer.kind == "mla" for layer in view.spec.layers):
        return view  # the same rules (the MLA form only matters where a layer is MLA)
    reference = view.graph.meta.get("reference", base.graph)
    key = (id(reference), variant)
    if key not in _PHASE_VIEWS:  # the view is kept alive beside its variant, so ids are not reused
        graph = apply_engine(reference, variant)  # type: ignore[arg-type]
        _PHASE_VIEWS[key] = (view, ModelProfile(view.family, graph))
    return _PHASE_VIEWS[key][1]


def _mla_notes(prefill: ModelProfile | None, decode: ModelProfile | None) -> list[str]:
    """What the report should say when the engine runs MLA layers in a phase-dependent form."""
    notes = []
    if decode is not None and decode.graph.meta.get("mla") == "absorbed":
        notes.append("MLA decode in the absorbed form (DeepSeek-V2 section 2.1.3, FlashMLA, vLLM's MLA backend): "
                     "scores and context over the latent cache, kv_b_proj folded into q and the output; "
                     "transformers (--engine hf-eager) re-expands every cached token through kv_b_proj")
    if prefill is not None and decode is not None and prefill is not decode:
        notes.append("MLA prefill in the naive form (the latent decompressed through kv_b_proj), as vLLM runs it")
    return notes


@dataclass
class _Forward:
    """One forward's roofline: totals and per-group values."""

    flops: int
    by_category: dict[str, int]
    time: float
    compute_bound: float
    memory_bound: float
    groups: list[dict[str, Any]]

    @property
    def bytes(self) -> int:
        return sum(self.by_category.values())


def _kernel_times(ev: _Evaluator, st: Settings, groups: list[dict[str, Any]], batch: Any, seq: Any,
                  past: Any) -> list[tuple[Any, Any]]:
    """Per group: (time, compute-bound?) under ``st.device_model`` (``kernels.group_times``)."""
    from .kernels import captures_graphs, copy_bytes, fresh_output_bytes, group_times

    kf = ev.kernels(st.dtypes.act.name)
    captured = captures_graphs(ev.engine)
    model = st.device_model
    rows = kf.rows(batch, seq, past)
    eager = [r[3:] for r in rows]
    act, kv = float(st.dtypes.act.effective_bytes), float(st.dtypes.kv.effective_bytes)
    copied = copy_bytes(eager, act, kv)
    if model.fresh_pages() and not captured:  # eager allocations (kernels.fresh_output_bytes)
        fresh = fresh_output_bytes(eager, act, kv, model.fresh_output_threshold)
    else:
        fresh = [0.0] * len(groups)
    out = []
    for g, ((mm, m, extra, *_), v) in enumerate(zip(rows, groups)):
        nbytes = sum(v[c] for c in CATEGORIES) + extra
        out.append(group_times(model, kf.kernel[g], st.compute_dtype, v["flops"], mm, nbytes, m,
                               kf.ops[g], captured, weight_bytes=v["weights"] or None, fresh_bytes=fresh[g],
                               copied_bytes=copied[g]))
    return out


def _forward(ev: _Evaluator, st: Settings, batch: int, seq: int, past: int) -> _Forward:
    groups = ev.values(batch, seq, past)
    flops, cats = 0, dict.fromkeys(CATEGORIES, 0)
    time = cb = mb = 0.0
    modelled = _kernel_times(ev, st, groups, batch, seq, past) if st.device_model is not None else None
    for g, ((nodes, _), v) in enumerate(zip(ev.traffic.groups, groups)):
        k = len(nodes)
        nbytes = sum(v[c] for c in CATEGORIES)
        ct, mt = v["flops"] / st.peak, nbytes / st.bandwidth
        v["time"], v["bound"] = max(ct, mt), "compute" if ct >= mt and v["flops"] else "memory"
        if modelled is not None:
            t, compute_bound = modelled[g]
            v["time"], v["bound"] = float(t), "compute" if bool(compute_bound) else "memory"
        flops += k * v["flops"]
        for c in CATEGORIES:
            cats[c] += k * v[c]
        time += k * v["time"]
        if v["bound"] == "compute":
            cb += k * v["time"]
        else:
            mb += k * v["time"]
    return _Forward(flops, cats, time, cb, mb, groups)


def _decode_steps(ev: _Evaluator, st: Settings, batch: int, prompt: int, past: int,
                  steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Roofline time of each decode step of a generation (step i at context past + prompt + i), and the
    part of it spent in compute-bound nodes."""
    if steps <= 0:
        return np.zeros(0), np.zeros(0)
    contexts = past + prompt + np.arange(steps, dtype=np.int64)
    if st.device_model is not None:
        groups = ev.values(batch, 1, contexts)
        total, compute = np.zeros(steps), np.zeros(steps)
        for (nodes, _), (t, bound) in zip(ev.traffic.groups, _kernel_times(ev, st, groups, batch, 1, contexts)):
            t = len(nodes) * np.broadcast_to(np.asarray(t, dtype=np.float64), (steps,))
            total += t
            compute += np.where(np.broadcast_to(bound, (steps,)), t, 0.0)
        return total, compute
    values = ev.matrix(batch, 1, contexts)  # (groups, fields, steps): flops, then the byte categories
    flops = values[:, 0]
    ct, mt = flops / st.peak, values[:, 1:].sum(axis=1) / st.bandwidth
    t = np.array([len(nodes) for nodes, _ in ev.traffic.groups], dtype=np.float64)[:, None] * np.maximum(ct, mt)
    return t.sum(axis=0), np.where((ct >= mt) & (flops > 0), t, 0.0).sum(axis=0)


def _counters(flops: int, nbytes: int, latency: float, st: Settings) -> tuple[Counter, Counter]:
    io = Counter(total=nbytes, throughput=nbytes / latency if latency else 0.0,
                 theoretical_latency_s=nbytes / st.bandwidth)
    fl = Counter(total=flops, throughput=flops / latency if latency else 0.0,
                 theoretical_latency_s=flops / st.peak)
    return io, fl


def _report(model: ModelProfile, st: Settings, phase: Phase, forwards: int, flops: int,
            by_category: dict[str, int], latency: float, compute_bound: float, memory_bound: float,
            **extra: Any) -> PhaseReport:
    nbytes = sum(by_category.values())
    io, fl = _counters(flops, nbytes, latency, st)
    peak, bw = st.device.peak(st.compute_dtype), st.device.memory_bandwidth
    return PhaseReport(
        model=model.spec.name or model.spec.model_type, device=st.device.name, phase=phase.kind,
        batch=phase.batch, seq=phase.seq, past=phase.past, new_tokens=phase.new_tokens, lm_head=phase.lm_head,
        dtypes=st.dtypes.as_dict(), compute_dtype=st.compute_dtype, flops_efficiency=st.flops_efficiency,
        bandwidth_efficiency=st.bandwidth_efficiency, forwards=forwards, latency_s=latency, tokens=phase.tokens,
        tokens_per_s=phase.tokens / latency if latency else 0.0, io=io, flops=fl, bytes_by_category=by_category,
        mfu=flops / latency / peak if latency else 0.0, mbu=nbytes / latency / bw if latency else 0.0,
        compute_bound_s=compute_bound, memory_bound_s=memory_bound,
        bound="compute" if compute_bound > memory_bound else "memory", **extra,
    )


def _node_rows(model: ModelProfile, ev: _Evaluator, fwd: _Forward) -> list[NodeRoofline]:
    by_path: dict[str, dict[str, Any]] = {}
    for (nodes, _), v in zip(ev.traffic.groups, fwd.groups):
        for node in nodes:
            by_path[node.path] = v
    rows = []
    for node in model.nodes:
        v = by_path[node.path]
        nbytes = sum(v[c] for c in CATEGORIES)
        rows.append(NodeRoofline(path=node.path, kind=node.kind, flops=v["flops"], bytes=nbytes,
                                 bytes_by_category={c: v[c] for c in CATEGORIES},
                                 intensity=intensity(v["flops"], nbytes) if nbytes else None,
                                 time_s=v["time"], bound=v["bound"]))
    return rows


def phase_report(source: Any, phase: Phase, device: DeviceSpec | str | Settings = "a100-80gb", *,
                 nodes: bool = False, engine: str | ExecutionProfile | None = None, plan: Any = None,
                 system: Any = None, **options: Any) -> PhaseReport:
    """The roofline of one phase on a device, under ``engine`` (default ``vllm``: what a serving user
    expects; ``hf-eager`` for the validated transformers forward). ``options``: weight_dtype, act_dtype,
    kv_dtype, compute_dtype, flops_efficiency, bandwidth_efficiency, quantization (see ``settings``);
    ``nodes`` adds the per-node rows (prefill and decode). The report says whether weights + KV +
    activations fit the device, and which weight storage it used (``dtypes``, notes).

    ``plan`` (a ``parallel.ParallelPlan`` or a dict of ``parallel.make_plan``'s arguments) and / or ``system``
    (a name, file or ``SystemSpec``; its device replaces ``device`` unless ``device`` is a ``Settings``): the
    phase on one rank of the plan (prefill and decode), with its collectives over the system's links and the
    pipeline bubble (``report.parallel``, docs/parallel.md); without a system, ``plan.devices`` copies of the
    device joined by its interconnect."""
    eng = get_engine(engine, default=VLLM)
    base = _model(source)
    model = phase_model(base, PREFILL, eng)  # prefill forwards (and the memory the phase holds)
    par = _parallel_setup(plan, system, device)
    if par is not None and not isinstance(device, Settings):
        device = par[1].device
    st = device if isinstance(device, Settings) else settings(device, **options)
    st, quant_notes = with_quantization(st, source if not isinstance(source, ModelProfile) else base)
    if par is not None:
        report = _parallel_phase(base, eng, st, phase, par[0], par[1], nodes)
        if quant_notes:
            report = report.model_copy(update={"notes": [*quant_notes, *report.notes]})
        return _with_rank_capacity(report, model, st, phase, eng, par[0])
    if phase.kind in (PREFILL, DECODE):
        forward = phase_model(base, phase.kind, eng)
        ev = _evaluator(forward, st.dtypes, phase.lm_head)
        fwd = _forward(ev, st, phase.batch, phase.seq, phase.past)
        report = _report(forward, st, phase, 1, fwd.flops, fwd.by_category, fwd.time, fwd.compute_bound,
                         fwd.memory_bound, nodes=_node_rows(forward, ev, fwd) if nodes else [])
        mla = _mla_notes(None, forward) if phase.kind == DECODE else _mla_notes(model, phase_model(base, DECODE, eng))
        report = report.model_copy(update={"notes": [*report.notes, *mla[-1:]]}) if mla else report
    elif phase.kind == GENERATE:
        decode = phase_model(base, DECODE, eng)
        report = _generation(model, _evaluator(model, st.dtypes, phase.lm_head), st, phase,
                             None if decode is model else _evaluator(decode, st.dtypes, phase.lm_head))
        mla = _mla_notes(model, decode)
        report = report.model_copy(update={"notes": [*report.notes, *mla]}) if mla else report
    else:  # pragma: no cover - Phase validates the kind
        raise QueryError(f"unknown phase {phase.kind!r}")
    if quant_notes:
        report = report.model_copy(update={"notes": [*quant_notes, *report.notes]})
    if st.device_model is not None:
        report = report.model_copy(update={"notes": [*report.notes, f"device model: {st.device_model.source or 'given'}"]})
    return _with_capacity(report, model, st, phase, eng)


def _parallel_setup(plan: Any, system: Any, device: Any) -> tuple[Any, Any] | None:
    """(ParallelPlan, SystemSpec) when a plan or a system is given, else None."""
    if plan is None and system is None:
        return None
    from .hardware.systems import get_system
    from .parallel.comm import system_for
    from .parallel.plan import ParallelPlan, PlanError, make_plan

    if isinstance(plan, ParallelPlan):
        pl = plan
    elif plan is None or isinstance(plan, dict):
        pl = make_plan(**(plan or {}))
    else:
        raise PlanError(f"plan must be a ParallelPlan or a dict of make_plan's arguments, got {type(plan).__name__}")
    if system is not None:
        return pl, get_system(system)
    dev = device.device if isinstance(device, Settings) else device
    return pl, system_for(dev, pl.devices)


def _comm(graph: Any, plan: Any, system: Any, act: int, last: bool, batch: int, seq: int, past: int,
          kv: int) -> tuple[list[float], dict[tuple[Any, ...], list[Any]]]:
    """Per stage: seconds of its collectives in one forward at (batch, seq, past); and the collectives grouped by
    (kind, group, ranks, link, site, stage, payload) -> [count, first path, seconds each]."""
    from .parallel.collectives import collectives
    from .parallel.comm import collective_s, link_for

    span = {"tp": plan.tp, "cp": plan.tp * plan.cp, "ep": plan.tp * plan.cp * plan.ep, "pp": plan.devices}
    comm = [0.0] * plan.pp
    rows: dict[tuple[Any, ...], list[Any]] = {}
    for c in collectives(graph, plan, act, last_position=last, kv_bytes=kv):
        path = link_for(system, span[c.group])
        size = c.bytes_at(batch, seq, past)
        t = collective_s(c.kind, size, c.ranks, path)
        comm[c.stage] += t
        row = rows.setdefault((c.kind, c.group, c.ranks, path.name, c.site, c.stage, size), [0, c.after, t])
        row[0] += 1
    return comm, rows


def _parallel_phase(base: ModelProfile, eng: ExecutionProfile, st: Settings, phase: Phase, plan: Any, system: Any,
                    nodes: bool) -> PhaseReport:
    """One rank of ``plan``: each pipeline stage's roofline at the micro-batch, its collectives' time over the
    system's links, and the pipeline schedule: latency = (m + pp - 1) x the slowest stage-time. A generation:
    its prefill so, then each decode step so (``_parallel_generation``)."""
    from .parallel.plan import check_batch, check_plan, check_seq
    from .parallel.shard import layout, rank_model, rule
    from .results import CollectiveCost, ParallelReport

    check_seq(plan, phase.seq, phase.kind)  # cp splits a prefill's prompt only
    if phase.kind == GENERATE:
        return _parallel_generation(base, eng, st, phase, plan, system)
    notes = check_plan(plan, base.spec)
    mb = check_batch(plan, phase.batch)
    forward = phase_model(base, phase.kind, eng)
    stages = []
    for s in range(plan.pp):
        ranked = rank_model(forward, plan, s, phase.lm_head == "last")
        ev = _evaluator(ranked, st.dtypes, phase.lm_head)
        stages.append((ranked, ev, _forward(ev, st, mb, phase.seq, phase.past)))
    comm, rows = _comm(forward.graph, plan, system, st.dtypes.act.bits // 8, phase.lm_head == "last", mb, phase.seq,
                       phase.past, st.dtypes.kv.bits // 8)
    times = [fwd.time + comm[s] for s, (_, _, fwd) in enumerate(stages)]
    crit = max(range(plan.pp), key=lambda s: times[s])
    step, m = times[crit], plan.micro_batches
    ranked, ev, fwd = stages[crit]
    latency, bubble = (m + plan.pp - 1) * step, (plan.pp - 1) * step
    lay, reference = layout(base.spec, plan), {n.path: n for n in forward.nodes}
    weights = []
    for s_model, _, _ in stages:
        sharded = replicated = 0
        for group_nodes, t in model_traffic(s_model, st.dtypes).groups:
            for node in group_nodes:
                if rule(reference[node.path], lay) == "replicated":
                    replicated += t.stored
                else:
                    sharded += t.stored
        weights.append((sharded + replicated, sharded, replicated))
    heaviest = max(weights)
    costs = [CollectiveCost(kind=k, group=g, ranks=n, link=link, site=site, stage=s, count=count, payload_bytes=size,
                            time_s=t, total_s=count * t, first_after=after)
             for (k, g, n, link, site, s, size), (count, after, t) in rows.items()]
    parallel = ParallelReport(
        plan=plan.model_dump(), plan_name=plan.describe(), system=system.name, devices=plan.devices, rank_batch=mb,
        weight_bytes_per_rank=heaviest[0], weight_bytes_sharded=heaviest[1], weight_bytes_replicated=heaviest[2],
        compute_s=m * fwd.compute_bound, memory_s=m * fwd.memory_bound, communication_s=m * comm[crit],
        bubble_s=bubble, latency_s=latency, stage_s=times, collectives=costs, notes=notes)
    cats = {c: m * v for c, v in fwd.by_category.items()}
    report = _report(ranked, st, phase, 1, m * fwd.flops, cats, latency, m * fwd.compute_bound, m * fwd.memory_bound,
                     nodes=_node_rows(ranked, ev, fwd) if nodes else [], parallel=parallel)
    extra = [f"parallel plan {plan.describe()} on {system.name}: io, flops and bytes are one rank's of the slowest "
             f"stage ({crit}); latency = (micro-batches {m} + pp {plan.pp} - 1) x its stage-time, communication "
             f"included", *notes]
    return report.model_copy(update={"notes": [*report.notes, *extra]})


def _parallel_generation(base: ModelProfile, eng: ExecutionProfile, st: Settings, phase: Phase, plan: Any,
                         system: Any) -> PhaseReport:
    """A generation under ``plan``: the prefill as ``_parallel_phase``, then each of the N - 1 decode steps
    through the pipeline, (m + pp - 1) x its slowest stage-time (the stage's roofline at the step's context plus
    its collectives, whose payloads do not depend on the context). FLOPs and bytes: one rank of the prefill's
    slowest stage over the whole generation."""
    from .parallel.plan import check_batch
    from .parallel.shard import rank_model

    b, s, p, n = phase.batch, phase.seq, phase.past, phase.new_tokens
    mb, m = check_batch(plan, b), plan.micro_batches
    pre = _parallel_phase(base, eng, st, Phase.prefill(b, s, p, phase.lm_head), plan, system, False)
    assert pre.parallel is not None
    decode = phase_model(base, DECODE, eng)
    comm, rows = _comm(decode.graph, plan, system, st.dtypes.act.bits // 8, phase.lm_head == "last", mb, 1, p + s,
                       st.dtypes.kv.bits // 8)
    steps, compute = np.zeros(max(n - 1, 0)), np.zeros(max(n - 1, 0))
    per_stage = []
    for stage in range(plan.pp):
        ev = _evaluator(rank_model(decode, plan, stage), st.dtypes, phase.lm_head)
        total, comp = _decode_steps(ev, st, mb, s, p, n - 1)
        per_stage.append((total + comm[stage], comp, total))
    if n > 1:
        stacked = np.stack([t for t, _, _ in per_stage])
        crit = np.argmax(stacked, axis=0)
        steps = stacked[crit, np.arange(n - 1)]
        compute = np.stack([c for _, c, _ in per_stage])[crit, np.arange(n - 1)]
        roof = np.stack([r for _, _, r in per_stage])[crit, np.arange(n - 1)]
    else:
        roof = steps
    factor = m + plan.pp - 1
    decode_time = factor * float(steps.sum())
    latency = pre.latency_s + decode_time
    par = pre.parallel
    dec_comm = float((steps - roof).sum())
    parallel = par.model_copy(update={
        "compute_s": par.compute_s + m * float(compute.sum()),
        "memory_s": par.memory_s + m * float((roof - compute).sum()),
        "communication_s": par.communication_s + m * dec_comm,
        "bubble_s": par.bubble_s + (plan.pp - 1) * float(steps.sum()), "latency_s": latency,
        "notes": [*par.notes, f"decode steps: {n - 1}, each (m {m} + pp {plan.pp} - 1) x its slowest stage-time; "
                  f"per step {sum(r[0] for r in rows.values())} collectives"]})
    tokens = b * n
    return pre.model_copy(update={
        "phase": GENERATE, "new_tokens": n, "forwards": n, "latency_s": latency, "tokens": tokens,
        "tokens_per_s": tokens / latency if latency else 0.0, "ttft_s": pre.latency_s,
        "tpot_s": decode_time / (n - 1) if n > 1 else None, "parallel": parallel,
        "compute_bound_s": parallel.compute_s, "memory_bound_s": parallel.memory_s,
        "bound": "compute" if parallel.compute_s > parallel.memory_s else "memory",
        "notes": [*pre.notes, "generate under a plan: io, flops, bytes and the collectives listed are the prefill's "
                  "(one rank of its slowest stage); the split covers the whole generation"]})


def _with_rank_capacity(report: PhaseReport, model: ModelProfile, st: Settings, phase: Phase,
                        eng: ExecutionProfile, plan: Any) -> PhaseReport:
    """As ``_with_capacity``, per rank: the stage whose rank needs the most memory at batch / dp."""
    from .memory import memory_usage
    from .parallel.shard import rank_model

    context = phase.past + phase.seq
    d = st.dtypes
    usages = [memory_usage(rank_model(model, plan, s, phase.lm_head == "last"), phase.batch // plan.dp, phase.seq, max(context, phase.seq),
                           st.device, weight_dtype=d.weight, act_dtype=d.act, kv_dtype=d.kv, lm_head=phase.lm_head,
                           engine=eng, quantization=d.quant or "none") for s in range(plan.pp)]
    usage = max(usages, key=lambda u: u.total)
    notes = list(report.notes)
    if not usage.fits:
        gib = 2**30
        notes.append(f"does not fit one rank of {plan.describe()} on {st.device.name}: {usage.total / gib:.2f} GiB > "
                     f"{usage.capacity / gib:.2f} GiB (more ranks, or quantize)")
    return report.model_copy(update={"engine": eng.name, "memory": usage, "fits": usage.fits, "notes": notes})


def _with_capacity(report: PhaseReport, model: ModelProfile, st: Settings, phase: Phase,
                   eng: ExecutionProfile) -> PhaseReport:
    """The report with its engine, the memory the phase needs (weights + KV at the phase's final context +
    peak activations) and whether it fits the device; a note when it does not."""
    from .memory import memory_usage

    context = phase.past + phase.seq + (phase.new_tokens - 1 if phase.kind == GENERATE else 0)
    d = st.dtypes
    usage = memory_usage(model, phase.batch, phase.seq, max(context, phase.seq), st.device, weight_dtype=d.weight,
                         act_dtype=d.act, kv_dtype=d.kv, lm_head=phase.lm_head, engine=eng,
                         quantization=d.quant or "none")
    notes = list(report.notes)
    if not usage.fits:
        gib = 2**30
        notes.append(f"does not fit {st.device.name}: weights {usage.weights / gib:.2f} GiB + KV "
                     f"{usage.kv_cache / gib:.2f} GiB + activations {usage.activations / gib:.2f} GiB = "
                     f"{usage.total / gib:.2f} GiB > {usage.capacity / gib:.2f} GiB; the latency assumes it did "
                     "(shard it over more devices, or quantize: --weight-dtype, --kv-dtype)")
    return report.model_copy(update={"engine": eng.name, "memory": usage, "fits": usage.fits, "notes": notes})


def _generation(model: ModelProfile, ev: _Evaluator, st: Settings, phase: Phase,
                decode_ev: _Evaluator | None = None) -> PhaseReport:
    """``decode_ev``: the decode forwards' formulas when the engine runs them differently from the prefill
    (absorbed MLA); None: the same formulas."""
    b, s, p, n = phase.batch, phase.seq, phase.past, phase.new_tokens
    first = Phase.prefill(b, s, p, phase.lm_head)
    pre = _forward(ev, st, b, s, p)
    prefill = _report(model, st, first, 1, pre.flops, pre.by_category, pre.time, pre.compute_bound,
                      pre.memory_bound)
    # Closed forms of the whole generation, then the decode part = whole - prefill. With separate decode
    # formulas: the whole under them, less their prefill, plus the prefill's own.
    dev = decode_ev or ev
    dec_pre = pre if decode_ev is None else _forward(decode_ev, st, b, s, p)
    notes: list[str] = []
    totals: dict[str, int] = {}
    for f in _FIELDS:
        whole, field_notes = dev.generation_total(f, phase)
        first_forward = pre.flops if f == "flops" else pre.by_category[f]
        dec_first = dec_pre.flops if f == "flops" else dec_pre.by_category[f]
        totals[f] = whole - dec_first + first_forward
        notes.extend(field_notes)
    step_times, step_compute = _decode_steps(dev, st, b, s, p, n - 1)
    decode_time, decode_compute = float(step_times.sum()), float(step_compute.sum())
    dec_cats = {c: totals[c] - pre.by_category[c] for c in CATEGORIES}
    decode = None
    if n > 1:
        decode_phase = Phase(DECODE, b, 1, p + s, 0, phase.lm_head)
        decode = _report(model, st, decode_phase, n - 1, totals["flops"] - pre.flops, dec_cats, decode_time,
                         decode_compute, decode_time - decode_compute).model_copy(update={"tokens": b * (n - 1),
                                                              "tokens_per_s": b * (n - 1) / decode_time})
    latency = pre.time + decode_time
    return _report(model, st, phase, n, totals["flops"], {c: totals[c] for c in CATEGORIES}, latency,
                   pre.compute_bound + decode_compute, pre.memory_bound + decode_time - decode_compute, ttft_s=pre.time,
                   tpot_s=decode_time / (n - 1) if n > 1 else None, prefill=prefill, decode=decode, notes=notes)


def roofline(source: Any, device: DeviceSpec | str = "a100-80gb", phase: str = PREFILL, *, batch: int = 1,
             seq: int | None = None, past: int = 0, new_tokens: int = 128, lm_head: str | None = None,
             nodes: bool = False, engine: str | ExecutionProfile | None = VLLM, plan: Any = None,
             system: Any = None, **options: Any) -> PhaseReport:
    """Convenience: ``roofline("llama-2-7b", "a100-80gb", "decode", batch=1, past=1024)``; ``plan`` /
    ``system`` as ``phase_report`` (``roofline("llama-3.1-70b", phase="decode", plan={"tp": 8},
    system="dgx-h100")``). ``seq`` defaults
    to 2048 prompt tokens (prefill, generate) or 1 token per decode step, ``new_tokens`` to 128, as the CLI
    (docs/cli.md, "Defaults"). ``engine`` defaults to ``vllm``; ``lm_head`` to the engine's (``vllm``: the
    last position only)."""
    if seq is None:
        seq = 1 if phase == DECODE else 2048
    eng = get_engine(engine, default=VLLM)
    lm_head = lm_head or eng.lm_head
    if phase == PREFILL:
        ph = Phase.prefill(batch, seq, past, lm_head)
    elif phase == DECODE:
        ph = Phase.decode(batch, past, seq, lm_head)
    elif phase == GENERATE:
        ph = Phase.generate(batch, seq, new_tokens, past, lm_head)
    else:
        raise QueryError(f"unknown phase {phase!r}; valid: prefill, decode, generate")
    return phase_report(source, ph, device, nodes=nodes, engine=eng, plan=plan, system=system, **options)


def measured_utilization(report: PhaseReport, measured_s: float, device: DeviceSpec | str | None = None) -> tuple[float, float]:
    """(MFU, MBU) of a measured time for the phase of ``report``: its FLOPs and bytes over the time,
    against the device's peak FLOP/s (at the report's compute dtype) and bandwidth."""
    return utilization(measured_s, report.flops.total, report.io.total, device or report.device,
                       report.compute_dtype)


__all__ = ["Settings", "format_report", "measured_utilization", "phase_model", "phase_report", "roofline",
           "settings"]


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.3f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3f} ms"
    return f"{value * 1e6:.3f} us"


def format_report(report: PhaseReport, nodes: int = 0) -> str:
    """A performance-counter style text report (``nodes``: the per-node rows to show, slowest first)."""
    shape = f"batch {report.batch}, seq {report.seq}, past {report.past}"
    if report.phase == GENERATE:
        shape = f"batch {report.batch}, prompt {report.seq}, past {report.past}, {report.new_tokens} new tokens"
    d = report.dtypes
    lines = [
        f"{report.model} {report.phase} ({shape}) on {report.device}, engine {report.engine}: weights {weights_label(d)}, activations "
        f"{d['act']}, KV cache {d['kv']}, compute {report.compute_dtype}, lm_head on "
        f"{'all positions' if report.lm_head == 'all' else 'the last position'}"
        + (f", efficiency flops {report.flops_efficiency:g} / bandwidth {report.bandwidth_efficiency:g}"
           if report.flops_efficiency != 1 or report.bandwidth_efficiency != 1 else ""),
        f"  latency      {_seconds(report.latency_s):>12}   ({report.forwards} forward{'s' if report.forwards > 1 else ''}, "
        f"{report.bound}-bound; time in compute-bound nodes {_seconds(report.compute_bound_s)}, in memory-bound nodes {_seconds(report.memory_bound_s)})",
        f"  tokens       {report.tokens:>12}   ({report.tokens_per_s:,.1f} tokens/s)",
    ]
    if report.ttft_s is not None:
        lines.append(f"  TTFT         {_seconds(report.ttft_s):>12}")
    if report.tpot_s is not None:
        lines.append(f"  TPOT         {_seconds(report.tpot_s):>12}")
    for label, counter, unit in (("IO", report.io, "B"), ("FLOPs", report.flops, "FLOP")):
        lines.append(f"  {label:<6} total {_si(counter.total, unit):>12}   throughput {_si(counter.throughput, unit + '/s'):>13}"
                     f"   theoretical latency {_seconds(counter.theoretical_latency_s)}")
    cats = ", ".join(f"{k} {_si(v, 'B')}" for k, v in report.bytes_by_category.items())
    lines.append(f"  bytes: {cats}")
    lines.append(f"  utilization  MFU {report.mfu:.1%}   MBU {report.mbu:.1%}")
    if report.memory is not None:
        u, gib = report.memory, 2**30
        lines.append(f"  memory       weights {u.weights / gib:.2f} GiB + KV {u.kv_cache / gib:.2f} GiB + activations "
                     f"{u.activations / gib:.2f} GiB = {u.total / gib:.2f} GiB of {u.capacity / gib:.2f} GiB -> "
                     f"{'fits' if u.fits else 'does NOT fit'}")
    if report.parallel is not None:
        lines += _parallel_lines(report.parallel)
    for n in sorted(report.nodes, key=lambda r: -r.time_s)[:nodes]:
        lines.append(f"    {n.path:<48} {_seconds(n.time_s):>11} {n.bound:<7} {_si(n.flops, 'FLOP'):>12} "
                     f"{_si(n.bytes, 'B'):>10}  "
                     + (f"{n.intensity:8.1f} FLOP/B" if n.intensity is not None else "  no bytes (on chip)"))
    lines += [f"  note: {t}" for t in report.notes]
    return "\n".join(lines) + "\n"


def _parallel_lines(par: Any) -> list[str]:
    """The text lines of a plan's split: per-rank weights, where the time goes, each kind of collective."""
    lines = [
        f"  parallel     {par.plan_name} on {par.system} ({par.devices} devices; {par.rank_batch} sequence"
        f"{'s' if par.rank_batch != 1 else ''} per rank per micro-batch)",
        f"  per rank     weights {_si(par.weight_bytes_per_rank, 'B')} = {_si(par.weight_bytes_sharded, 'B')} sharded + "
        f"{_si(par.weight_bytes_replicated, 'B')} replicated",
        f"  split        compute {_seconds(par.compute_s)} + memory {_seconds(par.memory_s)} + communication "
        f"{_seconds(par.communication_s)} + bubble {_seconds(par.bubble_s)} = {_seconds(par.latency_s)}",
    ]
    for c in par.collectives:
        lines.append(f"    {c.count:>5} x {c.kind:<14} {c.group} ({c.ranks} ranks, {c.site}, stage {c.stage}) of "
                     f"{_si(c.payload_bytes, 'B')} over {c.link}: {_seconds(c.time_s)} each, {_seconds(c.total_s)}")
    return lines
