"""The command line, run for real: ``python -m llm_profiler`` and the installed ``llm-profiler`` script.

The subprocesses start together (a thread pool) so the file stays fast; each check then reads its run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sympy

from llm_profiler import metrics as M
from llm_profiler import profile, profile_model
from llm_profiler.cli import main
from llm_profiler.config import list_presets
from llm_profiler.results import CompareResult, PerLayerResult, PresetList, ProfileResult, SweepResult
from llm_profiler.symbols import B, P, S

ROOT = Path(__file__).resolve().parent.parent
MODULE = [sys.executable, "-m", "llm_profiler"]
SCRIPT = shutil.which("llm-profiler", path=str(Path(sys.executable).parent))

# One real process per subcommand (plus errors and the installed script); finer checks run main() in process.
RUNS: dict[str, list[str]] = {
    "summary": ["profile", "llama-2-7b", "--batch", "16", "--seq", "200"],
    "per_layer_json": ["profile", "llama-3.2-1b", "--per-layer", "--layers", "0,1", "--json"],
    "compare_json": ["compare", "llama-2-7b", "mistral-7b", "--seq", "4096", "--json"],
    "sweep": ["sweep", "llama-2-7b", "--metric", "flops,cache", "--batch", "1,2", "--seq", "128:1024:x2",
              "--past", "0,512"],
    "presets": ["presets", "--no-params", "--json"],
    "export_python": ["export", "llama-2-7b", "--metric", "flops", "--format", "python"],
    "err_model": ["profile", "no-such-model"],
    "err_metric": ["profile", "llama-2-7b", "--attr", "gflops"],
}
# In-process runs of main(argv): the same code path, without a Python start-up each.
CALLS: dict[str, list[str]] = {
    "summary_json": ["profile", "llama-2-7b", "-b", "2", "-s", "7", "-p", "5", "--json"],
    "attr_json": ["profile", "llama-2-7b", "--attr", "macs", "--scope", "attn", "--seq", "4096", "--json"],
    "per_layer_csv": ["profile", "llama-3.2-1b", "--per-layer", "--layers", "0", "--csv", "--metrics", "flops,params"],
    "per_layer_md": ["profile", "llama-3.2-1b", "--per-layer", "--layers", "0", "--markdown", "--exact"],
    "compare_shape": ["compare", "llama-2-7b", "--shape2", "1,1,2048", "--metrics", "flops,cache"],
    "sweep_big": ["sweep", "llama-3.1-405b", "--metric", "flops", "--batch", "100000", "--seq", "1000000",
                  "--json"],
    "presets_params": ["presets", "--json"],
    "export_sympy": ["export", "llama-2-7b", "--metric", "flops", "--scope", "attn", "--format", "sympy"],
    "export_latex": ["export", "llama-2-7b", "--format", "latex"],
    "err_batch": ["profile", "llama-2-7b", "--batch", "0"],
    "err_batch_text": ["profile", "llama-2-7b", "--batch", "two"],
    "err_scope": ["profile", "llama-2-7b", "--attr", "flops", "--scope", "layers.99"],
    "err_sweep_grid": ["sweep", "llama-2-7b", "--seq", "128:x2"],
    "err_compare": ["compare", "llama-2-7b"],
    "help": ["--help"],
}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess[str]]:
    commands = {name: MODULE + args for name, args in RUNS.items()}
    if SCRIPT:
        commands["script"] = [SCRIPT, "profile", "llama-2-7b", "--attr", "flops", "--scope", "model", "-q"]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(_run, cmd) for name, cmd in commands.items()}
        done = {name: f.result() for name, f in futures.items()}
    for name, argv in CALLS.items():
        done[name] = _call(argv)
    return done


def _call(argv: list[str]) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def ok(runs: dict, name: str) -> str:
    done = runs[name]
    assert done.returncode == 0, (name, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout


def test_summary_is_the_seed_format(runs):
    lines = ok(runs, "summary").splitlines()
    assert lines[0] == "transformer with input batchsize 16 and sequence length 200:"
    values = profile("llama-2-7b", 16, 200).summary()
    assert len(lines) == 1 + len(values) + 1  # + the line saying what the transformer scope leaves out
    for line, (metric, value) in zip(lines[1:], values.items()):
        power = (len(str(value)) - 1) // 3 * 3  # the seed's notation: a mantissa times 10^(3k)
        assert line.split()[:3] == [M.LABELS[metric] + ":", f"{value / 10**power:.2f}", f"(10^{power})"]
    assert lines[-1].startswith("    leaves out: lm_head (--scope model adds it): MACs ")


def test_summary_json_matches_api(runs):
    result = ProfileResult.model_validate_json(ok(runs, "summary_json"))
    assert result == profile("llama-2-7b", 2, 7, 5).result()
    assert result.schema_version == 1 and (result.batch, result.seq, result.past) == (2, 7, 5)


def test_attr_json(runs):
    result = ProfileResult.model_validate_json(ok(runs, "attr_json"))
    assert result.totals == {"macs": profile("llama-2-7b", 1, 4096).total("macs", "attn")}
    assert result.scope == "attn"


def test_installed_script(runs):
    if not SCRIPT:
        pytest.skip("the llm-profiler console script is not installed next to this python")
    assert int(ok(runs, "script")) == profile("llama-2-7b", 1, 2048).total("flops", "model")


def test_per_layer_json(runs):
    result = PerLayerResult.model_validate_json(ok(runs, "per_layer_json"))
    p = profile("llama-3.2-1b", 1, 2048)
    labels = [r.label for r in result.rows]
    assert "layers.0" in labels and "layers.1" in labels and "layers.2" not in labels
    rows = {r.label: r for r in result.rows if r.level == 0}
    assert rows["layers.1"].values["flops"] == p.by_layer("flops")[1]
    assert rows["total"].values == {m: p.total(m, "model") for m in M.SUMMARY}
    # the parts of a layer add up to the layer
    start = labels.index("layers.0")
    parts = [r for r in result.rows[start + 1:] if r.level == 1][:4]
    assert sum(r.values["params"] for r in parts) == rows["layers.0"].values["params"]


def test_per_layer_csv_and_markdown(runs):
    rows = list(csv.reader(io.StringIO(ok(runs, "per_layer_csv"))))
    assert rows[0] == ["scope", "FLOPs", "PARAMS"]
    assert rows[-1][0] == "total"
    p = profile("llama-3.2-1b", 1, 2048)
    assert int(rows[-1][1]) == p.total("flops", "model") and int(rows[-1][2]) == p.total("params", "model")
    assert all(len(r) == 3 for r in rows)
    md = ok(runs, "per_layer_md").splitlines()
    assert md[0].startswith("| scope | ADD |") and md[1].startswith("|---|---:")
    widths = {line.count("|") for line in md}
    assert widths == {len(M.SUMMARY) + 2}
    assert f"{p.total('params', 'model'):,}" in md[-1]


def test_compare(runs):
    result = CompareResult.model_validate_json(ok(runs, "compare_json"))
    left, right = profile("llama-2-7b", 1, 4096), profile("mistral-7b", 1, 4096)
    assert result.left.totals == left.summary() and result.right.totals == right.summary()
    assert result.ratios["flops"] == right.total("flops") / left.total("flops")
    text = ok(runs, "compare_shape").splitlines()
    assert "B=1 S=2048 P=0" in text[1] and "B=1 S=1 P=2048" in text[1] and text[1].rstrip().endswith("ratio")
    assert [line.split()[0] for line in text[3:]] == ["FLOPs", "CACHE"]


def test_sweep_csv_matches_count(runs):
    rows = list(csv.DictReader(io.StringIO(ok(runs, "sweep"))))
    assert len(rows) == 2 * 4 * 2  # batch x seq (128, 256, 512, 1024) x past
    assert [int(r["seq"]) for r in rows[:8:2]] == [128, 256, 512, 1024]
    model = profile_model("llama-2-7b")
    for r in rows:
        b, s, p = int(r["batch"]), int(r["seq"]), int(r["past"])
        assert int(r["flops"]) == model.count("flops", "transformer", b, s, p)
        assert int(r["cache"]) == model.count("cache", "transformer", b, s, p)


def test_sweep_beyond_int64_is_exact(runs):
    result = SweepResult.model_validate_json(ok(runs, "sweep_big"))
    value = result.points[0].values["flops"]
    assert value > 2**63
    assert value == profile_model("llama-3.1-405b").count("flops", "transformer", 100000, 1000000, 0)


def test_presets(runs):
    result = PresetList.model_validate_json(ok(runs, "presets"))
    assert [p.alias for p in result.presets] == [p.alias for p in list_presets()]
    assert all(p.params is None for p in result.presets)
    result = PresetList.model_validate_json(ok(runs, "presets_params"))
    llama = next(p for p in result.presets if p.alias == "llama-2-7b")
    assert llama.model_type == "llama" and llama.params == llama.published_params == 6_738_415_616


def test_export_round_trips(runs):
    expr = profile_model("llama-2-7b").expr("flops", "attn")
    parsed = sympy.sympify(ok(runs, "export_sympy"), locals={"B": B, "S": S, "P": P})
    assert sympy.expand(parsed - expr) == 0
    namespace: dict = {}
    exec(ok(runs, "export_python"), namespace)  # noqa: S102 - our own generated code
    fn = namespace["flops_transformer"]
    model = profile_model("llama-2-7b")
    for shape in [(1, 1, 0), (3, 7, 5), (16, 200, 0), (2, 1, 4096)]:
        assert fn(*shape) == model.count("flops", "transformer", *shape)
    assert "S^{2}" in ok(runs, "export_latex")


@pytest.mark.parametrize("name, needle", [
    ("err_model", "no-such-model"),
    ("err_batch", "batch must be >= 1"),
    ("err_batch_text", "--batch"),
    ("err_metric", "unknown metric 'gflops'"),
    ("err_scope", "no layer 99"),
    ("err_sweep_grid", "128:x2"),
    ("err_compare", "second model"),
])
def test_errors_are_one_line_exit_2(runs, name, needle):
    done = runs[name]
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_help_lists_every_subcommand(runs):
    text = ok(runs, "help")
    for command in ("profile", "compare", "sweep", "presets", "validate", "export"):
        assert command in text
    assert "examples:" in text


# --- in process (fast): main(argv) -------------------------------------------------------------------
def test_every_subcommand_has_help_with_examples(capsys):
    for command in ("profile", "compare", "sweep", "presets", "validate", "export"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"llm-profiler {command}" in out


def test_attr_quiet_and_seed_line(capsys):
    assert main(["profile", "llama-2-7b", "--attr", "flops", "--scope", "layers.0", "-q"]) == 0
    assert int(capsys.readouterr().out) == profile("llama-2-7b", 1, 2048).total("flops", "layers.0")
    assert main(["profile", "llama-2-7b", "-b", "16", "-s", "200", "--attr", "macs", "--scope", "model"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["model with input batchsize 16 and sequence length 200:", "    MACs:       21.31  (10^12)"]


def test_usage_errors_in_process(capsys):
    assert main(["profile", "llama-2-7b", "--layers", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --layers only applies to --per-layer")
    assert main(["profile", "llama-2-7b", "--per-layer", "--layers", "40"]) == 2
    assert "no layer 40" in capsys.readouterr().err
    assert main(["nope"]) == 2
    assert main([]) == 2


def test_sweep_output_file_and_plot(tmp_path, capsys):
    out, png = tmp_path / "s.csv", tmp_path / "s.png"
    assert main(["sweep", "llama-2-7b", "--seq", "128:2048:x4", "-o", str(out), "--plot", str(png)]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["batch", "seq", "past", "flops"] and len(rows) == 1 + 3
    assert png.stat().st_size > 10_000


def test_profile_plot_svg(tmp_path, capsys):
    svg = tmp_path / "layers.svg"
    assert main(["profile", "llama-3.2-1b", "--attr", "params", "--plot", str(svg), "-q"]) == 0
    assert svg.stat().st_size > 10_000 and svg.read_text().lstrip().startswith("<?xml")
    assert main(["profile", "llama-3.2-1b", "--plot", str(tmp_path / "x.txt")]) == 2
    assert "must end in" in capsys.readouterr().err


def test_round_trip_all_json(capsys):
    for argv, model in [
        (["profile", "llama-3.2-1b", "--json"], ProfileResult),
        (["profile", "llama-3.2-1b", "--per-layer", "--json"], PerLayerResult),
        (["compare", "llama-3.2-1b", "--shape2", "1,1,64", "--json"], CompareResult),
        (["sweep", "llama-3.2-1b", "--seq", "1,2", "--json"], SweepResult),
        (["presets", "--no-params", "--json"], PresetList),
    ]:
        assert main(argv) == 0
        text = capsys.readouterr().out
        result = model.model_validate_json(text)
        assert model.model_validate_json(result.model_dump_json()) == result
        assert json.loads(text)["schema_version"] == 1


@pytest.mark.validation
def test_validate_tiny_subprocess():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    done = _run(MODULE + ["validate", "llama-3.2-1b", "--batch", "2", "--seq", "3", "--past", "1", "--tiny", "--json"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tiny"] and report["unknown_ops"] == [] and report["rows"]
    assert all(r["predicted"] == r["measured"] for r in report["rows"])


def test_validate_without_torch_is_exit_2():
    code = ("import sys; sys.modules['torch'] = None; from llm_profiler.cli import main; "
            "sys.exit(main(['validate', 'llama-3.2-1b', '--tiny']))")
    done = _run([sys.executable, "-c", code])
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: validation needs torch and transformers")


def test_validate_mismatch_is_exit_1(monkeypatch, capsys):
    import llm_profiler.validation as validation
    from llm_profiler.validation import ValidationReport, ValidationRow

    def fake(config, batch, seq, past, **kwargs):
        row = ValidationRow(module="model.layers.0.mlp", metric="mult", predicted=10, measured=12)
        return ValidationReport(model="m", model_type="llama", batch=batch, seq=seq, past=past, device="meta",
                                tiny=False, transformers_version="x", torch_version="y", rows=[row],
                                unknown_ops=[], data_ops=[])

    monkeypatch.setattr(validation, "validate", fake)
    assert main(["validate", "llama-3.2-1b"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("MISMATCH:") and "model.layers.0.mlp" in out
