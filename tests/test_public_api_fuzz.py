"""Every public Python entry point, driven with arbitrary argument values (hypothesis): each call ends in a
correct answer or one ``ProfilerError`` naming the argument, never another exception (issue 17).

Values mix the right types with everything a caller can hand in by mistake: None, bools, negative, zero and
huge integers, non-finite floats, strings, lists, dicts and numpy arrays. Sizes past the documented limits
must be refused before any work, so every case stays fast (hypothesis' deadline bounds it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_profiler import ProfilerError, get_profile, profile, profile_model
from llm_profiler.memory import largest_batch, largest_context, memory_usage
from llm_profiler.perf import roofline

MODEL = "llama-3.2-1b"
CASES = {"n": 0, "answers": 0, "errors": 0}

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 5), st.sampled_from([0, 2**63, 10**30, -(2**70)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["", "x", "1", "model", "all", "last", "vllm"]),
    st.lists(st.integers(-2, 4), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(lambda n: np.arange(n), st.integers(0, 3)),
)
shape_value = st.one_of(st.integers(1, 64), anything)
SETTINGS = settings(max_examples=40, deadline=20_000, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def run(call: Any) -> None:
    CASES["n"] += 1
    try:
        call()
    except ProfilerError:
        CASES["errors"] += 1
        return
    CASES["answers"] += 1


CALLS = {
    "profile": lambda a: profile(MODEL, a["b"], a["s"], a["p"], as_family=a["x"]).total(a["metric"], a["scope"]),
    "count": lambda a: profile_model(MODEL).count(a["metric"], a["scope"], a["b"], a["s"], a["p"]),
    "compiled": lambda a: profile_model(MODEL).compiled("flops")(a["b"], a["s"], a["p"]),
    "sweep": lambda a: profile_model(MODEL).sweep("macs", batch=a["b"], seq=a["s"], past=a["p"]),
    "table": lambda a: profile(MODEL, 1, 4).table(a["x"], a["metric"] if isinstance(a["metric"], bool) else False,
                                                  layers=a["y"]),
    "by_layer": lambda a: profile(MODEL, 1, 4).by_layer(a["metric"]),
    "summary": lambda a: profile(MODEL, 1, 4).summary(a["scope"]),
    "get_profile": lambda a: get_profile({"model_config": MODEL, "input_shape": a["x"], "past_length": a["p"]},
                                         a["metric"], a["scope"], quiet=True),
    "roofline": lambda a: roofline(MODEL, "h100", a["x"] if isinstance(a["x"], str) else "decode", batch=a["b"],
                                   seq=a["s"], past=a["p"], new_tokens=a["y"] if isinstance(a["y"], int) else 4,
                                   lm_head=a["scope"] if isinstance(a["scope"], str) else None,
                                   engine=a["metric"] if isinstance(a["metric"], str) else None),
    "memory_usage": lambda a: memory_usage(MODEL, a["b"], a["s"], a["p"] if isinstance(a["p"], int) and a["p"] > 0
                                           else None, "h100", engine=a["x"] if isinstance(a["x"], str) else None),
    "largest_batch": lambda a: largest_batch(MODEL, "h100", a["s"], memory_fraction=a["y"]
                                             if not isinstance(a["y"], (list, dict, np.ndarray)) else 1.0),
    "largest_context": lambda a: largest_context(MODEL, "h100", a["b"], overhead_bytes=a["p"]
                                                 if not isinstance(a["p"], (list, dict, np.ndarray)) else 0),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@SETTINGS
@given(b=shape_value, s=shape_value, p=st.one_of(st.integers(0, 64), anything), x=anything, y=anything,
       metric=st.one_of(st.sampled_from(["flops", "macs", "cache", "active_params"]), anything),
       scope=st.one_of(st.sampled_from(["model", "attn", "layers.0", "*.k_proj"]), anything))
def test_public_functions_answer_or_raise_a_profiler_error(name: str, b: Any, s: Any, p: Any, x: Any, y: Any,
                                                            metric: Any, scope: Any) -> None:
    args = {"b": b, "s": s, "p": p, "x": x, "y": y, "metric": metric, "scope": scope}
    run(lambda: CALLS[name](args))


def test_the_counter_saw_both_outcomes() -> None:
    # runs after the parametrized cases above (pytest keeps file order): both answers and refusals were seen
    if CASES["n"]:
        print(f"\npublic API fuzz: {CASES['n']} cases: {CASES['answers']} answers, {CASES['errors']} ProfilerErrors")
        assert CASES["answers"] > 0 and CASES["errors"] > 0
    assert not math.isnan(float(CASES["n"]))
