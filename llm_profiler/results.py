"""What the profiler hands back, as pydantic models with a stable JSON schema.

Every top-level result carries ``schema_version`` (bumped on breaking changes) and is frozen.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class _ModelResult(_Frozen):
    """The header of a result about one model."""

    schema_version: int = 1
    model: str
    model_type: str
    family: str


class _ShapeResult(_ModelResult):
    """The header of a result about one model at one (batch, seq, past) shape."""

    batch: int
    seq: int
    past: int


class ProfileResult(_ShapeResult):
    """Totals of one scope of one model at one shape."""

    scope: str
    totals: dict[str, int]
    notes: list[str] = []


class LayerRow(_Frozen):
    """One row of the per-layer breakdown: ``level`` 0 is a top row, 1 a part of the layer above it."""

    label: str
    level: int = 0
    values: dict[str, int]


class PerLayerResult(_ShapeResult):
    """The per-layer breakdown (``profile --per-layer --json``); the last row is the model total."""

    metrics: list[str]
    rows: list[LayerRow]
    notes: list[str] = []


class CompareResult(BaseModel):
    """Two profiles side by side (``compare --json``): ``ratios[m]`` = right / left, None where left is 0."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    left: ProfileResult
    right: ProfileResult
    ratios: dict[str, float | None]


class SweepPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch: int
    seq: int
    past: int
    values: dict[str, int]


class SweepResult(_ModelResult):
    """A metric grid over shapes (``sweep --json``): every (batch, seq, past) combination, exact."""

    scope: str
    metrics: list[str]
    points: list[SweepPoint]


class PresetInfo(BaseModel):
    """One bundled preset (``presets --json``); ``params`` is None when no family handles it yet."""

    model_config = ConfigDict(frozen=True)

    alias: str
    hub_id: str
    model_type: str
    params: int | None
    published_params: int | None
    reconstructed: bool


class PresetList(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    presets: list[PresetInfo]


class Counter(BaseModel):
    """One quantity of a phase, performance-counter style: its total, the rate it ran at over the phase's
    latency, and the time it alone would take at the device's (efficiency-scaled) peak."""

    model_config = ConfigDict(frozen=True)

    total: int
    throughput: float  # total / latency_s (per second)
    theoretical_latency_s: float  # total / (peak x efficiency)


class NodeRoofline(BaseModel):
    """The roofline of one graph node in one forward."""

    model_config = ConfigDict(frozen=True)

    path: str
    kind: str
    flops: int
    bytes: int
    bytes_by_category: dict[str, int]
    intensity: float | None  # FLOP per byte; None when the node moves no byte (everything on chip)
    time_s: float
    bound: str  # "compute" or "memory"


class CollectiveCost(BaseModel):
    """Collectives of one kind, group and payload in a forward under a parallel plan (llm_profiler.parallel)."""

    model_config = ConfigDict(frozen=True)

    kind: str  # all_reduce, all_gather, reduce_scatter, all_to_all, send_recv
    group: str  # tp, ep, pp
    ranks: int
    link: str  # the link it runs over
    site: str  # embedding, attention, mlp, experts, lm_head or stage boundary
    stage: int  # the pipeline stage that runs it
    count: int  # how many per forward (per micro-batch under a pipeline)
    payload_bytes: int  # each
    time_s: float  # each
    total_s: float  # count x time_s
    first_after: str  # the node path the first of them follows


class ParallelReport(BaseModel):
    """How a phase runs under a parallel plan on a system: per-rank weights and the latency split."""

    model_config = ConfigDict(frozen=True)

    plan: dict[str, int | bool | str]  # llm_profiler.parallel.ParallelPlan fields
    plan_name: str  # e.g. "tp=8"
    system: str
    devices: int
    rank_batch: int  # sequences one rank runs per micro-batch
    weight_bytes_per_rank: int  # the largest stage's rank
    weight_bytes_sharded: int  # of which split over the tp / ep ranks
    weight_bytes_replicated: int  # of which every rank holds whole (norms, routers, a replicated embedding)
    compute_s: float  # time in compute-bound nodes (the slowest stage, all micro-batches)
    memory_s: float  # time in memory-bound nodes
    communication_s: float  # collectives and pipeline sends
    bubble_s: float  # (pp - 1) stage-times of a pipeline
    latency_s: float  # the sum of the four
    stage_s: list[float]  # one micro-batch's time on each stage, communication included
    collectives: list[CollectiveCost]
    notes: list[str] = []


class PhaseReport(BaseModel):
    """Roofline prediction of one phase (prefill, decode step, or a whole generation) on one device.

    schema 2: ``engine``, ``memory`` and ``fits`` added; a node's ``intensity`` is null when it moves no byte.
    schema 3: ``parallel`` added (a plan on a system: per-rank weights, compute / memory / communication /
    bubble); with it ``io``, ``flops`` and the byte counts describe one rank of the slowest stage."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 3
    model: str
    device: str
    phase: str
    batch: int
    seq: int
    past: int
    new_tokens: int = 0
    lm_head: str
    dtypes: dict[str, str]  # weight / act / kv storage dtypes
    compute_dtype: str
    flops_efficiency: float
    bandwidth_efficiency: float
    forwards: int  # model forwards the phase runs
    latency_s: float  # sum over forwards and nodes of max(compute time, memory time)
    tokens: int  # processed (prefill, decode) or generated (generate)
    tokens_per_s: float
    io: Counter
    flops: Counter
    bytes_by_category: dict[str, int]
    mfu: float  # flops / latency / peak (unscaled peak)
    mbu: float  # bytes / latency / bandwidth (unscaled peak)
    compute_bound_s: float  # time of the nodes bound by compute
    memory_bound_s: float  # time of the nodes bound by memory
    bound: str  # the larger of the two
    ttft_s: float | None = None  # generate: time to the first token (the prefill)
    tpot_s: float | None = None  # generate: mean time per output token after the first
    prefill: PhaseReport | None = None  # generate: its prefill forward
    decode: PhaseReport | None = None  # generate: its N - 1 decode forwards together
    nodes: list[NodeRoofline] = []
    notes: list[str] = []
    engine: str = "hf-eager"  # the execution profile (llm_profiler.engines)
    memory: MemoryUsage | None = None  # weights + KV + activations the phase needs on the device
    fits: bool | None = None  # memory.total <= the device's capacity
    parallel: ParallelReport | None = None  # under a parallel plan (schema 3)


class MemoryUsage(BaseModel):
    """Bytes a model needs on a device at one batch and context."""

    model_config = ConfigDict(frozen=True)

    batch: int
    seq: int  # prompt tokens prefilled in one forward
    context: int  # tokens held in the KV cache at the end
    weights: int
    kv_cache: int
    activations: int  # peak live activations of one forward
    total: int
    capacity: int  # usable device bytes
    fits: bool


class FitResult(BaseModel):
    """The largest batch (or context) that fits a device, with the usage at it and one beyond it."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 3  # 2: ``engine`` added (the execution profile the fit assumed); 3: ``plan``, ``smallest_plan``
    model: str
    device: str
    solved_for: str  # "batch" or "context"
    value: int  # 0 when not even 1 fits
    dtypes: dict[str, str]
    at_value: MemoryUsage | None
    at_next: MemoryUsage
    notes: list[str] = []
    engine: str = "hf-eager"  # the execution profile the answer assumed (llm_profiler.engines)
    plan: str | None = None  # the parallel plan the memory is per rank of (None: one device)
    smallest_plan: str | None = None  # when not even one sequence fits: the smallest plan that does


class RunMemory(BaseModel):
    """A measured run's memory beside the prediction (CPU: resident set size; CUDA: allocated bytes).

    measured: ``baseline`` (the process before the model was built: the runtime), ``loaded`` (after it was
    built: baseline + weights), ``peak`` (the highest during ``generate``); predicted: ``weights``, ``kv_cache``
    at the final context, ``activations`` (peak live activations of the prefill, the largest forward).
    ``growth`` = peak - loaded, against ``kv_cache + activations``. ``allocator`` (CPU runs): the process's
    (``cpu_bench.process_allocator``); under a ``retaining`` one, memory freed earlier in the process stays
    resident and is reused, so the growth counts only what exceeds it."""

    model_config = ConfigDict(frozen=True)

    baseline: int | None  # None: the model was built elsewhere (run_generate(model=...))
    loaded: int
    peak: int
    weights: int
    kv_cache: int
    activations: int
    how: str
    allocator: str | None = None

    @property
    def growth(self) -> int:
        return self.peak - self.loaded

    @property
    def predicted_growth(self) -> int:
        return self.kv_cache + self.activations

    @property
    def growth_ratio(self) -> float:
        return self.growth / self.predicted_growth if self.predicted_growth else float("nan")


class MeasuredRun(BaseModel):
    """A timed ``generate`` of a real transformers model beside the roofline prediction for it."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    model: str
    device: str  # the device the prediction used (e.g. local-cpu, measured)
    torch_device: str
    dtype: str
    batch: int
    prompt: int
    new_tokens: int
    ttft_s: float  # measured: generate() start to the end of the first forward
    tpot_s: float  # measured: mean interval between the ends of the later forwards
    step_s: list[float]  # measured: each forward's end minus the previous end (the first: from the start)
    tokens_per_s: float  # B * N / total measured time
    total_s: float
    peak_memory_bytes: list[int]  # per forward: CUDA max allocated; CPU resident set at the forward's end
    memory_note: str
    predicted_ttft_s: float
    predicted_tpot_s: float
    predicted_tokens_per_s: float
    ttft_ratio: float  # measured / predicted
    tpot_ratio: float
    prefill_flops: int
    prefill_bytes: int
    decode_flops: int  # per decode step, mean
    decode_bytes: int
    prefill_achieved_flops_per_s: float
    prefill_achieved_bytes_per_s: float
    decode_achieved_flops_per_s: float
    decode_achieved_bytes_per_s: float
    prefill_mfu: float
    prefill_mbu: float
    decode_mfu: float
    decode_mbu: float
    notes: list[str] = []
    memory: RunMemory | None = None  # peak memory growth beside weights + KV + activations
    load_average: float | None = None  # os.getloadavg()[0] when the run started
