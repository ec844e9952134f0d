"""Serving simulation on exact per-step costs: a request mix, vLLM-style continuous batching with chunked
prefill and paged KV, speculative decoding, SLO-limited rates, cost and energy per token (docs/serving.md)."""

from .cost import CostReport, cost_report
from .scheduler import SchedulerConfig
from .simulator import (
    DoesNotFitError,
    RateSearch,
    Server,
    ServeResult,
    max_rate_under_slo,
    simulate,
)
from .speculative import Speculative, expected_tokens, speedup
from .step_cost import StepCost
from .workload import Lengths, Workload, WorkloadError

__all__ = ["CostReport", "DoesNotFitError", "Lengths", "RateSearch", "SchedulerConfig", "Server", "ServeResult",
           "Speculative", "StepCost", "Workload", "WorkloadError", "cost_report", "expected_tokens",
           "max_rate_under_slo", "simulate", "speedup"]
