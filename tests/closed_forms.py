"""A shared check for family tests: a generation's closed form equals the sum of its forwards."""

from __future__ import annotations

from collections.abc import Iterable

from llm_profiler.phases import N, Phase, generation_sum, phase_count, phase_total
from llm_profiler.profile import ModelProfile
from llm_profiler.symbols import B, P, S

# (B, S, P, N): one step, a short prompt, a long generation, a cached prefix, a long decode at context
CASES = [(1, 1, 0, 1), (2, 3, 0, 2), (1, 2, 0, 6), (3, 5, 2, 4), (1, 1, 7, 8)]


def assert_generation_is_the_sum_of_forwards(model: ModelProfile, metrics: Iterable[str]) -> None:
    """For each metric: one closed form in B, S, P, N (never an unevaluated sum) that equals, at every case,
    the prefill plus each decode step evaluated one by one, and ``phase_count`` gives the same number."""
    for metric in metrics:
        forward = phase_total(model, metric, "model")
        closed = generation_sum(forward)
        assert closed.closed_form, metric
        for b, s, p, n in CASES:
            phase = Phase.generate(b, s, n, p)
            want = sum(int(forward.xreplace({B: b, S: ss, P: pp})) for ss, pp in phase.steps())
            assert int(closed.expr.xreplace({B: b, S: s, P: p, N: n})) == want, (metric, b, s, p, n)
            assert phase_count(model, metric, phase, "model") == want
