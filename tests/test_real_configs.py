"""Real published config.json files beyond the bundled presets (tests/real_configs/, sources in SOURCES.md).

Each file is loaded as a local path, exactly as a user would pass it, with no code change for it. The parameter
totals are pinned (each equals transformers' own count of the model built from the same file, checked again by
the validation tests below); where a published exact total is known it is asserted as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_profiler import metrics as M
from llm_profiler import profile

HERE = Path(__file__).parent / "real_configs"
FILES = sorted(p.stem for p in HERE.glob("*.json"))
SHAPES = [(1, 1, 0), (2, 3, 0), (3, 7, 5), (1, 1, 9)]
METRICS = [M.PARAMS, M.ACTIVE_PARAMS, M.MACS, M.FLOPS, M.ACT, M.CACHE]

# sum(p.numel() for p in model.parameters()) of the transformers 5.23 model built on meta from each file
# (tied weights once); re-measured by test_full_size_on_meta / test_tiny_params below.
PARAMS = {
    "EleutherAI--pythia-12b-deduped": 11_846_072_320,
    "EleutherAI--pythia-6.9b-deduped": 6_857_302_016,
    "HuggingFaceTB--SmolLM2-135M": 134_515_008,
    "Qwen--Qwen1.5-1.8B-Chat": 1_525_663_744,
    "Qwen--Qwen2-1.5B-Instruct": 1_543_714_304,
    "Qwen--Qwen2-57B-A14B": 57_408_658_944,
    "Qwen--Qwen2.5-3B-Instruct": 3_085_938_688,
    "Qwen--Qwen3-0.6B": 596_049_920,
    "Qwen--Qwen3-1.7B": 1_720_574_976,
    "TinyLlama--TinyLlama-1.1B-Chat-v1.0": 1_100_048_384,
    "codellama--CodeLlama-7b-hf": 6_738_546_688,
    "deepseek-ai--DeepSeek-V2-Lite": 15_748_993_024,
    "facebook--opt-125m": 125_239_296,
    "facebook--opt-350m": 331_196_416,
    "google--gemma-2-2b-it": 2_614_341_888,
    "google--gemma-2-2b-jpn-it": 2_614_341_888,
    "google--gemma-3-1b-it": 999_885_952,
    "meta-llama--Llama-3.2-1B-Instruct": 1_235_814_400,
    "meta-llama--Llama-3.3-70B-Instruct": 70_553_706_496,
    "microsoft--Phi-3.5-mini-instruct": 3_821_079_552,
    "microsoft--Phi-4-mini-instruct": 3_836_021_760,
    "mistralai--Mistral-7B-v0.3": 7_248_023_552,
    "mistralai--Mistral-Nemo-Base-2407": 12_247_782_400,
    "tiiuae--falcon-40b-instruct": 41_303_293_952,
    "togethercomputer--RedPajama-INCITE-3B-v1": 2_775_864_320,
}

# Published exact totals (see SOURCES.md): the Pythia model card's "Total Params" column; the others have the
# architecture of a bundled preset whose published total is in llm_profiler/config/presets.py.
PUBLISHED = {
    "EleutherAI--pythia-6.9b-deduped": 6_857_302_016,
    "EleutherAI--pythia-12b-deduped": 11_846_072_320,
    "meta-llama--Llama-3.2-1B-Instruct": 1_235_814_400,  # = Llama-3.2-1B
    "meta-llama--Llama-3.3-70B-Instruct": 70_553_706_496,  # = Llama-3.1-70B
    "microsoft--Phi-3.5-mini-instruct": 3_821_079_552,  # = Phi-3-mini-4k-instruct
}

FULL_SIZE_MAX_LAYERS = 60  # deeper models are validated at tiny size only, to keep the run short


def _path(name: str) -> str:
    return str(HERE / f"{name}.json")


def test_every_file_is_pinned_and_sourced() -> None:
    assert set(FILES) == set(PARAMS), "pin the params of every file in tests/real_configs"
    sources = (HERE / "SOURCES.md").read_text()
    for name in FILES:
        assert f"`{name}.json`" in sources, f"{name}: no row in SOURCES.md"
        json.loads((HERE / f"{name}.json").read_text())  # valid JSON


@pytest.mark.parametrize("name", FILES)
def test_counts_at_shapes(name: str) -> None:
    for shape in SHAPES:
        p = profile(_path(name), *shape)
        for metric in METRICS:
            value = p.total(metric, "model")
            assert isinstance(value, int) and value >= 0, (name, shape, metric, value)
        assert p.total(M.PARAMS, "model") == PARAMS[name]
        assert 0 < p.total(M.ACTIVE_PARAMS, "model") <= PARAMS[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_totals(name: str) -> None:
    assert profile(_path(name)).total(M.PARAMS, "model") == PUBLISHED[name]


@pytest.mark.validation
@pytest.mark.parametrize("name", FILES)
def test_full_size_on_meta(name: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.config import load_config
    from llm_profiler.validation import validate
    from llm_profiler.validation.reference import reference

    cfg = load_config(_path(name))
    if cfg.data.get("num_hidden_layers", cfg.data.get("n_layer", 0)) > FULL_SIZE_MAX_LAYERS:
        pytest.skip("deep model: validated at tiny size (test_tiny_on_cpu)")
    model = reference(cfg).build()
    assert sum(t.numel() for t in model.parameters()) == PARAMS[name]
    report = validate(_path(name), 3, 7, 5, model=model)
    assert report.ok and report.rows, report.table()


@pytest.mark.validation
@pytest.mark.parametrize("name", FILES)
def test_tiny_on_cpu(name: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate

    report = validate(_path(name), 1, 1, 9, tiny=True)
    assert report.ok and report.rows, report.table()
