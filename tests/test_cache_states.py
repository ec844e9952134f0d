"""The cache metric holds every state; ``kv`` the attention keys and values alone (issue 11, item 3)."""

from __future__ import annotations

import pytest

from llm_profiler import metrics as M
from llm_profiler.errors import ValidationBuildError
from llm_profiler.facts import StateKind
from llm_profiler.formula import Formula
from llm_profiler.graph import blocks as blk
from llm_profiler.profile import profile_model

B, S, P = Formula.symbol("B"), Formula.symbol("S"), Formula.symbol("P")


def test_kv_is_cache_for_attention_only_models() -> None:
    m = profile_model("llama-2-7b")
    # 32 layers * 2 (K, V) * B * 32 heads * 128 * (P + S) at B=1, S=16, P=384: 32*2*4096*400 = 104,857,600
    assert m.count(M.KV, "model", 1, 16, 384) == 104_857_600
    assert m.count(M.CACHE, "model", 1, 16, 384) == 104_857_600


def test_kv_aliases() -> None:
    assert M.canonical("kv") == M.KV
    assert M.canonical("KV_cache") == M.KV
    assert M.canonical("states") == M.CACHE


def test_state_cache_counts_cache_and_only_attention_kinds_as_kv() -> None:
    held = 2 * B * 4 * 16  # e.g. a conv state: B * channels(64) * 2 kept columns
    conv = blk.state_cache(StateKind.CONV, held=held, appended=held)
    values = {m: Formula.of(conv.get(m, 0))(2, 3, 0) for m in (M.CACHE, M.KV)}
    assert values == {M.CACHE: 256, M.KV: 0}  # 2*2*4*16 = 256
    (state,) = conv.facts.states
    assert state.kind == StateKind.CONV and state.held(2, 3, 0) == 256
    kv = blk.kv_cache(kv_heads=2, head_dim=8, cached_tokens=P + S)
    assert kv[M.KV](1, 3, 5) == kv[M.CACHE](1, 3, 5) == 2 * 8 * 2 * 8  # B*KV*2D*(P+S) = 256


torch = pytest.importorskip("torch")


class _Layer:
    def __init__(self, **tensors: object) -> None:
        self.__dict__.update(tensors)


class _Cache:
    def __init__(self, *layers: _Layer) -> None:
        self.layers = list(layers)


def test_measure_counts_every_state_tensor_once_per_kind() -> None:
    from llm_profiler.validation.measure import cache_elements, cache_states

    keys, values = torch.zeros(2, 4, 5, 8), torch.zeros(2, 4, 5, 8)  # 320 elements each
    conv = {0: torch.zeros(2, 64, 3)}  # 384
    recurrent = {0: torch.zeros(2, 4, 16, 16), 1: None}  # 2,048
    shared = _Layer(keys=keys, values=values, conv_states=conv, recurrent_states=recurrent,
                    indexer_position_ids=torch.zeros(1, 5, dtype=torch.long), _sliding_window_tensor=torch.tensor(4))
    again = _Layer(keys=keys, values=torch.zeros(2, 4, 1, 8))  # layer 1 shares layer 0's keys: 64 new elements
    states = cache_states(_Cache(shared, again))
    assert states == {
        0: {StateKind.KEYS_VALUES: 640, StateKind.CONV: 384, StateKind.RECURRENT: 2_048},
        1: {StateKind.KEYS_VALUES: 64},
    }
    assert cache_elements(_Cache(shared, again)) == {0: 3_072, 1: 64}  # 640 + 384 + 2048


def test_measure_names_an_unknown_cache_tensor() -> None:
    from llm_profiler.validation.measure import cache_states

    with pytest.raises(ValidationBuildError, match="'compressed_kv'.*STATE_ATTRIBUTES"):
        cache_states(_Cache(_Layer(keys=torch.zeros(1, 1, 1, 2), compressed_kv=torch.zeros(3, 3))))


def test_mla_latent_is_compared_as_keys_and_values() -> None:
    from llm_profiler.validation.compare import predicted_state_kinds

    m = profile_model("deepseek-v3")
    kinds = predicted_state_kinds(m, 2, 3, 0)
    # transformers keeps the latent (kv_lora_rank 512 + rope key 64) in keys / values: B*S*576 = 3,456 per layer
    assert kinds[0] == {StateKind.KEYS_VALUES: 3_456}
    assert len(kinds) == 61
