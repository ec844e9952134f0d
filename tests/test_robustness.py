"""Robustness at the boundary (issues 17 and 19): every example ends in a correct answer or one clear
``ProfilerError`` (the CLI: one line, exit 2), a bug in one line with exit 3, and the hub fails fast.

Sections: the validators of ``llm_profiler.checks``; the CLI (errors, the last-resort handler, number options,
value lists counted before they are expanded); the loader (OS limits, tokens, revision); the hub with no
network (a real closed loopback port, a stubbed resolver, a real server answering 503); the API boundary.
The API-boundary cases at the end go through the validators wired into profile_model, Profile.table,
ModelProfile.compiled / sweep and Phase.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llm_profiler import get_profile, profile, profile_model
from llm_profiler.checks import (
    MAX_GRID_POINTS,
    MAX_NEW_TOKENS,
    check_as_family,
    check_compiled_args,
    check_dtype_name,
    check_float,
    check_grid,
    check_hf_token,
    check_int,
    check_layers,
    check_metric_list,
    check_new_tokens,
    check_revision,
    check_shape_arrays,
    check_source_name,
    check_table_args,
    layer_set,
    short,
)
from llm_profiler.cli import main
from llm_profiler.cli._common import grid, int_list
from llm_profiler.config import load_config
from llm_profiler.config import loader as loader_module
from llm_profiler.errors import (
    ArgumentError,
    ConfigError,
    HubError,
    LimitError,
    ProfilerError,
    QueryError,
    ShapeError,
)

LLAMA = "llama-3.2-1b"  # 16 layers, hidden 2048
TOKEN = "hf_" + "Zq9" * 12  # looks like a real token; must never be shown
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
              "NO_PROXY")


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(result: tuple[int, str, str], *needles: str, code: int = 2) -> str:
    rc, out, err = result
    assert rc == code, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- llm_profiler.checks ----------------------------------------------------------------------------------


def test_check_int() -> None:
    assert check_int(np.int32(7), "n") == 7 and type(check_int(np.int32(7), "n")) is int
    for bad, needle in [(True, "n must be an integer, got True"), (1.0, "float"), ("3", "str"), (None, "NoneType"),
                        (-1, "n must be >= 0, got -1"), (2**63, "<= 2**63 - 1")]:
        with pytest.raises(ArgumentError, match="^n ") as info:
            check_int(bad, "n", minimum=0)
        assert needle in str(info.value)
    with pytest.raises(ShapeError, match="seq must be >= 1"):
        check_int(0, "seq", minimum=1, error=ShapeError)
    # A 4,400-digit number is named by its size, not printed (printing it would itself fail).
    with pytest.raises(ArgumentError, match="14614-bit integer"):
        check_int(10**4399, "n")  # 10**4399 has bit_length 14614 = floor(4399 * log2(10)) + 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10**400, "0.5", None, True])
def test_check_float_refuses_non_finite_and_non_numbers(value: Any) -> None:
    with pytest.raises(ArgumentError, match=r"^memory_fraction must be a finite number in \(0, 1\]"):
        check_float(value, "memory_fraction", minimum=0, maximum=1, min_open=True)


def test_check_float_bounds() -> None:
    assert check_float(np.float32(0.5), "f", minimum=0, maximum=1) == 0.5
    assert check_float(1, "f", minimum=0, maximum=1) == 1.0  # closed upper bound
    with pytest.raises(ArgumentError, match=r"in \(0, 1\], got 0.0"):
        check_float(0.0, "f", minimum=0, maximum=1, min_open=True)
    with pytest.raises(ArgumentError, match=r"f must be a finite number \(GiB\) >= 0, got -0.5"):
        check_float(-0.5, "f", minimum=0, unit="GiB")


def test_check_new_tokens() -> None:
    assert check_new_tokens(MAX_NEW_TOKENS) == 1_000_000
    with pytest.raises(LimitError, match=r"new_tokens = 1000000000000000000 .* at most 1,000,000 tokens"):
        check_new_tokens(10**18)
    for bad in (0, -5, 2.5, "10", None, False):
        with pytest.raises(ShapeError, match="^new_tokens must"):
            check_new_tokens(bad)


def test_check_grid_counts_the_product() -> None:
    assert check_grid({"batch": 1000, "seq": 1000, "past": 1}) == 1_000_000  # exactly the limit: allowed
    with pytest.raises(LimitError) as info:
        check_grid({"batch": 1_000_000, "seq": 1_000_000, "past": 1})
    # 10**6 * 10**6 * 1 = 10**12 points asked, named with each axis and the limit
    assert "1,000,000,000,000 points (1,000,000 batch x 1,000,000 seq x 1 past values)" in str(info.value)
    assert "the limit is 1,000,000 (MAX_GRID_POINTS)" in str(info.value)


def test_check_shape_arrays() -> None:
    b, s, p = check_shape_arrays([[1], [2]], [1, 2, 3], 0)
    assert b.shape == (2, 1) and s.shape == (3,) and p.shape == () and b.dtype == np.int64
    with pytest.raises(ShapeError, match=r"must broadcast together .* batch \(2,\), seq \(3,\), past \(\)"):
        check_shape_arrays([1, 2], [1, 2, 3], 0)
    with pytest.raises(ShapeError, match="past must be >= 0 everywhere, got -1"):
        check_shape_arrays(1, 1, [0, -1])
    with pytest.raises(ShapeError, match="batch must be an integer or an array"):
        check_shape_arrays("2", 1, 0)
    with pytest.raises(ShapeError, match="seq must hold integers, got dtype float64"):
        check_shape_arrays(1, [1.5], 0)
    with pytest.raises(ShapeError, match="seq must hold integers, got dtype bool"):
        check_shape_arrays(1, [True], 0)
    with pytest.raises(LimitError, match=r"broadcast to 1,000,000 points \(1000, 1000\); the limit is 100,000"):
        check_shape_arrays(np.ones((1000, 1), dtype=np.int64), np.ones(1000, dtype=np.int64), 0, limit=100_000)
    with pytest.raises(LimitError, match=r"seq has 1,000 values; the limit is 10 \(MAX_SWEEP_POINTS\)"):
        check_shape_arrays(1, np.ones(1000, dtype=np.int64), 0, limit=10)
    b, _, _ = check_shape_arrays([2**62, 3], 1, 0)  # Python ints below 2**63 are kept exactly
    assert b.tolist() == [2**62, 3]
    with pytest.raises(ShapeError, match="must be <= 2\\*\\*63 - 1"):
        check_shape_arrays([2**64, 3], 1, 0)


def test_check_compiled_args() -> None:
    assert check_compiled_args(2, 3, 0) == (2, 3, 0)
    assert check_compiled_args(np.int64(2), 3, 1) == (2, 3, 1)
    for args, needle in [((None, 1, 0), "batch must be an integer, got NoneType None"),
                         (("2", 1, 0), "batch must be an integer, got str '2'"),
                         ((1, -1, 0), "seq must be >= 1, got -1"),
                         ((1, 1, -3), "past must be >= 0, got -3"),
                         ((1, True, 0), "seq must be an integer, got True")]:
        with pytest.raises(ShapeError) as info:
            check_compiled_args(*args)
        assert needle in str(info.value)
    b, s, _ = check_compiled_args([1, 2], np.array([3, 4]), 0)
    assert b.tolist() == [1, 2] and s.tolist() == [3, 4]


def test_check_metric_list_and_layers() -> None:
    assert check_metric_list("flops") == ["flops"]
    assert check_metric_list(("flops", "macs")) == ["flops", "macs"]
    for bad in (None, 5, [], [5], {"flops": 1}):
        with pytest.raises(ArgumentError, match="^metrics"):
            check_metric_list(bad)
    assert check_layers(None, 16) is None
    assert check_layers([3, 0, 3], 16) == [3, 0]  # duplicates dropped, order kept
    assert check_layers(np.int64(5), 16) == [5]
    assert check_layers(range(16), 16) == list(range(16))
    with pytest.raises(ArgumentError, match=r"^layers must be None, a layer index or a list .* got str '0'"):
        check_layers("0", 16)
    with pytest.raises(QueryError, match=r"layers: no layer 16; the model has layers 0..15"):
        check_layers([0, 16], 16)
    with pytest.raises(ArgumentError, match=r"layers\[1\] must be an integer, got float 1.0"):
        check_layers([0, 1.0], 16)


def test_check_table_args() -> None:
    assert check_table_args(["flops"], False, "csv", [0], 16) == (["flops"], False, "csv", [0])
    with pytest.raises(ArgumentError, match="^metrics must be a metric name or a list"):
        check_table_args(None, False, "text", None, 16)
    with pytest.raises(ArgumentError, match="^exact must be True or False, got str 'yes'"):
        check_table_args(["flops"], "yes", "text", None, 16)
    with pytest.raises(ArgumentError, match="^fmt must be one of text, markdown, csv, got 'html'"):
        check_table_args(["flops"], False, "html", None, 16)


def test_layer_set_is_a_set_for_membership() -> None:
    listed = list(range(0, 2_000_000, 2))  # 10**6 entries: a set answers membership at once
    members = layer_set(listed, "mlp_only_layers")
    assert isinstance(members, frozenset) and len(members) == 1_000_000
    assert 999_998 in members and 999_999 not in members
    for bad in ([True], [1.0], "0,1", None, [[0]]):
        with pytest.raises(ConfigError, match="'mlp_only_layers' must be a list of layer indices"):
            layer_set(bad, "mlp_only_layers")


def test_string_validators() -> None:
    assert check_as_family(None) is None and check_as_family("llama") == "llama"
    for bad in ({"a": 1}, ["llama"], 5, "", "  ", "x" * 101, "lla\nma"):
        with pytest.raises(ArgumentError, match="^as_family must be a model_type name"):
            check_as_family(bad)
    assert check_revision("main") == "main" and check_revision(None) is None
    for bad in ("", "ma in", 5, "x" * 256, "a\x00b"):
        with pytest.raises(ArgumentError, match="^revision must be a branch, tag or commit name"):
            check_revision(bad)
    assert check_source_name("a" * 4096) == "a" * 4096
    with pytest.raises(ConfigError, match=r"\(5,000 characters\) is too long: a path has at most 4096"):
        check_source_name("a" * 5000)
    assert check_dtype_name("torch.bfloat16") == "torch.bfloat16"
    with pytest.raises(ArgumentError, match=r"weight_dtype must be a dtype name .* at most 64 characters"):
        check_dtype_name("int4-g" + "9" * 4400, "weight_dtype")
    with pytest.raises(ArgumentError, match="weight_dtype must be a dtype name .* got int 16"):
        check_dtype_name(16, "weight_dtype")


@pytest.mark.parametrize("token, kind", [
    (TOKEN[:10] + "é" + TOKEN[10:], "a non-ASCII character at position 10"),
    (TOKEN + " ", f"whitespace at position {len(TOKEN)}"),
    ("\t" + TOKEN, "whitespace at position 0"),
    (TOKEN[:5] + "\x07" + TOKEN[5:], "a control character at position 5"),
])
def test_check_hf_token_names_the_argument_not_the_token(token: str, kind: str) -> None:
    with pytest.raises(ArgumentError) as info:
        check_hf_token(token)
    message = str(info.value)
    assert message.startswith("hf_token (--hf-token) is not a valid token") and kind in message
    assert TOKEN not in message and TOKEN[:8] not in message


def test_check_hf_token_types_and_length() -> None:
    assert check_hf_token(None) is None and check_hf_token("") is None and check_hf_token(TOKEN) == TOKEN
    with pytest.raises(ArgumentError, match="^hf_token .* must be a string .* got a bytes$"):
        check_hf_token(TOKEN.encode())
    with pytest.raises(ArgumentError, match="^\\$HF_TOKEN is 2,000 characters long"):
        check_hf_token("a" * 2000, "$HF_TOKEN")


def test_short_names_long_values() -> None:
    assert short("abc") == "'abc'"
    assert short("a" * 5000) == f"{'a' * 60!r}... (5,000 characters)"


# --- the CLI -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "-1", "x"])
@pytest.mark.parametrize("argv, option", [
    (["fit", LLAMA, "--overhead"], "overhead"),
    (["fit", LLAMA, "--memory-fraction"], "memory_fraction"),
    (["roofline", LLAMA, "--flops-efficiency"], "flops_efficiency"),
    (["roofline", LLAMA, "--bandwidth-efficiency"], "bandwidth_efficiency"),
    (["roofline", LLAMA, "--measured"], "measured"),
])
def test_number_options_refuse_non_finite_and_out_of_range(argv: list[str], option: str, value: str,
                                                           capsys: pytest.CaptureFixture) -> None:
    option_flag = argv[-1]  # --option=VALUE: a value starting with '-' is not taken for an option
    line = assert_one_line_error(cli(capsys, *argv[:-1], f"{option_flag}={value}"), option_flag)
    assert (f"{option} must be a finite number" in line) or ("expected a number, got 'x'" in line)


def test_fit_overhead_and_memory_fraction_still_work(capsys: pytest.CaptureFixture) -> None:
    rc, out, err = cli(capsys, "fit", LLAMA, "--device", "h100", "--seq", "2048", "--overhead", "0.5",
                       "--memory-fraction", "0.9", "--json")
    assert rc == 0 and err == ""
    assert '"solved_for": "batch"' in out


@pytest.mark.parametrize("argv, needles", [
    (["fit", LLAMA, "--seq", "0"], ["--seq", "seq must be >= 1, got 0"]),  # once silently the default 2048
    (["roofline", LLAMA, "--seq", "0"], ["--seq", "seq must be >= 1, got 0"]),
    (["roofline", LLAMA, "--nodes", "-3"], ["--nodes", "nodes must be >= 0, got -3"]),  # once nodes[-3:]
    (["profile", LLAMA, "--batch", "9" * 5000], ["--batch", "expected an integer"]),
    (["profile", LLAMA, "--past", str(2**63)], ["--past", "past must be <= 2**63 - 1"]),
    (["roofline", LLAMA, "--phase", "generate", "--new-tokens", str(10**18)],
     ["--new-tokens = 1000000000000000000", "at most 1,000,000 tokens", "MAX_NEW_TOKENS"]),
    (["roofline", LLAMA, "--batch", ",".join(["1"] * 300)], ["--batch has 300 values; at most 256"]),
    (["roofline", LLAMA, "--weight-dtype", "int4-g" + "9" * 4400], ["--weight-dtype", "at most 64 characters"]),
    (["roofline", LLAMA, "--kv-dtype", "x" * 100], ["--kv-dtype", "at most 64 characters"]),
])
def test_cli_option_values(argv: list[str], needles: list[str], capsys: pytest.CaptureFixture) -> None:
    assert_one_line_error(cli(capsys, *argv), *needles)


@pytest.mark.parametrize("argv, needles", [
    (["sweep", LLAMA, "--seq", "1:1000000000000"],
     ["--seq", "'1:1000000000000' asks for 1,000,000,000,000 values", "the limit is 1,000,000"]),
    (["sweep", LLAMA, "-b", "1:1000000", "-s", "1:1000000"],
     ["the sweep asks for 1,000,000,000,000 points (1,000,000 batch x 1,000,000 seq x 1 past values)"]),
    (["sweep", LLAMA, "-b", "1:100", "-s", "1:100", "-p", "0:100"],  # 100 * 100 * 101 = 1,010,000
     ["1,010,000 points (100 batch x 100 seq x 101 past values)"]),
    (["sweep", LLAMA, "--seq", "1:1" + "0" * 5000], ["--seq", "bad value list"]),
    (["profile", LLAMA, "--per-layer", "--layers", "0-100000000000"],
     ["--layers", "'0-100000000000' asks for 100,000,000,001 values"]),
    (["profile", LLAMA, "--per-layer", "--layers", "7-3"], ["--layers", "'7-3' is an empty range"]),
    (["profile", LLAMA, "--per-layer", "--layers", "0-999999"], ["--layers: no layer 16"]),
])
def test_value_lists_are_counted_before_they_are_expanded(argv: list[str], needles: list[str],
                                                          capsys: pytest.CaptureFixture) -> None:
    assert_one_line_error(cli(capsys, *argv), *needles)


def test_grid_and_int_list_values() -> None:
    assert grid("128:4096:x2") == [128, 256, 512, 1024, 2048, 4096]  # 128 * 2**k for k = 0..5
    assert grid("0:1024:256") == [0, 256, 512, 768, 1024]
    assert grid("1,2,8:64:x2,2") == [1, 2, 8, 16, 32, 64]  # duplicates dropped, order kept
    assert grid("1:1000") == list(range(1, 1001))
    assert len(grid(f"1:{MAX_GRID_POINTS}")) == MAX_GRID_POINTS  # exactly the limit
    with pytest.raises(argparse.ArgumentTypeError, match="asks for 1,000,001 values"):
        grid(f"0:{MAX_GRID_POINTS}")
    with pytest.raises(argparse.ArgumentTypeError, match="asks for 1,000,001 values"):
        grid(f"1:{MAX_GRID_POINTS},0")  # the count runs over every part of the list
    assert grid(f"1:{2**63 - 1}:x2") == [2**k for k in range(63)]  # 2**62 is the last below 2**63
    with pytest.raises(argparse.ArgumentTypeError, match=r"\(4,001 characters\): values must be below 2\*\*63"):
        grid("1:1" + "0" * 4000 + ":x2")
    assert int_list("0,1,4-7") == [0, 1, 4, 5, 6, 7]
    assert int_list("-2,3") == [-2, 3]
    with pytest.raises(argparse.ArgumentTypeError, match="asks for 2,000,000 values"):
        int_list("0-999999,0-999999")  # 10**6 + 10**6: the count runs over the parts, duplicates included


def test_sweep_at_the_limit_says_it_takes_a_while(capsys: pytest.CaptureFixture) -> None:
    rc, out, err = cli(capsys, "sweep", LLAMA, "-b", "1:400", "-s", "1:300", "--metric", "params")
    assert rc == 0
    assert err.startswith("sweep: 120,000 points x 1 metric(s)")  # 400 * 300 = 120,000 > 100,000
    rows = out.splitlines()
    assert len(rows) == 1 + 120_000 and rows[1] == "1,1,0,1235814400"  # params do not depend on the shape


def test_last_resort_handler_is_one_line_exit_3(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    import llm_profiler.cli.export as export

    def broken(args: argparse.Namespace) -> int:
        raise TypeError("unsupported operand type(s) for *: 'int' and 'NoneType'")

    monkeypatch.setattr(export, "run", broken)
    line = assert_one_line_error(cli(capsys, "export", LLAMA), code=3)
    assert line.startswith("error: internal error (TypeError: unsupported operand")
    assert "this is a bug in llm-profiler" in line and "--debug" in line and "report it" in line
    for argv in (["--debug", "export", LLAMA], ["export", LLAMA, "--debug"]):  # a global option, anywhere
        rc, out, err = cli(capsys, *argv)
        assert rc == 3 and out == ""
        assert err.startswith("Traceback (most recent call last):") and "in broken" in err
        assert err.splitlines()[-1].startswith("error: internal error (TypeError")


def test_memory_error_is_a_bug_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import llm_profiler.cli.export as export

    def exhausted(args: argparse.Namespace) -> int:
        raise MemoryError

    monkeypatch.setattr(export, "run", exhausted)
    line = assert_one_line_error(cli(capsys, "export", LLAMA), code=3)
    assert "out of memory" in line and "a bug in llm-profiler" in line


def test_debug_shows_the_traceback_of_a_profiler_error(capsys: pytest.CaptureFixture) -> None:
    assert_one_line_error(cli(capsys, "profile", LLAMA, "--as-family", "nope"), "unsupported model_type 'nope'")
    rc, _, err = cli(capsys, "profile", LLAMA, "--as-family", "nope", "--debug")
    assert rc == 2 and "Traceback" in err and "UnknownModelTypeError" in err
    assert err.splitlines()[-1].startswith("error: unsupported model_type 'nope'")


def test_cli_errors_on_sources_and_tokens(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(cli(capsys, "profile", "org/" + "a" * 5000), "(5,004 characters) is too long")
    assert_one_line_error(cli(capsys, "profile", "~nonexistentuser/config.json"),
                          "cannot expand '~nonexistentuser/config.json': there is no user 'nonexistentuser'")
    line = assert_one_line_error(cli(capsys, "profile", "some-org/some-model", "--hf-token", TOKEN + "é"),
                                 "hf_token (--hf-token) is not a valid token", "non-ASCII")
    assert TOKEN not in line
    assert_one_line_error(cli(capsys, "profile", LLAMA, "--revision", "a b"), "revision must be a branch")


# --- the loader: OS limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, needle", [
    ("a" * 5000, "(5,000 characters) is too long"),
    ("org/" + "a" * 5000, "(5,004 characters) is too long"),
    ("/tmp/" + "a" * 300 + "/config.json", "File name too long"),  # one component past NAME_MAX (255)
    ("a" * 300, "File name too long"),
    ("~nonexistentuser/config.json", "there is no user 'nonexistentuser'"),
])
def test_os_limits_on_names_are_config_errors(name: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(name)
    assert needle in str(info.value)
    assert len(str(info.value)) < 400  # the name is cut, not echoed whole


def test_circular_and_deep_dicts_are_config_errors() -> None:
    circular: dict[str, Any] = {"model_type": "llama"}
    circular["self"] = circular
    with pytest.raises(ConfigError, match="field 'self'.*Circular reference"):
        load_config(circular)
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(100_000):
        cursor["a"] = {}
        cursor = cursor["a"]
    with pytest.raises(ConfigError, match="field 'junk'.*maximum recursion depth"):
        profile_model({"model_type": "llama", "junk": deep})


def test_bad_hf_token_env_only_matters_for_a_hub_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN + " trailing")
    assert load_config(LLAMA).origin == "preset"  # a preset never reads the token
    with pytest.raises(ArgumentError) as info:
        load_config("some-org/some-model")
    assert str(info.value).startswith("$HF_TOKEN is not a valid token: it has whitespace at position 39")
    assert TOKEN not in str(info.value)  # position 39 = len("hf_") + 3 * 12


@pytest.mark.parametrize("kwargs, needle", [
    ({"hf_token": 123}, "hf_token (--hf-token) must be a string"),
    ({"hf_token": "hf_a b"}, "hf_token (--hf-token) is not a valid token"),
    ({"revision": ["main"]}, "revision must be a branch, tag or commit name (a string)"),
    ({"revision": "x" * 300}, "revision must be a branch, tag or commit name (1 to 255"),
])
def test_load_config_checks_token_and_revision(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ArgumentError) as info:
        load_config(LLAMA, **kwargs)
    assert needle in str(info.value)


# --- the hub with no network -------------------------------------------------------------------------------


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", *PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
    # Explicit: huggingface_hub keeps the HF_ENDPOINT it saw at its import, which may be another test's.
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    yield monkeypatch


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: connecting to it is refused


def test_unreachable_hub_fails_fast_with_one_line(hub_env: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    # A real transport against a closed loopback port: the kernel refuses the connection.
    hub_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    with pytest.raises(HubError) as info:
        load_config("some-org/some-model")
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "the hub is unreachable (cannot connect to 127.0.0.1:" in message and "Connection refused" in message
    assert "not in the local hub cache" in message and "llama-2-7b" in message
    # Measured: about 0.3 s (was 23 s of retries with backoff); a loose bound here, the figure in the docs.
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert capsys.readouterr().err == ""  # no retry warnings
    assert_one_line_error(cli(capsys, "profile", "some-org/some-model"), "the hub is unreachable")


def test_name_resolution_failure_is_one_attempt(hub_env: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def no_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    hub_env.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(HubError, match=r"unreachable \(cannot resolve huggingface.co \(the hub\): Name or service"):
        load_config("some-org/some-model")
    assert calls == ["huggingface.co"]  # one lookup, no retries


def test_hanging_resolver_is_cut_at_the_timeout(hub_env: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hang(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    hub_env.setattr(socket, "getaddrinfo", hang)
    hub_env.setattr(loader_module, "HUB_CONNECT_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(HubError, match=r"resolving huggingface.co \(the hub\) took longer than 0.2 s"):
            load_config("some-org/some-model")
    finally:
        release.set()


def test_proxy_is_checked_instead_of_the_hub(hub_env: pytest.MonkeyPatch) -> None:
    hub_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubError, match=r"unreachable \(cannot connect to 127.0.0.1:\d+ \(the proxy\)"):
        load_config("some-org/some-model")


def test_unreachable_hub_still_serves_the_local_cache(hub_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    commit = "c" * 40
    folder = tmp_path / "hub" / "models--cached-org--cached-model"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
    hub_env.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    config = load_config("cached-org/cached-model")
    assert config.origin == "hub" and config.data == {"model_type": "llama", "hidden_size": 64}


def test_reachable_hub_goes_to_the_client_with_the_endpoint(hub_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # connections complete in the backlog: the hub "answers"
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        hub_env.setenv("HF_ENDPOINT", endpoint)
        seen: dict[str, Any] = {}

        def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
            seen.update(kwargs, repo_id=repo_id, filename=filename)
            path = tmp_path / "config.json"
            path.write_text('{"model_type": "llama"}')
            return str(path)

        hub_env.setattr(huggingface_hub, "hf_hub_download", fake_download)
        assert load_config("some-org/some-model").data == {"model_type": "llama"}
    assert seen["local_files_only"] is False and seen["endpoint"] == endpoint and seen["filename"] == "config.json"


class _Answer503(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: Any) -> None:
        pass


def test_transient_http_answers_are_retried_with_one_line(hub_env: pytest.MonkeyPatch) -> None:
    import huggingface_hub.utils._http as hub_http

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    requests: list[float] = []
    hub_env.setattr(hub_http.time, "sleep", requests.append)  # the backoff, without the waiting
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    keep = Keep(logging.WARNING)
    logger = logging.getLogger("huggingface_hub.utils._http")
    logger.addHandler(keep)
    try:
        hub_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(HubError, match=r"the hub answered HTTP 503 \(retried with backoff\)"):
            load_config("some-org/some-model")
    finally:
        logger.removeHandler(keep)
        server.shutdown()
        server.server_close()
    assert requests == [1, 2, 4, 8, 8]  # the hub client's backoff: retries are kept for a 5xx answer
    assert len(records) == 1 and records[0].startswith("HTTP Error 503 thrown while requesting HEAD")
    assert records[0].endswith("(the hub client retries with backoff; further retries not shown)")
    assert not logger.filters  # the filter is removed again


# --- the API boundary --------------------------------------------------------------------------------------


def test_get_profile_accepts_a_numpy_shape(capsys: pytest.CaptureFixture) -> None:
    as_list = get_profile({"model_config": LLAMA, "input_shape": [2, 3]}, "flops", quiet=True)
    as_array = get_profile({"model_config": LLAMA, "input_shape": np.array([2, 3])}, "flops", quiet=True)
    assert as_array == as_list == profile(LLAMA, batch=2, seq=3).total("flops")
    with pytest.raises(ShapeError, match="input_shape must have two entries"):
        get_profile({"model_config": LLAMA, "input_shape": np.array([[2, 3]])}, "flops", quiet=True)


def test_get_profile_checks_as_family() -> None:
    with pytest.raises(ArgumentError, match=r"^kwargs 'as_family' must be a model_type name .* got dict \{'a': 1\}"):
        get_profile({"model_config": LLAMA, "input_shape": [2, 3], "as_family": {"a": 1}}, "flops", quiet=True)


def test_profile_as_family_dict() -> None:
    with pytest.raises(ArgumentError, match="as_family must be a model_type name"):
        profile(LLAMA, as_family={"a": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"metrics": None}, {"layers": "0"}], ids=["metrics-None", "layers-str"])
def test_profile_table_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ArgumentError):
        profile(LLAMA, batch=2, seq=3).table(**kwargs)


@pytest.mark.parametrize("args", [(None, 1, 0), (1, -1, 0), ("2", 1, 0)], ids=repr)
def test_compiled_arguments(args: tuple[Any, ...]) -> None:
    with pytest.raises(ShapeError):
        profile_model(LLAMA).compiled("flops")(*args)


def test_sweep_broadcast_error() -> None:
    with pytest.raises(ShapeError, match="must broadcast together"):
        profile_model(LLAMA).sweep("flops", batch=[1, 2], seq=[1, 2, 3])


def test_roofline_generate_astronomic_tokens() -> None:
    from llm_profiler.perf import roofline

    with pytest.raises(LimitError, match="MAX_NEW_TOKENS"):  # was a MemoryError (a 6.9 EiB array)
        roofline(LLAMA, "a100-80gb", "generate", batch=1, seq=16, new_tokens=10**18)


def test_every_new_error_is_a_profiler_error() -> None:
    assert issubclass(ArgumentError, QueryError) and issubclass(ArgumentError, TypeError)
    assert issubclass(LimitError, QueryError) and issubclass(LimitError, ProfilerError)


def test_mlp_only_layers_is_a_set() -> None:
    # 10,000 layers and a 1,000,000-entry mlp_only_layers list (every 7th index): membership is tested against a
    # set, so the spec builds at once (a list made it 10^4 x 10^6 comparisons). Dense layers: the multiples of 7
    # below 10,000, ceil(10000 / 7) = 1,429 of them.
    from llm_profiler.config import load_config
    from llm_profiler.families import build_spec

    data = {**load_config("qwen3-30b-a3b").data, "num_hidden_layers": 10_000, "mlp_only_layers": list(range(0, 10**6, 7))}
    _, spec = build_spec(data)
    assert sum(not layer.moe for layer in spec.layers) == 1_429
