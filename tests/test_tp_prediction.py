"""The parallel plan's per-rank prediction against transformers' own tensor parallelism, node by node.

``parallel.per_rank`` (counts of every node one rank runs, and the forward's collectives with their payload
bytes) is compared with ``validation.tensor_parallel`` (transformers' ``tp_plan="auto"`` run for real on
gloo ranks on this CPU, each rank's aten ops counted and attributed to the same node paths, every c10d
collective intercepted). transformers 5.23 shards the embedding by vocabulary rows (``embedding_rowwise``,
an all-reduce after the lookup), q / k / v and gate / up by columns, o / down by rows (an all-reduce after
each), Mixtral's experts by their intermediate dimension, and gathers the lm_head's logits: the plan's
defaults (``make_plan(tp=N)``, vocab-parallel embedding) at the run's dtype (fp32).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.parallel.plan import make_plan  # noqa: E402
from llm_profiler.parallel.predict import per_rank  # noqa: E402
from llm_profiler.profile import profile_from_data  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402
from llm_profiler.validation.tensor_parallel import measure_tensor_parallel_runs  # noqa: E402

MODELS = ["llama-2-7b", "qwen3-8b", "mixtral-8x7b"]
SHAPES = [(2, 3, 0), (2, 1, 3)]  # a prefill and one decode step after a 3-token prefill


@pytest.fixture(scope="module")
def two_ranks() -> dict:
    return measure_tensor_parallel_runs(MODELS, 2, SHAPES)


@pytest.fixture(scope="module")
def four_ranks() -> dict:
    # 4 ranks must divide the KV heads: the tiny variants get 4 (as the measurement's override)
    return measure_tensor_parallel_runs(["llama-2-7b", "mixtral-8x7b"], 4, [(2, 3, 0)],
                                        overrides={"num_key_value_heads": 4})


def _prediction(name: str, tp: int, shape: tuple[int, int, int], overrides: dict | None = None):
    ref = reference(name, tiny=True)
    profile = profile_from_data({**ref.data, **(overrides or {})}, ref.name)
    return per_rank(profile, make_plan(tp=tp), *shape, act_dtype="fp32")


def _check(measured, prediction, ranks: int) -> None:
    nodes = {n.path: n.counts for n in prediction.nodes}
    for rank in range(ranks):
        assert measured.diff(rank, nodes) == [], f"rank {rank}"
        # every collective: kind, the module it follows, exact payload bytes, in issue order
        assert measured.collective_rows(rank) == [(c.kind, c.after, c.payload_bytes) for c in prediction.collectives]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-S{s[1]}-P{s[2]}")
@pytest.mark.parametrize("name", MODELS)
def test_two_ranks_match_the_plan_per_node_and_collective(two_ranks: dict, name: str,
                                                          shape: tuple[int, int, int]) -> None:
    measured = next(m for (config, s), m in two_ranks.items() if s == shape and m.model_type in _types(name))
    prediction = _prediction(name, 2, shape)
    _check(measured, prediction, 2)
    # llama tiny (hidden 64, 2 layers), prefill B=2, S=3: 1 + 2 x 2 all-reduces of B*S*64 fp32 = 1,536 bytes
    # and the logits' all-gather of B*S*vocab(128) x 4 = 3,072 bytes (decode: S = 1, a third of each)
    if name == "llama-2-7b":
        tokens = shape[0] * shape[1]
        assert [c.payload_bytes for c in prediction.collectives] == [tokens * 64 * 4] * 5 + [tokens * 128 * 4]


@pytest.mark.parametrize("name", ["llama-2-7b", "mixtral-8x7b"])
def test_four_ranks_match_the_plan(four_ranks: dict, name: str) -> None:
    measured = next(m for m in four_ranks.values() if m.model_type in _types(name))
    _check(measured, _prediction(name, 4, (2, 3, 0), {"num_key_value_heads": 4}), 4)


def _types(name: str) -> set[str]:
    return {"llama-2-7b": {"llama"}, "qwen3-8b": {"qwen3"}, "mixtral-8x7b": {"mixtral"}}[name]
