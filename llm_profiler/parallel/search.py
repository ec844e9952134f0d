"""Plans of a system, and the smallest plan that fits.

``candidate_plans(devices)``: every (tp, pp, dp) with tp x pp x dp = devices, with ep = each divisor of dp
(ep > 1 only for models with routed experts), micro-batches = pp (one per stage, the least that fills the
pipeline), in a stable order. ``valid_plans`` keeps those ``check_plan`` accepts for a model.
``smallest_plan(model, fits)``: the first plan, over 1, 2, 4, ... 64 devices, whose ranks ``fits``; at
each count tensor parallelism first (the fewest stages), the way a deployment grows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from .plan import ParallelPlan, PlanError, check_plan, divisors, make_plan

MAX_DEVICES = 64  # smallest_plan looks no further


def candidate_plans(devices: int, moe: bool = False, micro_batches: int | None = None) -> Iterator[ParallelPlan]:
    """Every tp x pp x dp = devices (tp largest first), ep over the divisors of dp for MoE models."""
    for tp in sorted(divisors(devices), reverse=True):
        for pp in divisors(devices // tp):
            dp = devices // tp // pp
            for ep in (divisors(dp) if moe else [1]):
                yield make_plan(tp=tp, pp=pp, dp=dp, ep=ep, micro_batches=micro_batches or pp)


def valid_plans(spec: Any, devices: int, micro_batches: int | None = None) -> list[ParallelPlan]:
    """The candidate plans the model accepts (``check_plan``)."""
    moe = any(layer.moe for layer in spec.layers)
    out = []
    for plan in candidate_plans(devices, moe, micro_batches):
        try:
            check_plan(plan, spec)
        except PlanError:
            continue
        out.append(plan)
    return out


def smallest_plan(model: Any, fits: Callable[[ParallelPlan], bool], max_devices: int = MAX_DEVICES,
                  data_parallel: bool = False) -> ParallelPlan | None:
    """The plan with the fewest devices (then the most tensor parallelism) whose busiest rank ``fits``; data
    parallelism adds no memory headroom to inference, so only tp x pp plans are tried, unless
    ``data_parallel`` (training under ZeRO, which shards the model states over the dp ranks)."""
    n = 1
    while n <= max_devices:
        for plan in sorted(valid_plans(model.spec, n), key=lambda p: (p.tp > 8, -p.tp)):  # tp inside a node first
            if (plan.dp == 1 or data_parallel) and fits(plan):
                return plan
        n *= 2
    return None




class PlanRow(BaseModel):
    """One plan's answer in a search (``plan`` command)."""

    model_config = ConfigDict(frozen=True)

    plan: str
    tp: int
    pp: int
    dp: int
    ep: int
    micro_batches: int
    devices: int
    latency_s: float
    tokens_per_s: float
    compute_s: float
    memory_s: float
    communication_s: float
    bubble_s: float
    weight_bytes_per_rank: int
    memory_bytes_per_rank: int
    capacity_bytes: int
    fits: bool


class PlanSearch(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    model: str
    system: str
    phase: str
    batch: int
    seq: int
    past: int
    engine: str
    objective: str
    plans: list[PlanRow]  # best first; the ones that fit before those that do not
    skipped: list[str] = []  # plans that do not apply at this batch (why)


OBJECTIVES = ("latency", "throughput")


def search_plans(source: Any, system: Any, phase: str = "decode", *, batch: int = 1, seq: int | None = None,
                 past: int = 0, objective: str = "latency", top: int = 5, engine: Any = "vllm",
                 **options: Any) -> PlanSearch:
    """Every valid plan of all the system's devices (``valid_plans``) at one phase and shape, ranked: the plans
    whose busiest rank fits first, then by latency (``objective="latency"``) or tokens/s (``"throughput"``);
    the ``top`` best. ``options``: the dtypes and efficiencies of ``perf.settings``."""
    from ..hardware.systems import get_system
    from ..perf import roofline
    from ..profile import ModelProfile, profile_model

    if objective not in OBJECTIVES:
        raise PlanError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    sysm = get_system(system)
    model = source if isinstance(source, ModelProfile) else profile_model(source)
    rows, skipped = [], []
    for plan in valid_plans(model.spec, sysm.device_count):
        try:
            r = roofline(model, sysm.device, phase, batch=batch, seq=seq, past=past, engine=engine, plan=plan,
                         system=sysm, **options)
        except PlanError as err:
            skipped.append(f"{plan.describe()}: {err}")
            continue
        par, mem = r.parallel, r.memory
        assert par is not None and mem is not None
        rows.append(PlanRow(plan=plan.describe(), tp=plan.tp, pp=plan.pp, dp=plan.dp, ep=plan.ep,
                            micro_batches=plan.micro_batches, devices=plan.devices, latency_s=r.latency_s,
                            tokens_per_s=r.tokens_per_s, compute_s=par.compute_s, memory_s=par.memory_s,
                            communication_s=par.communication_s, bubble_s=par.bubble_s,
                            weight_bytes_per_rank=par.weight_bytes_per_rank, memory_bytes_per_rank=mem.total,
                            capacity_bytes=mem.capacity, fits=mem.fits))
        shape = (r.batch, r.seq, r.past, r.engine)
    if not rows:
        raise PlanError(f"no plan of {sysm.device_count} devices applies to {model.spec.name or model.spec.model_type} "
                        f"at batch {batch}: {'; '.join(skipped[:3])}")
    key = (lambda p: (not p.fits, p.latency_s)) if objective == "latency" else (lambda p: (not p.fits, -p.tokens_per_s))
    rows.sort(key=key)
    return PlanSearch(model=model.spec.name or model.spec.model_type, system=sysm.name, phase=phase, batch=shape[0],
                      seq=shape[1], past=shape[2], engine=shape[3], objective=objective, plans=rows[:top],
                      skipped=skipped)


__all__ = ["MAX_DEVICES", "OBJECTIVES", "PlanRow", "PlanSearch", "candidate_plans", "search_plans", "smallest_plan",
           "valid_plans"]
