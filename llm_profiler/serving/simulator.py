"""The serving simulator: an event loop of engine steps over a request mix.

Time advances step by step: at the start of a step the requests that have arrived join the waiting queue;
the scheduler (``scheduler.py``) picks the step's batch; the step lasts the roofline time of that exact
batch (``step_cost.py``), plus the drafts' time under speculative decoding; then tokens are sampled and
finished requests leave. With nothing to run, time jumps to the next arrival (idle time).

Outputs: throughput over the run (first arrival to last completion), the latency distributions, KV-block
utilization per step, preemptions, and cost and energy (``cost.py``). Under a parallel plan
(``Server(..., plan=, system=)``) the steps are one replica's (``PlanStepCost``), the KV blocks a rank's, and
the dp replicas split the request stream (request i to replica i mod dp), simulated one by one and merged.
``max_rate_under_slo`` searches the highest arrival rate whose p99 TTFT (and optionally p99 TPOT) meets an
SLO, by doubling then bisection.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr

from ..engines import VLLM, ExecutionProfile, get_engine
from ..errors import ProfilerError, QueryError
from ..hardware import get_device
from ..memory import kv_cache_bytes, memory_usage, weights_bytes
from ..phases import PREFILL
from ..profile import ModelProfile, profile_model
from .cost import IDLE_FRACTION, CostReport, cost_report
from .scheduler import Scheduler, SchedulerConfig
from .speculative import Speculative, expected_tokens, mtp_cost_ratio, mtp_layers
from .step_cost import PlanStepCost, StepCost
from .workload import Requests, Workload, read_trace

MAX_STEPS = 20_000_000
TIMELINE_POINTS = 200
STRETCH_CELLS = 1 << 16  # steps x sequences of one decode stretch at most (its grids' size)


class _StepLog:
    """Per-step records (start, duration, used KV blocks after the step, running, in the system, tokens) in
    growing numpy columns: a stretch writes slices, an ordinary step one column; no per-step Python objects."""

    FIELDS = ("t", "dt", "kv", "running", "in_system", "tokens")

    def __init__(self, capacity: int = 4096) -> None:
        self.size = 0
        self.data = np.empty((len(self.FIELDS), capacity))

    def _room(self, k: int) -> None:
        if self.size + k > self.data.shape[1]:
            grown = np.empty((len(self.FIELDS), max(4 * self.data.shape[1], self.size + k)))
            grown[:, :self.size] = self.data[:, :self.size]
            self.data = grown

    def add(self, t: float, dt: float, kv: int, running: int, in_system: int, tokens: int) -> None:
        self._room(1)
        self.data[:, self.size] = (t, dt, kv, running, in_system, tokens)
        self.size += 1

    def extend(self, t: Any, dt: Any, kv: Any, running: Any, in_system: Any, tokens: Any) -> None:
        k = int(np.shape(t)[0])
        self._room(k)
        i, d = self.size, self.data
        for row, v in enumerate((t, dt, kv, running, in_system, tokens)):
            d[row, i:i + k] = v
        self.size += k

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[self.FIELDS.index(name), :self.size]


@dataclass
class _Part:
    """One replica's simulation: per request (its own order; ``index`` maps to the workload's), the gaps,
    the step log and the totals."""

    first: np.ndarray
    finish: np.ndarray
    itl: np.ndarray
    log: _StepLog
    busy: float
    idle: float
    input_time: float
    verify_rows: int
    verify_tokens: int
    batches: list[Any]
    preemptions: np.ndarray
    index: np.ndarray


class DoesNotFitError(QueryError):
    """The model (or one request) does not fit the device memory: says by how much and what to change."""


class Percentiles(BaseModel):
    model_config = ConfigDict(frozen=True)

    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Percentiles:
        if values.size == 0:
            return cls(mean=0.0, p50=0.0, p90=0.0, p99=0.0, max=0.0)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(mean=float(values.mean()), p50=float(p50), p90=float(p90), p99=float(p99), max=float(values.max()))


class KVCapacity(BaseModel):
    """How many KV blocks the device holds: (capacity x memory_fraction - weights - activations) / block bytes."""

    model_config = ConfigDict(frozen=True)

    usable_bytes: int
    weights_bytes: int
    activation_bytes: int
    draft_weights_bytes: int = 0
    block_bytes: int
    block_size: int
    num_blocks: int
    given: bool = False  # num_kv_blocks set by the user
    plan: str | None = None  # per rank of this plan: the binding pipeline stage's rank (``stage``)
    stage: int = 0

    @property
    def tokens(self) -> int:
        return self.num_blocks * self.block_size


class SpecStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    k: int
    acceptance: float
    draft: str
    draft_cost_ratio: float | None
    expected_tokens_per_step: float  # closed form
    simulated_tokens_per_step: float  # tokens per verifying decode row, from the simulation
    verify_rows: int


class ServeResult(BaseModel):
    """A simulated serving run (times in seconds; see docs/serving.md)."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    model: str
    device: str
    engine: str
    workload: str
    plan: str | None = None  # the parallel plan (``ParallelPlan.describe``), None on one device
    system: str | None = None
    devices: int = 1  # tp x pp x dp
    replicas: int = 1  # dp
    scheduler: dict[str, Any]
    kv: KVCapacity
    num_requests: int
    input_tokens: int
    output_tokens: int
    duration_s: float
    busy_s: float
    idle_s: float
    steps: int
    requests_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    ttft_s: Percentiles
    tpot_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles
    mean_running: float  # time-weighted over busy steps
    mean_in_system: float  # time-weighted over the run (waiting + running): L of Little's law
    kv_utilization_mean: float  # time-weighted over busy steps
    kv_utilization_max: float
    kv_timeline: list[tuple[float, float]]  # (time, used blocks / blocks), at most 200 points
    preemptions: int
    speculative: SpecStats | None = None
    cost: CostReport | None = None
    notes: list[str] = []
    _raw: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, np.ndarray]:
        """Per request (arrival, prompt, output, ttft, tpot, e2e), the inter-token gaps (itl) and per step
        (t, dt, kv, running, in_system, tokens); plus ``batches`` when recorded."""
        return self._raw


def kv_capacity(source: Any, model: ModelProfile, device: Any, config: SchedulerConfig, engine: ExecutionProfile,
                *, weight_dtype: str | None, act_dtype: str, kv_dtype: str | None, quantization: Any,
                max_context: int, draft: Any = None) -> KVCapacity:
    dev = get_device(device)
    block = config.block_size or engine.kv_block or 16
    budget = config.max_num_batched_tokens or engine.max_batched_tokens or 8192
    kv = kv_dtype or act_dtype
    weights = weights_bytes(source, weight_dtype, act_dtype, quantization)
    opts = {"weight_dtype": weight_dtype, "act_dtype": act_dtype, "kv_dtype": kv_dtype, "engine": engine,
            "quantization": quantization}
    act = max(memory_usage(source, 1, budget, budget, dev, **opts).activations,  # a full step of prompt tokens
              memory_usage(source, config.max_num_seqs, 1, max(max_context, 1), dev, **opts).activations)
    per_block = kv_cache_bytes(model, 1, block, kv)
    draft_w = 0
    if draft is not None:
        draft_w = weights_bytes(draft, weight_dtype, act_dtype, quantization)
        per_block += kv_cache_bytes(draft, 1, block, kv)
    usable = int(dev.memory_bytes * config.memory_fraction)
    free = usable - weights - act - draft_w
    gib = 2**30
    if free < per_block:
        raise DoesNotFitError(
            f"the model does not fit {dev.name}: weights {weights / gib:.2f} GiB"
            + (f" + draft weights {draft_w / gib:.2f} GiB" if draft_w else "")
            + f" + activations {act / gib:.2f} GiB leave {max(free, 0) / gib:.2f} GiB of the {usable / gib:.2f} GiB "
            f"usable (memory_fraction {config.memory_fraction:g}) for the KV cache, less than one {block}-token "
            "block; use a larger device, quantize (weight_dtype, kv_dtype) or shard the model")
    blocks = free // per_block
    given = config.num_kv_blocks is not None
    if given:
        blocks = int(config.num_kv_blocks)  # type: ignore[arg-type]
    return KVCapacity(usable_bytes=usable, weights_bytes=weights, activation_bytes=act, draft_weights_bytes=draft_w,
                      block_bytes=per_block, block_size=block, num_blocks=int(blocks), given=given)


def rank_capacity(cost: PlanStepCost, config: SchedulerConfig, engine: ExecutionProfile, *,
                  max_context: int) -> KVCapacity:
    """KV blocks per rank of ``cost``'s plan: for every pipeline stage's rank, (device memory x memory_fraction
    - its sharded weights - its activations) / its bytes per block (the K / V heads and layers it holds); the
    stage with the fewest blocks binds (a block is held on every stage at once)."""
    dev, d = cost.settings.device, cost.settings.dtypes
    block = config.block_size or engine.kv_block or 16
    usable = int(dev.memory_bytes * config.memory_fraction)
    rows = [_rank_usage(pre, cost.settings, config, engine, max_context, block) for pre, _ in cost.stage_models]
    frees = [(usable - w - a) // b if usable - w - a >= b else 0 for w, a, b in rows]
    stage = min(range(len(rows)), key=lambda i: (frees[i], -rows[i][0]))
    weights, act, per_block = rows[stage]
    name = cost.plan.describe()
    if frees[stage] < 1:
        gib = 2**30
        raise DoesNotFitError(
            f"the model does not fit {'one rank of ' + name if cost.plan.devices > 1 else 'one device'} on "
            f"{cost.system.name}: {'stage ' + str(stage) + chr(39) + 's rank' if cost.plan.pp > 1 else 'it'} holds weights "
            f"{weights / gib:.2f} GiB + activations {act / gib:.2f} GiB of the {usable / gib:.2f} GiB usable on "
            f"{dev.name} (memory_fraction {config.memory_fraction:g}), less than one {block}-token KV block "
            f"({per_block:,} bytes) left")
    given = config.num_kv_blocks is not None
    blocks = int(config.num_kv_blocks) if given else int(frees[stage])  # type: ignore[arg-type]
    del d
    return KVCapacity(usable_bytes=usable, weights_bytes=weights, activation_bytes=act, block_bytes=per_block,
                      block_size=block, num_blocks=blocks, given=given, plan=name, stage=stage)


def _rank_usage(pre: ModelProfile, st: Any, config: SchedulerConfig, engine: ExecutionProfile, max_context: int,
                block: int) -> tuple[int, int, int]:
    """(weight bytes, activation bytes, KV bytes per block) of one rank's forward (``rank_model``'s prefill
    view), at the settings' storage dtypes: the activations of a full step of prompt tokens or of
    ``max_num_seqs`` decodes at ``max_context``, the larger (as ``kv_capacity``)."""
    from .. import metrics as M
    from ..traffic import model_traffic

    d = st.dtypes
    budget = config.max_num_batched_tokens or engine.max_batched_tokens or 8192
    opts = {"weight_dtype": d.weight, "act_dtype": d.act, "kv_dtype": d.kv, "engine": engine,
            "quantization": d.quant or "none"}
    dev = st.device
    act = max(memory_usage(pre, 1, budget, budget, dev, **opts).activations,
              memory_usage(pre, config.max_num_seqs, 1, max(max_context, 1), dev, **opts).activations)
    per_block = pre.count(M.CACHE, "model", 1, block, 0) * (d.kv.bits // 8)
    return model_traffic(pre, d).weight_storage(), act, per_block


def smallest_fitting_plan(model: ModelProfile, st: Any, config: SchedulerConfig, engine: ExecutionProfile,
                          max_context: int, blocks_needed: int) -> Any:
    """The smallest plan (``parallel.search.smallest_plan``: fewest devices, tensor parallelism first) whose every
    stage's rank holds its weights, its activations and ``blocks_needed`` KV blocks; None past 64 devices."""
    from ..parallel.search import smallest_plan
    from ..parallel.shard import rank_model
    from ..perf import phase_model

    block = config.block_size or engine.kv_block or 16
    usable = int(st.device.memory_bytes * config.memory_fraction)
    pre = phase_model(model, PREFILL, engine)
    last = engine.lm_head == "last"

    def fits(plan: Any) -> bool:
        for s in range(plan.pp):
            w, a, b = _rank_usage(rank_model(pre, plan, s, last), st, config, engine, max_context, block)
            if usable - w - a < blocks_needed * b:
                return False
        return True

    return smallest_plan(model, fits)


def _plan_hint(found: Any, device: Any) -> str:
    if found is None:
        return "no plan of up to 64 devices fits: quantize (weight_dtype, kv_dtype) or shorten the requests"
    return (f"the smallest plan that fits: {found.describe()} ({found.devices} x {device.name}; "
            f"--tp {found.tp} --pp {found.pp})")


class Server:
    """A model served on a device by an engine: the step costs and KV capacity, built once, reused by every
    simulation (``run``) and by the rate search."""

    def __init__(self, model: Any, device: Any = "h100", *, engine: str | ExecutionProfile | None = VLLM,
                 scheduler: SchedulerConfig | None = None, speculative: Speculative | None = None,
                 weight_dtype: str | None = None, act_dtype: str = "bf16", kv_dtype: str | None = None,
                 quantization: Any = "config", flops_efficiency: float = 1.0, bandwidth_efficiency: float = 1.0,
                 cost_per_hour: float | None = None, tdp_watts: float | None = None,
                 idle_fraction: float = IDLE_FRACTION, config: Any = None, plan: Any = None,
                 system: Any = None) -> None:
        """``config``: the model's config (a ``ModelConfig`` or dict), where ``model`` is a ``ModelProfile``
        and speculation uses its MTP heads (the formulas do not keep ``num_nextn_predict_layers``).
        ``plan`` (a ``parallel.ParallelPlan`` or a dict of ``make_plan``'s arguments) and / or ``system`` (a
        name, file or ``SystemSpec``; its device replaces ``device``): serve under that plan
        (``PlanStepCost``, KV blocks per rank, dp replicas splitting the request stream)."""
        self.source = model
        self.config_source = config if config is not None else model
        self.model = model if isinstance(model, ModelProfile) else profile_model(model)
        self.engine = get_engine(engine, default=VLLM)
        self.config = scheduler or SchedulerConfig()
        self.spec = speculative
        self.dtype_opts = {"weight_dtype": weight_dtype, "act_dtype": act_dtype, "kv_dtype": kv_dtype,
                           "quantization": quantization}
        self.plan: Any = None
        self.system: Any = None
        self.cost: StepCost | PlanStepCost
        if plan is not None or system is not None:
            if speculative is not None and speculative.draft not in ("ngram", "mtp") and speculative.draft_cost_ratio is None:
                raise QueryError("a draft model under a parallel plan is not modelled: use spec draft 'ngram' or "
                                 "'mtp', or give the draft's cost ratio (draft_cost_ratio, --spec-cost-ratio)")
            self.cost = PlanStepCost(model, plan, system, self.engine, device=device, weight_dtype=weight_dtype,
                                     act_dtype=act_dtype, kv_dtype=kv_dtype, flops_efficiency=flops_efficiency,
                                     bandwidth_efficiency=bandwidth_efficiency, quantization=quantization)
            self.plan, self.system = self.cost.plan, self.cost.system
        else:
            self.cost = StepCost(model, device, self.engine, weight_dtype=weight_dtype, act_dtype=act_dtype,
                                 kv_dtype=kv_dtype, flops_efficiency=flops_efficiency,
                                 bandwidth_efficiency=bandwidth_efficiency, quantization=quantization)
        self.device = self.cost.settings.device
        self.budget = self.config.max_num_batched_tokens or self.engine.max_batched_tokens or 8192
        self.price, self.tdp, self.idle_fraction = cost_per_hour, tdp_watts, idle_fraction
        self.notes = list(self.cost.notes)
        self.draft_cost: StepCost | None = None
        self.draft_ratio: float | None = None
        self.draft_source: Any = None
        if self.spec is not None:
            self._setup_draft()
        self._capacity: dict[int, KVCapacity] = {}
        # the shortest step (one decode at context 0; steps grow with sequences and contexts): it bounds how
        # many steps fit before an arrival, which only sizes a stretch's first guess
        self._min_dt = max(self.cost.step(np.zeros(1, dtype=np.int64))[0], 1e-12)

    def _setup_draft(self) -> None:
        spec = self.spec
        assert spec is not None
        if spec.draft_cost_ratio is not None:
            self.draft_ratio = spec.draft_cost_ratio
            self.notes.append(f"speculative: draft cost {spec.draft_cost_ratio:g} x a target decode step per draft token")
        elif spec.draft == "ngram":
            self.draft_ratio = 0.0
            self.notes.append("speculative: n-gram (prompt lookup) drafts, free: no draft forward")
        elif spec.draft == "mtp":
            if not mtp_layers(_config_data(self.config_source)):
                raise QueryError("spec draft 'mtp' needs a config with num_nextn_predict_layers (DeepSeek-V3, ...); "
                                 "this one has none: use 'ngram' or a draft model")
            self.draft_ratio = mtp_cost_ratio(self.model, self.device, self.engine)
            self.notes.append(f"speculative: MTP head drafts, {self.draft_ratio:.3f} x a target decode step each "
                              "(the last decoder layer + the lm_head)")
        else:
            self.draft_source = spec.draft
            self.draft_cost = StepCost(spec.draft, self.device, self.engine, **self.dtype_opts)
            self.notes.append(f"speculative: draft model {spec.draft}, k draft decode steps per step at the same contexts")

    def capacity(self, max_context: int) -> KVCapacity:
        key = max(1024, 1 << int(max_context).bit_length())  # activations are reserved for a bucket of contexts
        if key not in self._capacity:
            try:
                if isinstance(self.cost, PlanStepCost):
                    self._capacity[key] = rank_capacity(self.cost, self.config, self.engine, max_context=key)
                else:
                    self._capacity[key] = kv_capacity(self.source, self.model, self.device, self.config, self.engine,
                                                      max_context=key, draft=self.draft_source, **self.dtype_opts)
            except DoesNotFitError as err:
                if self.draft_source is not None:
                    raise
                raise DoesNotFitError(f"{err}; {self._plan_hint(key, 1)}") from None
        return self._capacity[key]

    def _plan_hint(self, max_context: int, blocks_needed: int) -> str:
        """Where the model does not fit: the smallest plan that holds it (``smallest_fitting_plan``)."""
        found = smallest_fitting_plan(self.model, self.cost.settings, self.config, self.engine, max_context,
                                      blocks_needed)
        return _plan_hint(found, self.device)

    # ------------------------------------------------------------------------------------------------
    def run(self, workload: Workload, *, progress: Callable[[int, int], None] | None = None,
            record_batches: bool = False, fast_forward: bool = True) -> ServeResult:
        """Simulate ``workload``. ``fast_forward``: run stretches of pure-decode steps in which nothing can
        change the batch (no admission possible, no request finishing before the last of them, blocks
        enough) as one vectorised computation; the results are the same as step by step (a test checks)."""
        req = workload.requests()
        n = len(req)
        if n == 0:
            raise QueryError("the workload has no requests")
        lengths = req.prompt + req.output
        cap = self.capacity(int(lengths.max()))
        block = cap.block_size
        spec_k = self.spec.k if self.spec else 0
        longest = int(lengths.max()) + spec_k
        if _ceil(longest, block) > cap.num_blocks:
            where = "the device holds" if cap.plan is None else f"one rank of {cap.plan} holds"
            hint = "" if cap.given or self.draft_source is not None else \
                "; " + self._plan_hint(max(1024, 1 << longest.bit_length()), _ceil(longest, block))
            raise DoesNotFitError(f"a request of {int(lengths.max())} tokens (prompt + output) needs "
                                  f"{_ceil(longest, block)} KV blocks of {block} tokens; {where} {cap.num_blocks} "
                                  f"({cap.tokens:,} tokens): shorten the requests or free memory{hint}")
        dp = self.plan.dp if self.plan is not None else 1
        parts = []
        done = 0
        for r in range(dp):  # data-parallel replicas split the stream: request i goes to replica i mod dp
            index = np.arange(r, n, dp)
            sub = req if dp == 1 else Requests(req.arrival[index], req.prompt[index], req.output[index])
            if len(sub) == 0:
                continue
            sched = Scheduler(sub.prompt, sub.output, budget=self.budget, max_num_seqs=self.config.max_num_seqs,
                              block_size=block, num_blocks=cap.num_blocks,
                              prefix_cache_hit=self.config.prefix_cache_hit, spec_k=spec_k)
            shown = None if progress is None else _offset_progress(progress, done, n)
            part = self._loop(workload, sub, sched, shown, record_batches, fast_forward, seed=workload.seed + 1 + r)
            part.index = index
            parts.append(part)
            done += len(sub)
        return self._result(workload, req, cap, parts)

    def _loop(self, workload: Workload, req: Requests, sched: Scheduler,
              progress: Callable[[int, int], None] | None, record_batches: bool,
              fast_forward: bool = True, seed: int = 1) -> _Part:
        """Simulate one replica's requests (every request when dp = 1)."""
        n = len(req)
        arrival = req.arrival
        first = np.full(n, np.nan)
        finish = np.full(n, np.nan)
        last_tok = np.zeros(n)
        itl_chunks: list[np.ndarray] = []
        log = _StepLog(int(min(max(4096, int(req.output.sum()) // 4), 1 << 20)))  # a first guess of the steps; it grows
        batches: list[list[tuple[int, int, int]]] = []
        rng = np.random.default_rng(seed)
        spec = self.spec
        width = 1 + spec.k if spec else 1
        verify_rows = verify_tokens = 0
        busy = idle = 0.0
        input_time = 0.0  # busy time attributed to prefill tokens (by FLOP share)
        now = 0.0
        nxt = 0  # next arrival
        done = 0
        step = 0
        cost = self.cost
        fast = fast_forward and spec is None
        while done < n:
            while nxt < n and arrival[nxt] <= now:
                sched.waiting.append(nxt)
                nxt += 1
            if sched.running.shape[0] == 0 and not sched.waiting:
                idle += arrival[nxt] - now
                now = float(arrival[nxt])
                continue
            if fast and sched.running.shape[0]:
                k, end, dt_sum, finished = self._fast_forward(sched, req, now, nxt, last_tok, finish, itl_chunks, log,
                                                              batches if record_batches else None)
                if k:
                    now = end
                    busy += dt_sum
                    done += finished
                    step += k
                    if progress is not None and step % 256 < k:
                        progress(done, n)
                    continue
            batch = sched.schedule()
            in_system = sched.running.shape[0] + len(sched.waiting)
            if batch.ids.shape[0] == 0:  # pragma: no cover - the capacity check makes this impossible
                raise ProfilerError("internal error: the scheduler found nothing to run")
            dec = batch.decode & (batch.tokens == width)
            if dec.all():
                ctx, chunks = batch.past, []
            else:
                ctx = batch.past[dec]
                pre = ~dec
                chunks = list(zip(batch.tokens[pre].tolist(), batch.past[pre].tolist()))
            dt, flops, _, pre_flops = cost.step_split(ctx, chunks, width)
            emitted_spec = None
            if spec is not None:
                n_dec = int(ctx.shape[0])
                if n_dec:
                    if self.draft_cost is not None:
                        dt += spec.k * self.draft_cost.step(ctx, None, 1)[0]
                    elif self.draft_ratio:
                        dt += spec.k * self.draft_ratio * cost.step(ctx, None, 1)[0]
                accepted = np.minimum(rng.geometric(1 - spec.acceptance, dec.shape[0]) - 1, batch.tokens - 1) \
                    if spec.acceptance < 1 else batch.tokens - 1
                emitted_spec = np.where(batch.decode, accepted + 1, 0)  # a row the budget cut verifies fewer
            now += dt
            busy += dt
            if flops > 0:
                input_time += dt * min(pre_flops / flops, 1.0)
            if emitted_spec is not None:  # the tokens each verification yields, capped at the output left
                left = sched.output[batch.ids[dec]] - sched.generated[batch.ids[dec]]
                verify_rows += int(dec.sum())
                verify_tokens += int(np.minimum(emitted_spec[dec], left).sum())
            ids_e, em, before = sched.commit(batch, emitted_spec)
            new = before == 0
            first[ids_e[new]] = now
            cont = ~new
            if cont.any():
                gaps = now - last_tok[ids_e[cont]]
                e = em[cont]
                itl_chunks.append(gaps if spec is None else np.repeat(gaps / e, e))
            last_tok[ids_e] = now
            fin = ids_e[sched.generated[ids_e] >= sched.output[ids_e]]
            if fin.shape[0]:
                finish[fin] = now
                done += int(fin.shape[0])
            log.add(now - dt, dt, sched.used_blocks, int(batch.ids.shape[0]), in_system, int(batch.tokens.sum()))
            if record_batches:
                batches.append(list(zip(batch.ids.tolist(), batch.tokens.tolist(), batch.past.tolist())))
            step += 1
            if progress is not None and step % 256 == 0:
                progress(done, n)
            if step > MAX_STEPS:
                raise QueryError(f"the simulation passed {MAX_STEPS:,} steps; simulate fewer or shorter requests")
        if progress is not None:
            progress(done, n)
        return _Part(first=first, finish=finish, itl=np.concatenate(itl_chunks) if itl_chunks else np.zeros(0),
                     log=log, busy=busy, idle=idle, input_time=input_time, verify_rows=verify_rows,
                     verify_tokens=verify_tokens, batches=batches, preemptions=sched.preemptions,
                     index=np.arange(len(req)))

    def _fast_forward(self, sched: Scheduler, req: Requests, now: float, nxt: int, last_tok: np.ndarray,
                      finish: np.ndarray, itl_chunks: list[np.ndarray], log: _StepLog,
                      batches: list[Any] | None) -> tuple[int, float, float, int]:
        """Run the next K >= 2 steps at once when they are pure decodes of the running requests that no
        admission can change. Two cases:

        - nothing waits and a request could be admitted (a free slot, budget left): the stretch runs up to the
          step before the first one that starts at or after the next arrival, and requests that finish inside
          it leave the batch (the steps after have fewer sequences; finishing frees only what is unused);
        - otherwise (the running set is full, or the budget or the free blocks refuse the queue's head): up to
          the first request's finish, since a finish could let the head in; arrivals only join the queue.

        In both, the blocks the steps need must fit (the stretch stops before the step that would preempt).
        Returns (K, the clock after, busy seconds, requests finished); K = 0: take one ordinary step."""
        run = sched.running
        n = int(run.shape[0])
        budget = sched.budget
        if n > budget:
            return 0, now, 0.0, 0
        bs = sched.block_size
        blocked = n >= sched.max_num_seqs or budget - n <= 0
        if sched.waiting and not blocked:
            head = sched.waiting[0]
            total = int(sched.num_tokens[head])
            computed = min(int(sched.cached[head]), total - 1)
            if -(-(computed + min(total - computed, budget - n)) // bs) <= sched.free:
                return 0, now, 0.0, 0  # the head could be admitted now (it is, by the ordinary step)
            blocked = True  # free blocks only shrink while the running set stays
        nc = sched.num_computed[run]
        gen = sched.generated[run]
        if (sched.num_tokens[run] - nc != 1).any() or not gen.all():
            return 0, now, 0.0, 0
        left = sched.output[run] - gen
        arrival = req.arrival
        arrives = not blocked and nxt < arrival.shape[0]
        k = int(left.max()) if not blocked else int(left.min())
        k = min(k, max(2, STRETCH_CELLS // n))
        if arrives:  # steps until the next arrival at the shortest step time: a cap on the work below
            k = min(k, int((arrival[nxt] - now) / self._min_dt) + 2)
        if k < 2:
            return 0, now, 0.0, 0
        held = sched.blocks[run]
        lv = np.minimum(left, k)
        need = self._block_need(nc, held, k, bs, lv)  # cumulative new blocks after each step
        ends_in = left <= k
        if ends_in.any():  # the blocks of step j come from the free ones and those finished requests freed
            final = np.maximum(held[ends_in], -(-(nc[ends_in] + left[ends_in]) // bs))  # held when they finish
            freed = np.cumsum(np.bincount(left[ends_in] - 1, weights=final, minlength=k)[:k]).astype(np.int64)
            over = need > sched.free + np.concatenate(([0], freed[:-1]))
            if over.any():
                k = int(np.argmax(over))  # the first step that would preempt
        else:
            freed = np.zeros(k, dtype=np.int64)
            if int(need[-1]) > sched.free:
                k = int(np.argmax(need > sched.free))
        if k < 2:
            return 0, now, 0.0, 0
        dt, _, active = self.cost.decode_run(nc, k, left, with_active=True)
        ends = np.cumsum(dt)
        ends += now
        starts = ends - dt
        if arrives:
            late = int(np.searchsorted(starts, arrival[nxt], side="left"))  # the first step the arrival sees
            if late < 2:
                return 0, now, 0.0, 0
            if late < k:
                k = late
                dt, starts, ends, active = dt[:k], starts[:k], ends[:k], active[:k]
        if need.shape[0] > k:
            need, freed = need[:k], freed[:k]
        lv = np.minimum(left, k)
        # apply: lv_i tokens each
        used_before = sched.used_blocks
        sched.num_computed[run] = nc + lv
        sched.num_tokens[run] += lv
        sched.generated[run] = gen + lv
        sched.blocks[run] = np.maximum(held, -(-(nc + lv) // bs))
        sched.free -= int(need[-1])
        itl_chunks.append(ends[0] - last_tok[run])
        itl_chunks.append(np.repeat(dt[1:], active[1:]))
        last_tok[run] = ends[lv - 1]
        waiting = len(sched.waiting)
        if blocked and nxt < arrival.shape[0]:  # arrivals join the queue by each step's start
            in_system = np.maximum(np.searchsorted(arrival, starts, side="right") - nxt, 0) + waiting + active
        else:
            in_system = active + waiting
        log.extend(starts, dt, used_before + need - freed, active, in_system, active)
        if batches is not None:
            ids, past = run.tolist(), nc.tolist()
            for i in range(k):
                batches.append([(r, 1, p + i) for r, p, s in zip(ids, past, lv.tolist()) if i < s])
        done = left <= k
        finished = int(done.sum())
        if finished:
            fin = run[done]
            finish[fin] = ends[left[done] - 1]
            sched.free += int(sched.blocks[fin].sum())
            sched.blocks[fin] = 0
            sched.running = run[~done]
        return k, float(ends[-1]), float(dt.sum()), finished

    @staticmethod
    def _block_need(nc: np.ndarray, held: np.ndarray, k: int, bs: int, steps: np.ndarray | None = None) -> np.ndarray:
        """Cumulative new blocks after each of k decode steps, without a (k, n) grid: sequence i needs a new
        block at steps first_i, first_i + bs, ... where first_i = max(held_i * bs - nc_i, 0) (its token
        nc_i + j + 1 passes the blocks it holds) and before ``steps[i]`` (the steps it takes part in; default
        all k); the events are counted per step and summed."""
        first = np.maximum(held * bs - nc, 0)
        if k <= bs:  # at most one event per sequence: at step first_i, when it is still in the batch
            hit = first[first < (k if steps is None else steps)]
            return np.cumsum(np.bincount(hit, minlength=k)[:k])
        if k * first.shape[0] <= 4096:  # small: on the (k, n) grid, i's events up to step j, last_i = steps_i - 1:
            j = np.arange(k)[:, None]  # (min(j, last_i) - first_i) // bs + 1 when >= 0, else none
            upto = np.minimum(j, steps - 1) if steps is not None else j
            return (np.maximum(upto - first + bs, 0) // bs).sum(axis=1)
        count = np.maximum(-(-((k if steps is None else steps) - first) // bs), 0)  # events of sequence i
        total = int(count.sum())
        if total == 0:
            return np.zeros(k, dtype=np.int64)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
        at = np.repeat(first, count) + bs * offsets
        return np.cumsum(np.bincount(at, minlength=k)[:k])

    def _result(self, workload: Workload, req: Requests, cap: KVCapacity, parts: list[_Part]) -> ServeResult:
        """The run's results from its replicas' parts: per-request arrays in the workload's order, the steps of
        every replica (time-weighted means over all of them), busy time per replica on average."""
        n = len(req)
        first, finish = np.empty(n), np.empty(n)
        preemptions = np.zeros(n, dtype=np.int64)
        for p in parts:
            first[p.index], finish[p.index], preemptions[p.index] = p.first, p.finish, p.preemptions
        ttft = first - req.arrival
        e2e = finish - req.arrival
        multi = req.output > 1
        tpot = (finish[multi] - first[multi]) / (req.output[multi] - 1)
        itl = parts[0].itl if len(parts) == 1 else np.concatenate([p.itl for p in parts])
        span = float(finish.max() - req.arrival.min())

        def column(name: str) -> np.ndarray:
            return parts[0].log[name].copy() if len(parts) == 1 else np.concatenate([p.log[name] for p in parts])

        t, dt = column("t"), column("dt")
        kv = column("kv") / cap.num_blocks
        running, in_sys = column("running"), column("in_system")
        wsum = float(dt.sum()) or 1.0
        order = np.argsort(t, kind="stable") if len(parts) > 1 else np.arange(len(t))
        pick: list[int] = (order[np.unique(np.linspace(0, len(t) - 1, min(TIMELINE_POINTS, len(t))).astype(int))].tolist()
                           if len(t) else [])
        busy = sum(p.busy for p in parts) / max(len(parts), 1)  # per replica
        input_time = sum(p.input_time for p in parts)
        verify_rows = sum(p.verify_rows for p in parts)
        verify_tokens = sum(p.verify_tokens for p in parts)
        input_tokens, output_tokens = int(req.prompt.sum()), int(req.output.sum())
        spec_stats = None
        if self.spec is not None:
            spec_stats = SpecStats(k=self.spec.k, acceptance=self.spec.acceptance, draft=self.spec.draft,
                                   draft_cost_ratio=self.draft_ratio,
                                   expected_tokens_per_step=expected_tokens(self.spec.k, self.spec.acceptance),
                                   simulated_tokens_per_step=verify_tokens / verify_rows if verify_rows else 0.0,
                                   verify_rows=verify_rows)
        total_busy = sum(p.busy for p in parts)
        share = input_time / total_busy if total_busy else 0.0
        devices = self.plan.devices if self.plan is not None else 1
        idle = sum(p.idle for p in parts) / max(len(parts), 1)
        cost = cost_report(self.device.name, busy_s=busy, idle_s=idle + max(span - busy - idle, 0.0),
                           input_tokens=input_tokens, output_tokens=output_tokens, input_share=share,
                           cost_per_hour=self.price, tdp=self.tdp, idle_fraction=self.idle_fraction, gpus=devices)
        notes = list(self.notes)
        if cap.given:
            notes.append(f"KV blocks set by the caller: {cap.num_blocks}")
        if self.plan is not None:
            notes.append(f"parallel plan {self.plan.describe()} on {self.system.name}: each step is pp x the slowest "
                         "pipeline stage's rank (its sharded roofline + its collectives); KV blocks per rank"
                         + (f"; the {self.plan.dp} data-parallel replicas split the requests (request i to replica i mod {self.plan.dp}) "
                            "(busy time, steps and KV use are per replica)" if self.plan.dp > 1 else ""))
        result = ServeResult(
            model=self.model.spec.name or self.model.spec.model_type, device=self.device.name,
            engine=self.engine.name, workload=workload.describe(),
            plan=self.plan.describe() if self.plan is not None else None,
            system=self.system.name if self.plan is not None else None, devices=devices,
            replicas=self.plan.dp if self.plan is not None else 1,
            scheduler={**self.config.model_dump(), "max_num_batched_tokens": self.budget, "block_size": cap.block_size},
            kv=cap, num_requests=n, input_tokens=input_tokens, output_tokens=output_tokens, duration_s=span,
            busy_s=busy, idle_s=max(span - busy, 0.0), steps=len(t), requests_per_s=n / span if span else 0.0,
            input_tokens_per_s=input_tokens / span if span else 0.0,
            output_tokens_per_s=output_tokens / span if span else 0.0,
            ttft_s=Percentiles.of(ttft), tpot_s=Percentiles.of(tpot), itl_s=Percentiles.of(itl),
            e2e_s=Percentiles.of(e2e), mean_running=float(running @ dt) / wsum,
            mean_in_system=float(in_sys @ dt) / span if span else 0.0,
            kv_utilization_mean=float(kv @ dt) / wsum, kv_utilization_max=float(kv.max()) if kv.size else 0.0,
            kv_timeline=[(float(t[i]), float(kv[i])) for i in pick], preemptions=int(preemptions.sum()),
            speculative=spec_stats, cost=cost, notes=notes)
        result._raw.update(arrival=req.arrival, prompt=req.prompt, output=req.output, ttft=ttft, tpot=tpot, e2e=e2e,
                           itl=itl, step_t=t, step_dt=dt, step_kv=kv, step_running=running, step_in_system=in_sys,
                           step_tokens=column("tokens").astype(np.int64), preemptions=preemptions)
        batches = [[(int(p.index[r]), s, q) for r, s, q in b] for p in parts for b in p.batches]
        if batches:
            result._raw["batches"] = batches  # type: ignore[assignment]
        return result


def _offset_progress(progress: Callable[[int, int], None], offset: int, total: int) -> Callable[[int, int], None]:
    """A replica's progress as the whole run's: its done requests after the ``offset`` of the replicas before."""
    return lambda done, _: progress(offset + done, total)


def _ceil(x: int, d: int) -> int:
    return -(-x // d)


def _config_data(source: Any) -> Any:
    from ..config import load_config

    if isinstance(source, ModelProfile):
        return {}  # the formulas do not keep the config: pass ``config`` to ``Server``
    if isinstance(source, dict):
        return source
    return load_config(source)


def simulate(model: Any, device: Any = "h100", workload: Workload | None = None, *,
             engine: str | ExecutionProfile | None = VLLM, scheduler: SchedulerConfig | None = None,
             speculative: Speculative | None = None, progress: Callable[[int, int], None] | None = None,
             record_batches: bool = False, **options: Any) -> ServeResult:
    """Simulate serving ``workload`` (default: 1000 requests, 512-token prompts, 128-token outputs, Poisson
    at 1 request/s) with ``model`` on ``device`` under ``engine`` (default ``vllm``). ``options``: weight_dtype,
    act_dtype, kv_dtype, quantization, flops_efficiency, bandwidth_efficiency, cost_per_hour, tdp_watts,
    idle_fraction, plan, system (see ``Server``; ``simulate("llama-3.1-70b", workload=wl, plan={"tp": 8},
    system="dgx-h100")``)."""
    server = Server(model, device, engine=engine, scheduler=scheduler, speculative=speculative, **options)
    return server.run(workload or Workload(), progress=progress, record_batches=record_batches)


class RatePoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    rate: float
    ttft_p99_s: float
    tpot_p99_s: float
    requests_per_s: float
    output_tokens_per_s: float
    meets: bool


class RateSearch(BaseModel):
    """The highest arrival rate found to meet the SLO (``rate``; 0 when even the lowest tried misses it),
    and every simulated point, sorted by rate."""

    model_config = ConfigDict(frozen=True)

    model: str
    device: str
    workload: str
    slo_ttft_s: float | None
    slo_tpot_s: float | None
    percentile: float
    rate: float
    saturation_rate: float  # requests/s when every request arrives at t = 0: the search's upper bound
    at_rate: ServeResult | None
    points: list[RatePoint]
    notes: list[str] = []


def meets_slo(r: ServeResult, raw_pct: float, slo_ttft: float | None, slo_tpot: float | None) -> tuple[bool, float, float]:
    ttft = float(np.percentile(r.raw["ttft"], raw_pct))
    tpot = float(np.percentile(r.raw["tpot"], raw_pct)) if r.raw["tpot"].size else 0.0
    ok = (slo_ttft is None or ttft <= slo_ttft) and (slo_tpot is None or tpot <= slo_tpot)
    return ok, ttft, tpot


def max_rate_under_slo(model: Any, device: Any = "h100", workload: Workload | None = None, *,
                       slo_ttft_s: float | None = 1.0, slo_tpot_s: float | None = None, percentile: float = 99.0,
                       rel_tol: float = 0.02, server: Server | None = None,
                       progress: Callable[[int, int], None] | None = None, **options: Any) -> RateSearch:
    """The highest Poisson (or fixed-rate) arrival rate at which the ``percentile`` TTFT (and TPOT, if given)
    stay within the SLO: doubling from the workload's rate until the SLO is missed (or halving until it is
    met), then bisection to ``rel_tol``; never above the saturation rate (the requests' throughput when all
    arrive at once), past which no finite run's percentiles mean anything. Every point simulates the same seeded requests (their gaps scale
    with 1 / rate). ``options`` go to ``Server``."""
    wl = workload or Workload()
    if wl.arrival == "burst":
        raise QueryError("max_rate_under_slo needs poisson or fixed arrivals with a rate to vary, not burst")
    if wl.trace is not None and read_trace(wl.trace)[2] is not None:
        raise QueryError(f"trace {wl.trace!r} has its own arrival times, which the rate search cannot vary: "
                         "simulate it without --find-max-rate, or drop its arrival_s column")
    if slo_ttft_s is None and slo_tpot_s is None:
        raise QueryError("give an SLO: slo_ttft_s (--slo-ttft) and/or slo_tpot_s (--slo-tpot)")
    for name, v in (("slo_ttft_s", slo_ttft_s), ("slo_tpot_s", slo_tpot_s)):
        if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
            raise QueryError(f"{name} must be a positive number of seconds, got {v!r}")
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise QueryError(f"percentile must be in (0, 100], got {percentile!r}")
    if not (isinstance(rel_tol, (int, float)) and 0 < rel_tol < 1):
        raise QueryError(f"rel_tol must be in (0, 1), got {rel_tol!r}")
    srv = server or Server(model, device, **options)
    points: dict[float, tuple[RatePoint, ServeResult]] = {}

    def at(rate: float) -> bool:
        r = srv.run(wl.with_rate(rate), progress=progress)
        ok, ttft, tpot = meets_slo(r, percentile, slo_ttft_s, slo_tpot_s)
        points[rate] = (RatePoint(rate=rate, ttft_p99_s=ttft, tpot_p99_s=tpot, requests_per_s=r.requests_per_s,
                                  output_tokens_per_s=r.output_tokens_per_s, meets=ok), r)
        return ok

    notes: list[str] = []
    # The sustainable request rate: the throughput of the same requests all arriving at once. Above it the
    # queue grows without bound, so a finite run's percentiles would flatter the rate: it caps the search.
    burst = srv.run(wl.model_copy(update={"arrival": "burst"}), progress=progress)
    capacity = burst.requests_per_s
    rate = min(float(wl.rate or 1.0), capacity)
    lo: float | None = None
    hi: float | None = None
    if at(rate):
        lo = rate
        for _ in range(40):
            if rate >= capacity:
                notes.append(f"throughput-limited: the SLO is met up to the saturation rate, {capacity:.3f} requests/s "
                             "(the requests all at once); above it the queue grows without bound")
                break
            rate = min(rate * 2, capacity)
            if not at(rate):
                hi = rate
                break
            lo = rate
    else:
        hi = rate
        for _ in range(20):
            rate /= 2
            if at(rate):
                lo = rate
                break
            hi = rate
        else:
            notes.append(f"the SLO is missed even at {rate:g} requests/s: a request alone takes longer (see the "
                         "TTFT at that rate)")
    if lo is not None and hi is not None:
        while (hi - lo) / lo > rel_tol:
            mid = (lo + hi) / 2
            if at(mid):
                lo = mid
            else:
                hi = mid
    best = lo or 0.0
    ordered = sorted(points)
    return RateSearch(model=srv.model.spec.name or srv.model.spec.model_type, device=srv.device.name,
                      workload=wl.describe(), slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s, percentile=percentile,
                      rate=best, saturation_rate=capacity, at_rate=points[best][1] if best in points else None,
                      points=[points[r][0] for r in ordered], notes=notes)


def sweep_rates(server: Server, workload: Workload, rates: list[float],
                progress: Callable[[int, int], None] | None = None) -> list[ServeResult]:
    """One simulation per arrival rate (the same seeded requests)."""
    return [server.run(workload.with_rate(r), progress=progress) for r in rates]


def stderr_progress(label: str = "simulating") -> Callable[[int, int], None]:
    """A one-line progress bar on stderr: ``simulating [#####     ] 512/1000 requests``."""
    import time

    state = {"start": time.monotonic(), "shown": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and (now - state["start"] < 0.5 or now - state["shown"] < 0.2):
            return  # short runs draw nothing; long ones redraw at most five times a second
        drawn = state["shown"]
        state["shown"] = now
        if done >= total:  # the next run (a rate search runs many) starts a fresh bar
            state["start"], state["shown"] = now, 0.0
            if not drawn:
                return
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r{label} [{'#' * filled}{' ' * (width - filled)}] {done}/{total} requests")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


__all__ = ["DoesNotFitError", "KVCapacity", "Percentiles", "RatePoint", "RateSearch", "Server", "ServeResult",
           "SpecStats", "kv_capacity", "max_rate_under_slo", "meets_slo", "simulate", "stderr_progress", "sweep_rates"]
