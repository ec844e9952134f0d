"""One face for the CLI and the Python API (issue 16 item 4): the same option names and the same defaults.

Every CLI subcommand's parser (``llm_profiler.cli.build_parser()``) is read back by introspection, and each
shared option's default is held equal to the default of the matching parameter of the Python function the
command runs (``inspect.signature``). The table of defaults is docs/cli.md, "Defaults".
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest

from llm_profiler import memory, perf
from llm_profiler.cli import build_parser, main
from llm_profiler.cli._common import scope_name
from llm_profiler.engines import get_engine
from llm_profiler.hardware import get_device
from llm_profiler.parallel import make_plan
from llm_profiler.parallel.search import search_plans
from llm_profiler.profile import ModelProfile, Profile, profile, profile_model
from llm_profiler.validation import validate

MODEL = "llama-2-7b"

# command -> [(Python function, {CLI long option: Python parameter})]. Only options that have a default on both
# sides are listed (a required Python parameter has none to compare); test_table_entries_have_defaults checks it.
SHAPE = {"--batch": "batch", "--seq": "seq", "--past": "past"}
DTYPES = {"--weight-dtype": "weight_dtype", "--act-dtype": "act_dtype", "--kv-dtype": "kv_dtype"}
# the parallel options of roofline and fit take their defaults from parallel.make_plan (one place)
PLAN = {"--tp": "tp", "--pp": "pp", "--dp": "dp", "--ep": "ep", "--cp": "cp", "--sp": "sp",
        "--micro-batches": "micro_batches",
        "--embedding": "embedding"}
COMMANDS: dict[str, list[tuple[Callable[..., Any], dict[str, str]]]] = {
    "profile": [(profile, {**SHAPE, "--engine": "engine"}), (Profile.total, {"--scope": "scope"})],
    "compare": [(profile, {**SHAPE, "--engine": "engine"}), (Profile.total, {"--scope": "scope"})],
    "sweep": [(ModelProfile.sweep, {**SHAPE, "--scope": "scope"}), (profile_model, {"--engine": "engine"})],
    "export": [(ModelProfile.expr, {"--scope": "scope"}), (profile_model, {"--engine": "engine"})],
    "roofline": [(perf.roofline, {**SHAPE, "--new-tokens": "new_tokens", "--lm-head": "lm_head",
                                  "--engine": "engine", "--device": "device", "--phase": "phase"}),
                 # roofline(**options) passes the dtypes and efficiencies on to perf.settings
                 (perf.settings, {**DTYPES, "--compute-dtype": "compute_dtype",
                                  "--flops-efficiency": "flops_efficiency",
                                  "--bandwidth-efficiency": "bandwidth_efficiency"}),
                 (make_plan, PLAN), (perf.roofline, {"--system": "system"})],
    "fit": [(memory.largest_context, {**DTYPES, "--batch": "batch", "--seq": "seq", "--lm-head": "lm_head",
                                      "--engine": "engine", "--device": "device", "--attention": "attention",
                                      "--memory-fraction": "memory_fraction"}),
            (memory.largest_batch, {**DTYPES, "--lm-head": "lm_head", "--engine": "engine", "--device": "device",
                                    "--attention": "attention", "--memory-fraction": "memory_fraction",
                                    "--system": "system"}),
            (make_plan, PLAN)],
    "plan": [(search_plans, {"--phase": "phase", "--batch": "batch", "--seq": "seq", "--past": "past",
                             "--objective": "objective", "--top": "top", "--engine": "engine"})],
    "validate": [(validate, SHAPE)],
    "ui": [(perf.roofline, {**SHAPE, "--new-tokens": "new_tokens", "--phase": "phase"}),
           (perf.settings, {"--act-dtype": "act_dtype", "--kv-dtype": "kv_dtype"}),
           (Profile.total, {"--metric": "metric", "--scope": "scope"})],
}

# Differences that remain because the Python side lives in a file this change may not edit
# (llm_profiler/profile.py: profile(), ModelProfile.sweep() default seq=1). The CLI's 2048 is the documented
# default (docs/cli.md, "Defaults"); test_pending_still_differ fails once profile.py follows, to drop them here.
PENDING: set[tuple[str, str]] = set()  # every shared default agrees

# Commands whose output is a table or a result: each takes --json, --csv and --markdown.
TABLE_COMMANDS = ("profile", "compare", "sweep", "presets", "roofline", "fit", "validate")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def cli_action(command: str, option: str) -> argparse.Action:
    parser = subparsers()[command]
    return parser._option_string_actions[option]


def cli_default(command: str, option: str) -> Any:
    """The value the command runs with when the option is not given (argparse converts a string default
    with the option's type, as on a real command line)."""
    parser = subparsers()[command]
    positionals = [MODEL] if command != "ui" else []
    if command == "plan":
        positionals += ["--system", "dgx-h100"]  # required
    return getattr(parser.parse_args(positionals), cli_action(command, option).dest)


def python_default(fn: Callable[..., Any], name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def normal(option: str, value: Any) -> Any:
    """The one spelling each side resolves a default to: a one-value list (sweep's grids) or a comma list
    (roofline --batch) is its value, an engine its profile name, a scope the CLI's scope name, a device
    its spec name."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if option == "--batch" and isinstance(value, str):
        value = int(value)
    if option == "--engine":
        return get_engine(value).name  # profile()'s None is the reference, hf-eager
    if option == "--scope":
        return scope_name(value)
    if option == "--device":
        return get_device(value).name
    return value


CASES = [(command, fn, option, param) for command, pairs in COMMANDS.items() for fn, table in pairs
         for option, param in table.items() if (command, option) not in PENDING]


@pytest.mark.parametrize("command,fn,option,param", CASES,
                         ids=[f"{c}{o}->{f.__qualname__}.{p}" for c, f, o, p in CASES])
def test_same_default(command: str, fn: Callable[..., Any], option: str, param: str) -> None:
    assert normal(option, cli_default(command, option)) == normal(option, python_default(fn, param))


def test_table_entries_have_defaults() -> None:
    """Every listed pair is a real option of the command and a parameter with a default of the function."""
    for command, fn, option, param in CASES:
        assert option in subparsers()[command]._option_string_actions, (command, option)
        assert python_default(fn, param) is not inspect.Parameter.empty, (fn.__qualname__, param)


def test_documented_defaults() -> None:
    """The one decision (docs/cli.md, "Defaults"): prompt 2048, batch 1, past 0, 128 new tokens, counts
    hf-eager, latency and memory vllm, activations bf16."""
    assert python_default(perf.roofline, "batch") == 1 and python_default(perf.roofline, "past") == 0
    assert python_default(perf.roofline, "new_tokens") == 128
    assert python_default(memory.largest_batch, "seq") == 2048
    for fn in (perf.roofline, memory.largest_batch, memory.largest_context, memory.memory_usage):
        assert python_default(fn, "engine") == "vllm"
    for fn in (perf.settings, memory.largest_batch, memory.largest_context, memory.memory_usage):
        assert python_default(fn, "act_dtype") == "bf16"
    for command in ("profile", "compare", "sweep", "export"):
        assert cli_default(command, "--engine") == "hf-eager"
    assert (python_default(validate, "batch"), python_default(validate, "seq")) == (1, 8)


@pytest.mark.parametrize("phase,seq", [("prefill", 2048), ("generate", 2048), ("decode", 1)])
def test_roofline_cli_equals_python(phase: str, seq: int, capsys: pytest.CaptureFixture[str]) -> None:
    """With no shape given, the CLI and perf.roofline() answer the same report; seq resolves per phase."""
    assert main(["roofline", MODEL, "--phase", phase, "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    py = perf.roofline(MODEL, phase=phase).model_dump(mode="json")
    assert cli == py
    assert cli["seq"] == seq and cli["batch"] == 1 and cli["past"] == 0 and cli["engine"] == "vllm"
    if phase == "generate":
        assert cli["new_tokens"] == 128


@pytest.mark.parametrize("solve,fn", [("batch", memory.largest_batch), ("context", memory.largest_context)])
def test_fit_cli_equals_python(solve: str, fn: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", MODEL, "--solve", solve, "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli == fn(MODEL).model_dump(mode="json")
    if solve == "batch":
        assert cli["at_value"]["seq"] == 2048  # largest_batch's seq default, as fit --seq's


def documented(command: str) -> dict[str, argparse.Action]:
    return {o: a for a in subparsers()[command]._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


def test_metric_option_names() -> None:
    """--metric (one) and --metrics (several) are the documented names; --attr (and sweep's --metric) are
    hidden aliases that still parse to the same value."""
    for command in subparsers():
        shown = documented(command)
        assert "--attr" not in shown, command
    assert {"--metric", "--metrics"} <= set(documented("profile"))
    assert "--metric" in documented("export") and "--metric" in documented("ui")
    assert "--metrics" in documented("compare") and "--metrics" in documented("sweep")
    assert "--metric" not in documented("sweep")  # sweep takes several: --metrics
    parsers = subparsers()
    for command, old, new in (("profile", "--attr", "--metric"), ("export", "--attr", "--metric"),
                              ("sweep", "--attr", "--metrics"), ("sweep", "--metric", "--metrics"),
                              ("sweep", "-m", "--metrics")):
        dest = parsers[command]._option_string_actions[new].dest
        assert getattr(parsers[command].parse_args([MODEL, old, "macs"]), dest) == \
            getattr(parsers[command].parse_args([MODEL, new, "macs"]), dest), (command, old)


@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_output_formats(command: str) -> None:
    shown = documented(command)
    for flag in ("--json", "--csv", "--markdown"):
        assert flag in shown, (command, flag)
        assert shown[flag].dest == "fmt" and shown[flag].const == flag[2:]
