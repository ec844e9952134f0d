"""Report writers: tables, JSON round trips, symbolic export, plots."""

from __future__ import annotations

import csv
import io
import sys

import pytest
import sympy

from llm_profiler import metrics as M
from llm_profiler import profile, profile_model
from llm_profiler.errors import ProfilerError, QueryError
from llm_profiler.report.export import (
    compare_result,
    compare_table,
    export_expr,
    per_layer_result,
    python_source,
    render_table,
    s_powers,
    structured,
    summary_table,
)
from llm_profiler.report.units import human
from llm_profiler.results import CompareResult, PerLayerResult, ProfileResult
from llm_profiler.symbols import B, P, S


@pytest.fixture(scope="module")
def llama():
    return profile("llama-2-7b", batch=16, seq=200)


# --- tables ------------------------------------------------------------------------------------------------
def test_render_table_text_alignment():
    text = render_table(["name", "value"], [["a", 1_234_567], ["longer", 12]], exact=False)
    lines = text.splitlines()
    assert lines == ["name    value", "------  -----", "a       1.23M", "longer     12"]
    exact = render_table(["name", "value"], [["a", 1_234_567]], exact=True).splitlines()
    assert exact[-1] == "a     1,234,567"
    assert "\t" not in text  # spaces only: survives copy-paste


def test_render_table_csv_is_exact_and_markdown_escapes():
    rows = [["x|y", 10**20, None]]
    assert list(csv.reader(io.StringIO(render_table(["a", "b", "c"], rows, "csv")))) == [["a", "b", "c"],
                                                                                      ["x|y", str(10**20), ""]]
    md = render_table(["a", "b", "c"], rows, "markdown").splitlines()
    assert md[1] == "|---|---:|---:|" and md[2] == "| x\\|y | 100000.00P | - |"
    with pytest.raises(QueryError, match="unknown table format"):
        render_table(["a"], [], "html")


def test_summary_table_totals(llama):
    result = llama.result("transformer")
    rows = list(csv.reader(io.StringIO(summary_table(result, "csv"))))
    assert rows[0] == ["scope", "metric", "value"]
    assert all(r[0] == "transformer" for r in rows[1:])  # the scope named on every row
    assert {r[1]: int(r[2]) for r in rows[1:]} == {M.LABELS[m]: v for m, v in llama.summary().items()}
    text = summary_table(result, exact=True)
    assert f"{llama.total('macs'):,}" in text


def test_per_layer_result_rows_add_up(llama):
    result = per_layer_result(llama, ["flops", "params"])
    assert result.rows[-1].label == "total"
    top = [r for r in result.rows if r.level == 0 and r.label != "total"]
    for metric in ("flops", "params"):
        assert sum(r.values[metric] for r in top) == result.rows[-1].values[metric] == llama.total(metric, "model")
    layer = llama.by_layer("flops")
    assert next(r for r in result.rows if r.label == "layers.31").values["flops"] == layer[31]


def test_human_units():
    assert human(999) == "999" and human(1000) == "1.00K" and human(4_096_000) == "4.10M"
    assert human(21_310_419_763_200) == "21.31T"


# --- JSON ----------------------------------------------------------------------------------------------------
def test_results_round_trip(llama):
    result = llama.result("attn")
    assert ProfileResult.model_validate_json(result.model_dump_json()) == result
    layers = per_layer_result(llama, M.SUMMARY, layers=[0, 1])
    assert PerLayerResult.model_validate_json(layers.model_dump_json()) == layers
    other = profile("llama-2-7b", batch=1, seq=1, past=200).result("attn")
    cmp = compare_result(result, other)
    assert CompareResult.model_validate_json(cmp.model_dump_json()) == cmp
    assert cmp.ratios["macs"] == other.totals["macs"] / result.totals["macs"]


def test_big_integers_survive_json():
    p = profile("llama-3.1-405b", batch=100_000, seq=1_000_000)
    result = p.result("transformer", ["flops"])
    assert result.totals["flops"] > 2**63
    assert ProfileResult.model_validate_json(result.model_dump_json()).totals == result.totals


def test_compare_table_labels_and_zero_ratio(llama):
    left = llama.result("transformer", ["flops", "cache"])
    right = profile("llama-2-7b", 1, 1, 16).result("transformer", ["flops", "cache"])
    text = compare_table(compare_result(left, right)).splitlines()
    assert "B=16 S=200 P=0" in text[0] and "B=1 S=1 P=16" in text[0]
    zero = ProfileResult(**{**left.model_dump(), "totals": {"flops": 0, "cache": 1}})
    assert compare_result(zero, right).ratios["flops"] is None


# --- symbolic export -------------------------------------------------------------------------------------------
def test_structured_keeps_the_value_and_splits_powers_of_s():
    expr = profile_model("llama-2-7b").expr("flops")
    assert sympy.expand(structured(expr) - expr) == 0
    powers = dict(s_powers(expr))
    # S**2: the attention scores and softmax over the new tokens; S**1: the per-token work (and P's part).
    assert set(powers) == {"S**2", "S**1", "S**0"}
    assert powers["S**2"].free_symbols == {B}
    assert powers["S**1"].free_symbols == {B, P}


def test_export_with_min_keeps_sliding_window_terms():
    expr = profile_model("mistral-7b").expr("cache")
    text = export_expr(expr, "text", metric="cache", scope="transformer")
    assert "Min(4095, P + S)" in text and "S inside Min/Max" in text
    namespace: dict = {}
    exec(export_expr(expr, "python", metric="cache"), namespace)  # noqa: S102
    model = profile_model("mistral-7b")
    for shape in [(1, 1, 0), (2, 7, 5000), (1, 4096, 4096)]:
        assert namespace["cache_transformer"](*shape) == model.count("cache", "transformer", *shape)


def test_python_source_is_exact_with_rational_coefficients():
    expr = B * S * (S + 1) / 2 + sympy.Rational(1, 3) * S * (S + 1) * (S + 2)
    namespace: dict = {}
    exec(python_source(expr, "f", "doc"), namespace)  # noqa: S102
    for b, s in [(1, 1), (3, 10**12), (7, 5)]:
        assert namespace["f"](b, s, 0) == int(expr.subs({B: b, S: s}))


def test_export_rejects_unknown_format():
    with pytest.raises(QueryError, match="unknown export format"):
        export_expr(S, "mathml")


# --- plots ---------------------------------------------------------------------------------------------------
def test_plot_layers_png(tmp_path, llama):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    from llm_profiler.report.plots import layer_parts, plot_layers

    path = plot_layers(llama, "flops", tmp_path / "layers.png")
    assert path.stat().st_size > 10_000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    parts = layer_parts(llama, "flops")
    assert sum(parts[0].values()) == llama.by_layer("flops")[0]


def test_plot_seq_curve_svg(tmp_path):
    pytest.importorskip("matplotlib")
    from llm_profiler.report.plots import plot_seq_curve

    path = plot_seq_curve(profile_model("llama-2-7b"), "flops", [128, 256, 512, 1024, 2048], tmp_path / "c.svg")
    assert path.stat().st_size > 10_000 and "<svg" in path.read_text()


def test_plot_roofline_png(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    from llm_profiler.report.plots import plot_roofline

    points = [("prefill", 10**15, 2 * 10**10), ("decode", 2 * 10**10, 1.5 * 10**10)]
    points = [(label, int(f), int(b)) for label, f, b in points]
    path = plot_roofline(points, "h100", "bf16", tmp_path / "roof.png")
    assert path.stat().st_size > 10_000 and matplotlib.image.imread(path).shape[2] in (3, 4)
    with pytest.raises(QueryError, match="positive flops and bytes"):
        plot_roofline([("x", 0, 1)], "h100", "bf16", tmp_path / "bad.png")


def test_plot_errors(tmp_path, llama, monkeypatch):
    from llm_profiler.report import plots

    with pytest.raises(QueryError, match="must end in"):
        plots.plot_layers(llama, "flops", tmp_path / "x.jpg")
    with pytest.raises(QueryError, match="does not exist"):
        plots.plot_layers(llama, "flops", tmp_path / "missing" / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    with pytest.raises(ProfilerError, match=r"llm-profiler\[plot\]"):
        plots.plot_layers(llama, "flops", tmp_path / "x.png")
