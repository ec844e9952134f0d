"""``validate`` fails like the core (issue 19, item 1): one ``ProfilerError`` subclass, never a raw
transformers / torch exception, never a traceback from the CLI, never a mismatch report for a build failure.

Each example of the issue has a test: configs the profiler accepts but transformers refuses
(``rope_scaling: 2``, ``rope_scaling: {"type": "linear"}`` with no factor, ``text_config: {}``,
``sliding_window: -5``, ``bos_token_id: Infinity``), the three ``as_family`` cases, and the huge tiny shape.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler import metrics as M  # noqa: E402
from llm_profiler import profile  # noqa: E402
from llm_profiler.cli import main  # noqa: E402
from llm_profiler.config import load_config  # noqa: E402
from llm_profiler.errors import (  # noqa: E402
    ConfigError,
    LimitError,
    ProfilerError,
    ValidationBuildError,
    ValidationUnavailableError,
)
from llm_profiler.validation import validate  # noqa: E402
from llm_profiler.validation.guard import (  # noqa: E402
    ACT_FACTOR,
    META_ACT_LIMIT,
    TINY_MEMORY_LIMIT,
    check_size,
    find_field,
)
from llm_profiler.validation.measure import build_model  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402

pytestmark = pytest.mark.validation

LLAMA = load_config("llama-3.2-1b").data


def llama(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(LLAMA), **changes}


# (name, config, the field the error names, runs at tiny size too); every one profiles fine (checked below)
REFUSED = [
    ("rope_scaling 2", llama(rope_scaling=2), "rope_scaling", True),
    ("rope_scaling linear, no factor", llama(rope_scaling={"type": "linear"}), "rope_scaling", True),
    ("text_config {}", llama(text_config={}), "text_config", True),
    # tiny llama keeps a window it can bind (families' tiny()), so -5 only reaches transformers at full size
    ("sliding_window -5", llama(sliding_window=-5), "sliding_window", False),
    ("bos_token_id Infinity", json.loads(json.dumps(llama(bos_token_id=math.inf))), "bos_token_id", True),
]


@pytest.mark.parametrize(("name", "config", "field", "tiny_too"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_config_is_one_build_error(name: str, config: dict[str, Any], field: str, tiny_too: bool) -> None:
    # the profiler accepts the config and counts it as the preset (the changed field adds no parameter)
    assert profile(config, 2, 3).total(M.PARAMS) == profile("llama-3.2-1b", 2, 3).total(M.PARAMS)
    for tiny in (False, True) if tiny_too else (False,):
        with pytest.raises(ValidationBuildError) as info:
            validate(config, 2, 3, 0, tiny=tiny)
        text = str(info.value)
        assert f"config field {field!r}" in text, text
        assert "transformers 5.23.0" in text  # who refused (torch names itself and transformers)
        assert f"fix or remove {field!r} in the config" in text  # what to do
        assert isinstance(info.value, ProfilerError)
        assert isinstance(info.value.__cause__, Exception)  # the library's own error stays attached


def test_torch_refusal_names_torch_and_the_forward() -> None:
    with pytest.raises(ValidationBuildError) as info:
        validate(llama(sliding_window=-5), 2, 3, 0)
    text = str(info.value)
    assert text.count("torch 2.13.0") == 1 and "called by transformers 5.23.0" in text
    assert "while running the forward at batch 2, seq 3, past 0" in text
    assert "the one without which it builds and runs" in text  # found by elimination: the message names none


def test_field_from_message_and_from_rename() -> None:
    config = {"bos_token_id": 1, "rope_scaling": {"type": "linear"}, "vocab_size": 8}
    assert find_field(ValueError("Field 'bos_token_id' expected int"), config) == "bos_token_id"
    # transformers reads rope_scaling into rope_parameters: the message names theirs, the error ours
    assert find_field(KeyError("Missing required keys in `rope_parameters`: {'factor'}"), config) == "rope_scaling"
    assert find_field(ValueError("something else"), config) is None
    # a field name inside a longer word is not the field
    assert find_field(ValueError("no vocab_size_per_layer here"), config) is None


@pytest.mark.parametrize("tiny", [False, True])
def test_as_family_without_model_type(tiny: bool) -> None:
    config = {k: v for k, v in LLAMA.items() if k != "model_type"}
    with pytest.raises(ConfigError, match="no 'model_type' field"):
        validate(config, 2, 3, 0, tiny=tiny)
    report = validate(config, 2, 3, 0, tiny=tiny, as_family="llama")
    assert report.ok and report.model_type == "llama", report.table()


@pytest.mark.parametrize("tiny", [False, True])
def test_as_family_overrides_an_unknown_model_type(tiny: bool) -> None:
    config = llama(model_type="evil")
    report = validate(config, 2, 3, 0, tiny=tiny, as_family="llama")
    assert report.ok and report.model_type == "llama", report.table()
    assert type(reference(config, tiny=tiny, as_family="llama").build()).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("tiny", [False, True])
def test_as_family_builds_that_family(tiny: bool) -> None:
    # qwen3-8b read as gemma3: the profile and the reference model are both gemma3's text model
    report = validate("qwen3-8b", 1, 3, 2, tiny=tiny, as_family="gemma3")
    assert report.ok and report.model_type == "gemma3_text", report.table()
    model = reference("qwen3-8b", tiny=tiny, as_family="gemma3").build()
    assert type(model).__name__ == "Gemma3ForCausalLM"


def test_no_transformers_class_is_refused() -> None:
    with pytest.raises(ValidationBuildError, match="has no causal LM class for model_type 'evil'"):
        build_model({**LLAMA, "model_type": "evil"})
    with pytest.raises(ValidationBuildError, match="needs the config's model_type"):
        build_model({k: v for k, v in LLAMA.items() if k != "model_type"})
    # a family the profiler counts but transformers does not implement
    with pytest.raises(ValidationUnavailableError, match="chatglm has no transformers implementation"):
        validate(llama(), 1, 2, 0, as_family="chatglm")


def test_huge_tiny_shape_is_refused_before_building() -> None:
    ref = reference("llama-3.2-1b", tiny=True)
    b, s = 100_000, 100_000
    params = ref.profile.count(M.PARAMS, "model")
    act = ref.profile.count(M.ACT, "model", b, s, 0)
    cache = ref.profile.count(M.CACHE, "model", b, s, 0)
    need = 4 * (params + ACT_FACTOR * act + cache)  # float32 weights + 2 x activations + KV cache
    assert need > TINY_MEMORY_LIMIT
    with pytest.raises(LimitError) as info:
        validate("llama-3.2-1b", b, s, 0, tiny=True)
    text = str(info.value)
    assert "batch 100000, seq 100000, past 0" in text and "limit of 4.0 GiB" in text
    assert f"{need / 2**30:,.1f} GiB" in text


def test_tiny_estimate_counts_the_prefill() -> None:
    ref = reference("llama-3.2-1b", tiny=True)
    check_size(ref.profile, 2, 3, 5, tiny=True)  # small shapes pass
    # a decode step after a huge prefix: the prefill's activations (B, P, 0) are the larger ones
    with pytest.raises(LimitError, match="batch 64, seq 1, past 1000000"):
        validate("llama-3.2-1b", 64, 1, 1_000_000, tiny=True)


def test_full_size_shape_past_int64_sizes_is_refused() -> None:
    ref = reference("llama-3.2-1b")
    b = s = 10**8
    assert ref.profile.count(M.ACT, "model", b, s, 0) > META_ACT_LIMIT
    with pytest.raises(LimitError, match=r"batch 100000000, seq 100000000, past 0:.* past the limit of 2\*\*60"):
        validate("llama-3.2-1b", b, s, 0)
    check_size(ref.profile, 1000, 100_000, 0, tiny=False)  # large, but on meta: allowed


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err.splitlines()


@pytest.mark.parametrize(("name", "config", "field", "tiny_too"), REFUSED, ids=[r[0] for r in REFUSED])
def test_cli_prints_one_line_and_exits_2(name: str, config: dict[str, Any], field: str, tiny_too: bool,
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))  # bos_token_id inf is written as JSON's Infinity
    code, lines = _cli(["validate", str(path), "--batch", "2", "--seq", "3"], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: validate could not run the reference model"), lines
    assert f"config field {field!r}" in lines[0]


def test_cli_limits_and_as_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _cli(["validate", "llama-3.2-1b", "--tiny", "--batch", "100000", "--seq", "100000"], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: validate --tiny with batch 100000, seq 100000, past 0 would need about")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(llama(model_type="evil")))
    assert main(["validate", str(path), "--as-family", "llama", "--batch", "2", "--seq", "3", "--tiny"]) == 0
    assert "EXACT" in capsys.readouterr().out


def test_peak_and_measured_runs_fail_the_same_way() -> None:
    from llm_profiler.validation.peak import compare_peak
    from llm_profiler.validation.runs import build_reference

    with pytest.raises(ValidationBuildError, match="config field 'rope_scaling'"):
        compare_peak(llama(rope_scaling=2), 2, 3, 0)
    with pytest.raises(LimitError, match="batch 100000, seq 100000, past 0"):
        compare_peak("llama-3.2-1b", 100_000, 100_000, 0, tiny=True)
    with pytest.raises(ValidationBuildError, match="config field 'bos_token_id'"):
        build_reference(llama(bos_token_id=math.inf), tiny=True)
