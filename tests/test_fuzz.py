"""Fuzzing the inputs: every malformed config, kwarg or shape ends in a ProfilerError that names the field,
or in a correct profile; never in another exception, a hang or a negative count. Every CLI invocation ends
in exit 0, 1 or 2 (2: one line ``error: ...``), never in a traceback.

Sources of cases, all deterministic:
- mutations of one real config per registered model_type (fields removed, wrong types, negative / zero /
  huge / float dims, heads not dividing hidden, unknown activation, strings where numbers go, nested
  garbage), a fixed sample per type (``LLM_PROFILER_FUZZ_SAMPLES`` per type, default 30, raises it);
- mutated kwargs and shapes of ``get_profile``;
- the kept corpus, ``tests/fuzz_corpus/*.json``: cases that once broke something, replayed every run
  (schema in ``_corpus_config`` below; ``xfail`` marks a known, reported gap);
- hypothesis-driven command lines for every CLI subcommand but ``validate`` (arbitrary option values:
  non-finite and huge numbers, garbage text, ranges past every limit), run in-process through
  ``llm_profiler.cli.main`` (``LLM_PROFILER_CLI_FUZZ_EXAMPLES`` per subcommand, default 25), and the kept CLI
  corpus ``tests/fuzz_corpus/cli/*.json`` (schema in ``_cli_argv``).
The number of cases tried is printed (``pytest -s``) and added to the terminal summary.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_profiler import get_profile, profile_model, supported_model_types
from llm_profiler.config import find_preset, list_presets, read_preset
from llm_profiler.errors import ProfilerError

CORPUS = Path(__file__).parent / "fuzz_corpus"
SAMPLES = int(os.environ.get("LLM_PROFILER_FUZZ_SAMPLES", "30"))
TRIED: Counter = Counter()  # outcome -> cases, for the summary

# Values a field is set to. Huge ints stay below 4300 digits (Python's int-to-str limit is its own test).
VALUES: list[Any] = [None, "12", "abc", "", 1.5, 4096.0, float("nan"), float("inf"), True, False, [], {}, [1, 2],
                     {"a": {"b": [None]}}, -1, 0, 1, 3, 7, 2**63, 10**30, -(10**30), "gelu_unknown", "silu"]
DELETE = object()
# Metadata no count depends on: mutating it must leave every count unchanged (or be refused by name).
METADATA = {"initializer_range", "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "bos_token_id",
            "eos_token_id", "pad_token_id", "torch_dtype", "transformers_version", "architectures",
            "use_cache", "attention_dropout", "max_position_embeddings", "rope_theta", "_name_or_path"}
# Spellings of one field across configs, and fields a relational error may name instead (a * b mismatch).
ALIASES: list[set[str]] = [
    {"hidden_size", "n_embd", "n_embed", "d_model"},
    {"num_attention_heads", "n_head", "num_heads"},
    {"num_hidden_layers", "n_layer", "num_layers"},
    {"num_key_value_heads", "multi_query_group_num", "num_kv_heads"},
    {"intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim"},
    {"num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok"},
    {"sliding_window", "sliding_window_size", "use_sliding_window"},
]
# Every error must name the field to change: there are no known exceptions left.
KNOWN_UNNAMED: dict[tuple[str, str], str] = {}
# (model_type, field, repr(value)) whose profile was known to be wrong: none left.
KNOWN_BAD: set[tuple[str, str, str]] = set()


def _bases() -> dict[str, dict[str, Any]]:
    supported = set(supported_model_types())
    out: dict[str, dict[str, Any]] = {}
    for preset in list_presets():
        data = read_preset(preset)
        if data.get("model_type") in supported:
            out.setdefault(data["model_type"], data)
    return out


BASES = _bases()


def _names_field(message: str, field: str) -> bool:
    names = {field}
    for group in ALIASES:
        if field in group:
            names |= group
    return any(name in message for name in names)


def _check_profile(model: Any, base: dict[str, int] | None = None) -> dict[str, int]:
    """A correct profile: non-negative ints everywhere, totals equal to the per-node sums."""
    prof = model.at(2, 3, 1)
    for path, values in prof.values.items():
        for metric, value in values.items():
            assert type(value) is int and value >= 0, f"{path} {metric} = {value!r}"
    out = {"flops": prof.total("flops", "model"), "params": prof.total("params", "model")}
    assert out["flops"] == sum(v["flops"] for v in prof.values.values())
    assert out["params"] > 0
    if base is not None:
        assert out == base, "a metadata field changed the counts"
    return out


def _outcome(run: Callable[[], Any], field: str, where: str, known: str | None = None) -> str:
    """Run one case: a ProfilerError must name ``field``; any other exception fails the test."""
    try:
        run()
    except ProfilerError as err:
        message = str(err)
        if not _names_field(message, field):
            assert known, f"{where}: the error does not name {field!r}: {message}"
            TRIED["error (known unnamed)"] += 1
            return "gap"
        TRIED["error naming the field"] += 1
        return "error"
    TRIED["correct profile"] += 1
    return "ok"


def _mutations(model_type: str, base: dict[str, Any]) -> list[tuple[str, Any]]:
    rng = random.Random(f"fuzz-{model_type}")
    keys = sorted(base)
    every = [(k, v) for k in keys for v in [DELETE, *VALUES]]
    return rng.sample(every, min(SAMPLES, len(every)))


def _targeted(base: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """Relational breakage: (description, changes, field the message must name)."""
    cases = []
    heads = base.get("num_attention_heads") or base.get("n_head")
    hidden_key = next((k for k in ("hidden_size", "n_embd", "d_model") if base.get(k)), None)
    # NemotronHConfig defaults head_dim to 128 (the files' attention_head_dim is not read): any hidden size is valid
    head_dim_defaulted = base.get("model_type") == "nemotron_h"
    if heads and hidden_key and base.get("head_dim") is None and "qk_nope_head_dim" not in base and not head_dim_defaulted:
        cases.append(("heads do not divide hidden", {hidden_key: heads * 64 + 1}, hidden_key))
    if base.get("num_key_value_heads") and heads and base["num_key_value_heads"] != heads:
        cases.append(("kv heads do not divide heads", {"num_key_value_heads": heads - 1}, "num_key_value_heads"))
    # Gemma2+ read hidden_activation (hidden_act is a legacy field they ignore).
    act_key = next((k for k in ("hidden_activation", "hidden_act", "activation_function") if k in base), None)
    if act_key:
        cases.append(("unknown activation", {act_key: "gelu_unknown_variant"}, act_key))
    if isinstance(base.get("rope_scaling"), dict):
        cases.append(("rope_scaling garbage", {"rope_scaling": {"rope_type": 5, "factor": "x"}}, "rope_scaling"))
    cases.append(("model_type garbage", {"model_type": ["llama"]}, "model_type"))
    cases.append(("model_type removed", {"model_type": DELETE}, "model_type"))
    return cases


def _apply(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("model_type", sorted(BASES))
def test_mutated_configs(model_type: str) -> None:
    base = BASES[model_type]
    base_counts = _check_profile(profile_model(base))
    for key, value in _mutations(model_type, base):
        if (model_type, key, repr(value)) in KNOWN_BAD:
            continue
        data = _apply(base, {key: value})
        metadata = key in METADATA
        where = f"{model_type}: {key} = {'<deleted>' if value is DELETE else repr(value)}"
        _outcome(lambda d=data, m=metadata: _check_profile(profile_model(d), base_counts if m else None),
                 key, where, KNOWN_UNNAMED.get((model_type, key)))
    for description, changes, field in _targeted(base):
        data = _apply(base, changes)
        outcome = _outcome(lambda d=data: _check_profile(profile_model(d)), field, f"{model_type}: {description}",
                           KNOWN_UNNAMED.get((model_type, field)))
        assert outcome != "ok" or description == "rope_scaling garbage", f"{model_type}: {description} was accepted"


@pytest.mark.parametrize("raw", [[1, 2], "llama", 3, None, [{"model_type": "llama"}]], ids=repr)
def test_non_dict_json(raw: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    for source in (path, tmp_path):
        assert _outcome(lambda s=source: profile_model(s), "JSON object", f"file {raw!r}") == "error"
    if raw is not None and not isinstance(raw, str):  # a str is a preset name / path / hub id
        assert _outcome(lambda: profile_model(raw), "config", f"object {raw!r}") == "error"


@pytest.mark.parametrize("text", ["", "{", "{'model_type': 'llama'}", "\x00\xff", '{"a": 1} trailing', "[" * 100_000],
                         ids=["empty", "truncated", "single-quotes", "binary", "trailing", "deep"])
def test_unreadable_files(text: str, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("latin-1"))
    assert _outcome(lambda: profile_model(path), "config file", f"file {text[:20]!r}") == "error"


LLAMA = "llama-3.2-1b"
KWARGS_CASES: list[tuple[dict[str, Any], str, str | None, str]] = [
    # (kwargs, attr, scope, field the message must name)
    ({"input_shape": [0, 4]}, "flops", None, "batch"),
    ({"input_shape": [-1, 4]}, "flops", None, "batch"),
    ({"input_shape": [2, 0]}, "flops", None, "seq"),
    ({"input_shape": [1.5, 4]}, "flops", None, "batch"),
    ({"input_shape": ["16", 4]}, "flops", None, "batch"),
    ({"input_shape": [True, 4]}, "flops", None, "batch"),
    ({"input_shape": [2, None]}, "flops", None, "seq"),
    ({"input_shape": [2**64, 4]}, "flops", None, "batch"),
    ({"input_shape": [np.float64(2.0), 4]}, "flops", None, "batch"),
    ({"input_shape": [16]}, "flops", None, "input_shape"),
    ({"input_shape": [16, 200, 3]}, "flops", None, "input_shape"),
    ({"input_shape": "16x200"}, "flops", None, "input_shape"),
    ({"input_shape": None}, "flops", None, "input_shape"),
    ({"input_shape": {"batch": 1}}, "flops", None, "input_shape"),
    ({"input_shape": 16}, "flops", None, "input_shape"),
    ({}, "flops", None, "input_shape"),
    ({"input_shape": [2, 4], "past_length": -1}, "flops", None, "past"),
    ({"input_shape": [2, 4], "past_length": 1.5}, "flops", None, "past"),
    ({"input_shape": [2, 4], "past_length": "3"}, "flops", None, "past"),
    ({"input_shape": [2, 4], "batch": 3}, "flops", None, "batch"),
    ({"input_shape": [2, 4], "as_family": "nope"}, "flops", None, "nope"),
    ({"input_shape": [2, 4], "as_family": 5}, "flops", None, "5"),
    ({"input_shape": [2, 4]}, "flopz", None, "flopz"),
    ({"input_shape": [2, 4]}, "", None, "metric"),
    ({"input_shape": [2, 4]}, 5, None, "metric"),
    ({"input_shape": [2, 4]}, None, None, "metric"),
    ({"input_shape": [2, 4]}, "flops", "layers.999", "layers.999"),
    ({"input_shape": [2, 4]}, "flops", "no.such.module", "no.such.module"),
    ({"input_shape": [2, 4]}, "flops", "[", "["),
    ({"input_shape": [2, 4], "model_config": None}, "flops", None, "config"),
    ({"input_shape": [2, 4], "model_config": 5}, "flops", None, "config"),
    ({"input_shape": [2, 4], "model_config": "no-such-model-anywhere"}, "flops", None, "no-such-model-anywhere"),
    ({"input_shape": [2, 4], "model_config": "./missing/config.json"}, "flops", None, "./missing/config.json"),
    ({"input_shape": [2, 4], "model_config": {"model_type": "llama"}}, "flops", None, "hidden_size"),
    # Accepted: numpy integers, tuples, generators of two, P = 0 spelled out, the largest exact shapes.
    ({"input_shape": (np.int64(2), np.int32(4))}, "flops", None, ""),
    ({"input_shape": iter([2, 4]), "past_length": 0}, "macs", "attn", ""),
    ({"input_shape": [2, 4]}, "flops", "", ""),  # an empty scope is the default one
    ({"input_shape": [10**9, 10**9], "past_length": 10**9}, "flops", "model", ""),
]


def test_mutated_kwargs_and_shapes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a repo-id-like name must not reach for the network
    for kwargs, attr, scope, field in KWARGS_CASES:
        full = {"model_config": LLAMA, **kwargs}
        where = f"get_profile({kwargs!r}, {attr!r}, {scope!r})"
        outcome = _outcome(lambda k=full, a=attr, s=scope: get_profile(k, a, s, quiet=True), field, where)
        assert outcome == ("ok" if field == "" else "error"), where
    assert _outcome(lambda: get_profile([2, 4], "flops"), "kwargs", "kwargs not a dict") == "error"
    capsys.readouterr()


@pytest.mark.parametrize("scope", [5, ["attn"]], ids=repr)
def test_non_string_scope(scope: Any) -> None:
    assert _outcome(lambda: get_profile({"model_config": LLAMA, "input_shape": [2, 4]}, "flops", scope, quiet=True),
                    "scope", f"scope {scope!r}") == "error"


# --- the corpus ---------------------------------------------------------------------------------------


def _repeat(spec: list[Any]) -> str:
    prefix, unit, count, suffix = spec
    return prefix + unit * count + suffix


def _corpus_config(case: dict[str, Any], tmp_path: Path) -> Any:
    """The config source of a corpus case. Keys: ``preset`` (a bundled base, then ``set`` {key: value},
    ``delete`` [keys], ``nest`` {key, depth}: a list nested depth times), or ``config`` (any JSON value,
    used as given), or ``raw_text`` / ``raw_repeat`` [prefix, unit, count, suffix] (a config.json's text),
    or ``source`` / ``source_repeat`` [prefix, unit, count, suffix] (the source string itself: a name, path
    or hub id, e.g. past the OS limits)."""
    if "source" in case:
        return case["source"]
    if "source_repeat" in case:
        return _repeat(case["source_repeat"])
    if "raw_text" in case or "raw_repeat" in case:
        if "raw_repeat" in case:
            prefix, unit, count, suffix = case["raw_repeat"]
            text = prefix + unit * count + suffix
        else:
            text = case["raw_text"]
        path = tmp_path / "config.json"
        path.write_text(text)
        return path
    if "config" in case:
        return case["config"]
    data = read_preset(find_preset(case["preset"]))
    data.update(case.get("set", {}))
    for key in case.get("delete", []):
        data.pop(key, None)
    if "nest" in case:
        junk: Any = []
        for _ in range(case["nest"]["depth"]):
            junk = [junk]
        data[case["nest"]["key"]] = junk
    return data


def _corpus() -> list[Any]:
    cases = []
    for path in sorted(CORPUS.glob("*.json")):
        case = json.loads(path.read_text())
        marks = [pytest.mark.xfail(reason=case["xfail"], strict=False)] if case.get("xfail") else []
        cases.append(pytest.param(case, id=path.stem, marks=marks))
    return cases


@pytest.mark.parametrize("case", _corpus())
def test_corpus(case: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = _corpus_config(case, tmp_path)
    kwargs = {"model_config": source, "input_shape": [2, 3], **case.get("kwargs", {})}

    def run() -> None:
        prof = profile_model(source, as_family=kwargs.get("as_family"))
        _check_profile(prof)
        get_profile(kwargs, case.get("attr", "flops"), case.get("scope"), quiet=True)

    outcome = _outcome(run, case.get("field", ""), case.get("why", ""))
    assert outcome == case["expect"], case.get("why")


def test_corpus_is_not_empty() -> None:
    assert len(_corpus()) >= 10


# --- the command line -----------------------------------------------------------------------------------

CLI_EXAMPLES = int(os.environ.get("LLM_PROFILER_CLI_FUZZ_EXAMPLES", "25"))
CLI_CORPUS = CORPUS / "cli"
# validate runs torch (another part's fuzzing); ui serves until stopped (its argument parsing is tested in
# tests/test_ui.py); files would be written by these options.
CLI_SKIPPED_COMMANDS = {"validate", "ui"}
CLI_SKIPPED_OPTIONS = {"-h", "--help", "--version", "--debug", "-o", "--output", "--plot"}
# Values that broke something once, or sit on a limit: non-finite and huge numbers, ranges past every cap,
# names past the OS limits, every kind of option value of the subcommands.
CLI_VALUES = [
    "nan", "inf", "-inf", "1e309", "-1e309", "-1", "0", "-0", "1", "2", "3", "1.5", "0.5", "1e-300", "", " ", "abc",
    "\u00e9", "\x00", str(2**63 - 1), str(2**63), str(2**64), "9" * 5000, "1:1000000000000", "0-100000000000",
    "1:100", "1:1000:x2", "128:4096:x2", "1,2,3", "0:1:x2", "1:2:x1", "::", "5-1", "0-3", "1,1", "x2",
    "flops", "macs,params", "active_params", "cache", "act", "attn", "mlp", "layers.0", "layers.999", "*.k_proj",
    "[", "fp8", "bf16", "int4", "int4-g0", "int4-g" + "9" * 4400, "torch.float16", "h100", "a100-80gb", "rtx-4090",
    "nope", "all", "last", "decode", "generate", "prefill", "batch", "context", "eager", "fused", "1,1,2048",
    "1,2", "llama", "gemma3", "main", "hf_" + "a" * 34, "org/" + "a" * 5000, "~nonexistentuser/config.json",
]
CLI_MODELS = ["llama-3.2-1b", "gpt2", "qwen3-30b-a3b", "gemma-3-1b"]


def _cli_commands() -> dict[str, list[tuple[str, bool]]]:
    """subcommand -> its options as (flag, takes a value), read from the parser itself."""
    from llm_profiler.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, list[tuple[str, bool]]] = {}
    for name, subparser in sub.choices.items():
        if name in CLI_SKIPPED_COMMANDS:
            continue
        options = []
        for action in subparser._actions:
            flags = [f for f in action.option_strings if f.startswith("--")]
            if flags and not set(action.option_strings) & CLI_SKIPPED_OPTIONS:
                options.append((flags[0], action.nargs != 0))
        out[name] = options
    return out


CLI_COMMANDS = _cli_commands()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``llm_profiler.cli.main(argv)`` in-process, offline, with stdout and stderr captured."""
    from llm_profiler.cli import main

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _check_cli(argv: list[str]) -> tuple[int, str]:
    rc, out, err = run_cli(argv)
    where = f"llm-profiler {' '.join(a if len(a) < 60 else a[:60] + '...' for a in argv)!s}"
    assert "Traceback" not in out + err, f"{where}: a traceback\n{err[-2000:]}"
    assert rc in (0, 1, 2), f"{where}: exit {rc}\n{err[-2000:]}"
    if rc == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: not one error line\n{err[-2000:]}"
    TRIED[f"cli exit {rc}"] += 1
    return rc, err


def _cli_value() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(CLI_VALUES),
        st.text(max_size=12),
        st.integers(min_value=-(10**20), max_value=10**20).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )


@st.composite
def _cli_argv(draw: Any, command: str) -> list[str]:
    argv = [command]
    if command != "presets":
        argv.append(draw(st.one_of(st.sampled_from(CLI_MODELS), st.sampled_from(CLI_VALUES))))
        if command == "compare":
            argv.append(draw(st.sampled_from(CLI_MODELS)))
    for flag, takes_value in draw(st.lists(st.sampled_from(CLI_COMMANDS[command]), max_size=4, unique=True)):
        # --flag=VALUE: a value starting with '-' is a value, not another option
        argv.append(f"{flag}={draw(_cli_value())}" if takes_value else flag)
    return argv


@pytest.mark.parametrize("command", sorted(CLI_COMMANDS))
def test_cli_arbitrary_arguments(command: str) -> None:
    @settings(max_examples=CLI_EXAMPLES, deadline=timedelta(seconds=30), derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(argv=_cli_argv(command))
    def one(argv: list[str]) -> None:
        _check_cli(argv)

    one()


def test_cli_fuzz_covers_every_subcommand_but_validate_and_ui() -> None:
    assert set(CLI_COMMANDS) == {"profile", "compare", "sweep", "export", "presets", "roofline", "fit", "plan",
                                 "serve", "train"}
    assert ("--overhead", True) in CLI_COMMANDS["fit"] and ("--exact", False) in CLI_COMMANDS["profile"]


def _cli_corpus() -> list[Any]:
    cases = []
    for path in sorted(CLI_CORPUS.glob("*.json")):
        case = json.loads(path.read_text())
        marks = [pytest.mark.xfail(reason=case["xfail"], strict=False)] if case.get("xfail") else []
        cases.append(pytest.param(case, id=path.stem, marks=marks))
    return cases


def _cli_case_argv(case: dict[str, Any]) -> list[str]:
    """``argv``: strings, or [prefix, unit, count, suffix] for a long one (a 5,000-character name)."""
    return [arg if isinstance(arg, str) else _repeat(arg) for arg in case["argv"]]


@pytest.mark.parametrize("case", _cli_corpus())
def test_cli_corpus(case: dict[str, Any]) -> None:
    rc, err = _check_cli(_cli_case_argv(case))
    assert rc == case["expect"], case["why"]
    assert case.get("needle", "") in err, case["why"]


def test_cli_corpus_is_not_empty() -> None:
    assert len(_cli_corpus()) >= 10


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Any:
    yield
    line = f"fuzz: {sum(TRIED.values())} cases tried: " + ", ".join(f"{n} {k}" for k, n in sorted(TRIED.items()))
    print("\n" + line)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        request.config.add_cleanup(lambda: reporter.write_line(line))
