"""Phases: prefill, decode step, and the generation closed form (hand-derived values, closed form = sum of steps)."""

from __future__ import annotations

import pytest
import sympy

from llm_profiler import profile_model
from llm_profiler.errors import QueryError, ShapeError
from llm_profiler.phases import (
    GENERATE,
    LM_HEAD_LAST,
    STEP,
    N,
    Phase,
    decode_step,
    generation_sum,
    phase_count,
    phase_expr,
    phase_total,
    sum_steps,
)
from llm_profiler.symbols import B, P, S

# A tiny Llama: hidden 64, 4 heads of 16, 2 KV heads, MLP 96, vocab 128, 2 layers, untied head.
TINY = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 128}
# The same with a sliding window of 4 on every layer (mistral): Min(P, 3) in the formulas.
TINY_SLIDING = {**TINY, "model_type": "mistral", "sliding_window": 4}
METRICS = ("flops", "macs", "act", "cache", "exp", "cmp", "div")


def _sum_of_steps(model, metric, phase, scope="model"):
    return sum(model.count(metric, scope, phase.batch, s, p) if phase.lm_head == "all" else
               phase_count(model, metric, Phase.prefill(phase.batch, s, p, phase.lm_head), scope)
               for s, p in phase.steps())


def test_prefill_and_decode_are_the_graph_at_the_shape():
    m = profile_model(TINY)
    assert phase_count(m, "flops", Phase.prefill(3, 7, 5)) == m.count("flops", "transformer", 3, 7, 5)
    assert phase_count(m, "macs", Phase.decode(2, past=9), "model") == m.count("macs", "model", 2, 1, 9)
    # speculative verify: 4 drafted tokens at context 9
    assert phase_count(m, "macs", Phase.decode(2, past=9, seq=4), "model") == m.count("macs", "model", 2, 4, 9)


def test_decode_step_scores_by_hand():
    m = profile_model(TINY)
    # one layer's q @ k^T in decode step i of a generation: B*H*1*(keys)*D with keys = P + S + i + 1
    # (context P + S + i plus the new token): 4 heads * 16 = 64 -> 64*B*(P + S + i + 1)
    scores = phase_total(m, "macs", "model.layers.0.self_attn:scores")
    assert sympy.expand(decode_step(scores) - 64 * B * (P + S + STEP + 1)) == 0


def test_lm_head_last_position_by_hand():
    m = profile_model(TINY)
    # all positions: B*S rows of a 64 x 128 product: 8192*B*S MACs; last position only: 8192*B
    assert sympy.expand(phase_total(m, "macs", "lm_head") - 8192 * B * S) == 0
    assert sympy.expand(phase_total(m, "macs", "lm_head", LM_HEAD_LAST) - 8192 * B) == 0
    # a generation: the prefill's lm_head plus one row per later step
    g_all = phase_expr(m, "macs", GENERATE, "lm_head")
    g_last = phase_expr(m, "macs", GENERATE, "lm_head", LM_HEAD_LAST)
    assert sympy.expand(g_all - 8192 * B * (S + N - 1)) == 0
    assert sympy.expand(g_last - 8192 * B * N) == 0


def test_generation_scores_closed_form_by_hand():
    m = profile_model(TINY)
    # prefill (P = 0): 64*B*S*S; step i: 64*B*(S + i + 1), i = 0..N-2:
    # sum = 64*B*((N-1)*(S+1) + (N-2)*(N-1)/2) -> 64*B*(S^2 + (N-1)*S + N*(N-1)/2)
    g = phase_expr(m, "macs", GENERATE, "model.layers.0.self_attn:scores").subs(P, 0)
    assert sympy.expand(g - 64 * B * (S**2 + (N - 1) * S + N * (N - 1) / 2)) == 0
    assert STEP not in g.free_symbols


@pytest.mark.parametrize("config", [TINY, TINY_SLIDING], ids=["full", "sliding"])
def test_generation_closed_form_equals_sum_of_steps(config):
    m = profile_model(config)
    for metric in METRICS:
        for lm_head in ("all", "last"):
            forward = phase_total(m, metric, "model", lm_head)
            closed = generation_sum(forward)  # symbolic in N: one closed form for every length
            assert closed.closed_form and STEP not in closed.expr.free_symbols
            for b, s, p, n in [(1, 1, 0, 1), (2, 3, 0, 2), (1, 2, 0, 6), (3, 5, 2, 4), (1, 1, 7, 8)]:
                phase = Phase.generate(b, s, n, p, lm_head)
                want = sum(int(forward.xreplace({B: b, S: ss, P: pp})) for ss, pp in phase.steps())
                got = int(closed.expr.xreplace({B: b, S: s, P: p, N: n}))
                assert got == want, (metric, lm_head, b, s, p, n)
                assert phase_count(m, metric, phase, "model") == want


def test_sliding_window_sum_crosses_the_boundary():
    # sum_{i=0}^{M} Min(i + a, 3) against brute force, the boundary inside, before and after the range
    a, upper = sympy.Symbol("a", integer=True, nonnegative=True), sympy.Symbol("M", integer=True)
    closed = sum_steps(2 * sympy.Min(STEP + a, 3) + STEP, upper).expr
    for av in range(0, 6):
        for mv in range(-1, 8):
            want = sum(2 * min(i + av, 3) + i for i in range(mv + 1))
            assert closed.xreplace({a: av, upper: mv}) == want


def test_unsplittable_term_falls_back_to_a_finite_sum_with_a_note():
    term = sympy.Min(STEP + P, 3) * sympy.Min(STEP + S, 5)  # a product of two windowed factors
    with pytest.raises(QueryError):
        sum_steps(term, N - 2)
    out = sum_steps(term, N - 2, upper_value=3)
    assert not out.closed_form and out.notes
    assert out.expr.xreplace({P: 1, S: 2}) == sum(min(i + 1, 3) * min(i + 2, 5) for i in range(4))


def test_phase_validation():
    with pytest.raises(ShapeError):
        Phase.generate(1, 4, 0)
    with pytest.raises(QueryError):
        Phase("train", 1, 1)
    with pytest.raises(QueryError):
        Phase.prefill(1, 4, lm_head="first")
    assert Phase.generate(2, 5, 3).steps() == [(5, 0), (1, 5), (1, 6)]
    assert Phase.generate(2, 5, 3).tokens == 6


def test_llama_2_7b_generation_is_symbolic_and_fast():
    m = profile_model("llama-2-7b")
    g = phase_expr(m, "flops", GENERATE, "model", LM_HEAD_LAST)
    assert g.free_symbols <= {B, S, P, N}
    phase = Phase.generate(2, 100, 20, 0, LM_HEAD_LAST)
    assert phase_count(m, "flops", phase, "model") == _sum_of_steps(m, "flops", phase)
