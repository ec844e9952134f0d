"""What fits for training: the largest micro-batch one rank holds, or the smallest plan that holds one.

``largest_micro_batch(model, seq, device=..., plan=..., system=..., **step_options)``: the largest micro-batch
(sequences of ``seq`` tokens per data-parallel replica per micro-batch) whose busiest rank's training memory
(``training_step``: weights, gradients, master weights, optimizer states, the ZeRO-3 gathered layer, the
saved activations of the micro-batches in flight) fits the device, by doubling and bisection (memory grows
with the micro-batch). ``training_fit`` answers the same, and when not even one sequence fits and no plan
was given (one device), the smallest plan whose ranks hold one: ``parallel.search.smallest_plan``'s search
(1, 2, 4, ... 64 devices, tensor parallelism inside a node first), with data-parallel plans tried too when
ZeRO shards the states over them (``zero >= 1``). ``answer`` is one line naming the scenario it solved.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..hardware import get_device
from ..hardware.systems import get_system
from ..memory import largest_fitting
from ..parallel.plan import ParallelPlan
from ..parallel.search import smallest_plan
from ..profile import ModelProfile
from .step import TrainingError, TrainingStep, resolve_plan, training_step


class TrainingFit(BaseModel):
    """The largest micro-batch per replica that fits, or the smallest plan that holds one."""

    model_config = ConfigDict(frozen=True)

    model: str
    device: str
    seq: int
    plan: str  # the plan the micro-batch was solved for
    capacity: int  # bytes per device
    solved_for: str  # "micro_batch" or "plan"
    micro_batch: int  # 0: not even one sequence fits the plan asked for
    smallest_plan: str | None = None  # when not even one fits one device: the fewest devices that hold one
    smallest_plan_micro_batch: int | None = None  # the largest micro-batch under it
    at_value: TrainingStep | None = None  # the step at the answer (under smallest_plan when that is the answer)
    at_next: TrainingStep | None = None  # one more sequence, which does not fit
    answer: str  # one line
    notes: list[str] = []


def _capacity(device: Any, system: Any) -> tuple[str, int]:
    dev = get_system(system).device if system is not None else get_device(device)
    return dev.name, dev.memory_bytes


def largest_micro_batch(model: ModelProfile, seq: int, **options: Any) -> int:
    """The largest micro-batch of ``seq``-token sequences whose busiest rank fits the device (0 when none does);
    ``options``: ``training_step``'s (``device`` or ``system`` required)."""
    if options.get("device") is None and options.get("system") is None:
        raise TrainingError("largest_micro_batch needs device=... or system=... (whose memory is the limit)")
    _, cap = _capacity(options.get("device"), options.get("system"))
    return largest_fitting(lambda b: training_step(model, b, seq, **options).memory.total <= cap)


def training_fit(model: ModelProfile, seq: int, **options: Any) -> TrainingFit:
    """``largest_micro_batch`` at ``seq``; when it is 0 on one device (no plan, or a one-device plan, asked),
    the smallest plan holding micro-batch 1 (module docstring), and its largest micro-batch."""
    if options.get("device") is None and options.get("system") is None:
        raise TrainingError("training_fit needs device=... or system=... (whose memory is the limit)")
    name, cap = _capacity(options.get("device"), options.get("system"))
    pl = resolve_plan(options.get("plan"), options.get("dp", 1))
    best = largest_micro_batch(model, seq, **options)
    label = model.spec.name or model.spec.model_type
    what = _scenario(options)
    common: dict[str, Any] = dict(model=label, device=name, seq=seq, plan=pl.describe(), capacity=cap)
    if best:
        at, nxt = training_step(model, best, seq, **options), training_step(model, best + 1, seq, **options)
        answer = (f"{label} {what} at seq {seq} on {name} ({pl.describe()}): largest micro-batch = {best} "
                  f"({at.memory.total / 2**30:.2f} GiB of {cap / 2**30:.2f} GiB per rank)")
        return TrainingFit(**common, solved_for="micro_batch", micro_batch=best, at_value=at, at_next=nxt,
                           answer=answer)
    if pl.devices > 1:
        one = training_step(model, 1, seq, **options)
        answer = (f"{label} {what} at seq {seq} on {name} ({pl.describe()}): micro-batch 1 does not fit "
                  f"({one.memory.total / 2**30:.2f} GiB of {cap / 2**30:.2f} GiB per rank)")
        return TrainingFit(**common, solved_for="micro_batch", micro_batch=0, at_next=one, answer=answer)
    zero = int(options.get("zero", 0))
    base = {k: v for k, v in options.items() if k not in ("plan", "dp")}

    def fits(p: ParallelPlan) -> bool:
        return training_step(model, 1, seq, plan=p, **base).memory.total <= cap

    found = smallest_plan(model, fits, data_parallel=zero >= 1)
    one = training_step(model, 1, seq, **options)
    if found is None:
        answer = (f"{label} {what} at seq {seq} on {name}: micro-batch 1 does not fit one device "
                  f"({one.memory.total / 2**30:.2f} GiB of {cap / 2**30:.2f} GiB) nor any plan of up to 64 devices")
        return TrainingFit(**common, solved_for="plan", micro_batch=0, at_next=one, answer=answer)
    plan_best = largest_micro_batch(model, seq, plan=found, **base)
    at = training_step(model, plan_best, seq, plan=found, **base)
    answer = (f"{label} {what} at seq {seq} on {name}: micro-batch 1 needs {one.memory.total / 2**30:.2f} GiB of "
              f"{cap / 2**30:.2f} GiB; smallest plan that fits: {found.describe()} ({found.devices} devices), "
              f"largest micro-batch there = {plan_best}")
    return TrainingFit(**common, solved_for="plan", micro_batch=0, smallest_plan=found.describe(),
                       smallest_plan_micro_batch=plan_best, at_value=at,
                       at_next=training_step(model, plan_best + 1, seq, plan=found, **base), answer=answer,
                       notes=[f"plans tried by parallel.search.smallest_plan: 1, 2, 4, ... 64 devices, tp inside a node "
                              f"first{', dp plans too (ZeRO-' + str(zero) + ' shards over dp)' if zero >= 1 else ''}"])


def _scenario(options: dict[str, Any]) -> str:
    if options.get("lora_rank"):
        kind = f"{'Q' if options.get('qlora') else ''}LoRA r={options['lora_rank']}"
    else:
        kind = "full fine-tune"
    zero = int(options.get("zero", 0))
    return f"{kind}, {options.get('optimizer', 'adamw')}{', ZeRO-' + str(zero) if zero else ''}, " \
           f"recompute {options.get('recompute', 'none')}"


__all__ = ["TrainingFit", "largest_micro_batch", "training_fit"]
