"""The face of the CLI and the seed API (issue 16): the seed's engineering notation, the scope and what it
leaves out, active params in MoE summaries, bytes beside CACHE and ACT, the instruct / chat variants, the
cached preset parameter counts, and every metric labelled (issue 10's active_params KeyError)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import get_model_config, get_profile, print_summary, profile, profile_model
from llm_profiler import metrics as M
from llm_profiler.api import number, value_line
from llm_profiler.cli import main
from llm_profiler.config import find_preset, list_presets, load_config, read_preset
from llm_profiler.config import loader as config_loader
from llm_profiler.config.presets import list_variants
from llm_profiler.report.units import engineering, human_bytes
from llm_profiler.results import PerLayerResult, PresetList, ProfileResult

ROOT = Path(__file__).resolve().parent.parent

# Qwen3-30B-A3B (hidden 2048, 48 layers, 32 query / 4 KV heads of 128, 128 experts of width 768, top-8,
# vocab 151936, untied): the parameters one token uses.
QWEN3_EMBED = 151_936 * 2048  # 311_164_928, and the same again for the untied lm_head
QWEN3_ATTN = 2048 * 4096 + 2 * 2048 * 512 + 4096 * 2048 + 2 * 128  # q, k, v, o, q_norm, k_norm = 18_874_624
QWEN3_MOE_ACTIVE = 2048 * 128 + 8 * 3 * 2048 * 768  # router + 8 experts (gate, up, down) = 38_010_880
QWEN3_LAYER_ACTIVE = QWEN3_ATTN + QWEN3_MOE_ACTIVE + 2 * 2048  # + two RMSNorms = 56_889_600
QWEN3_ACTIVE = 2 * QWEN3_EMBED + 48 * QWEN3_LAYER_ACTIVE + 2048  # + final norm = 3_353_032_704


def _cli(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the seed's notation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3_157_871_852_800, ("3.16", 12)),  # 3.1578... x 10^12
        (59_020_000_000, ("59.02", 9)),  # the seed's own example line
        (747_321_600, ("747.32", 6)),
        (105_600, ("105.60", 3)),
        (600, ("600.00", 0)),
        (0, ("0.00", 0)),
        (999_994, ("999.99", 3)),
        (999_995, ("1.00", 6)),  # 999.995 rounds (half to even) to 1000.00: the next power instead
        (10**40 + 7, ("10.00", 39)),  # exact on integers beyond float precision
    ],
)
def test_engineering_notation(value: int, expected: tuple[str, int]) -> None:
    assert engineering(value) == expected


def test_value_line_is_the_seed_format() -> None:
    # MULT of Llama-3.2-1B's transformer at B=16, S=200: 3_157_871_852_800 = 3.16 x 10^12.
    assert value_line("mult", 3_157_871_852_800) == "    MULT:       3.16  (10^12)"
    assert value_line("mult", 3_157_871_852_800, exact=True) == "    MULT:       3157871852800"
    # a label longer than the seed's 12 columns still leaves a space before the value
    assert value_line("matmul_flops", 2_000) == "    MATMUL_FLOPs: 2.00  (10^3)"
    assert number(0) == "0" and number(12_345, exact=True) == "12345"


def test_human_bytes() -> None:
    assert human_bytes(104_857_600) == "104.86 MB"
    assert human_bytes(512) == "512 B"
    assert human_bytes(13_200_000_000) == "13.20 GB"


def test_simple_test_output(capsys: Any) -> None:
    cfg = get_model_config("meta-llama/Llama-3.2-1B")
    values = print_summary({"model_config": cfg, "input_shape": [16, 200]})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "transformer with input batchsize 16 and sequence length 200:"
    assert lines[2] == "    MULT:       3.16  (10^12)"  # 3_157_871_852_800
    assert values["mult"] == 3_157_871_852_800
    # KV cache: 16 layers x (K, V) x 8 KV heads x 64 x 3200 tokens = 52_428_800 elements x 2 bytes (bf16)
    assert values["cache"] == 16 * 2 * 8 * 64 * 16 * 200 == 52_428_800
    assert "    CACHE:      52.43  (10^6)   = 104.86 MB in bf16" in lines
    # lm_head: tied (0 own params); MACs 16*200 tokens x 128256 x 2048 = 840_538_521_600
    assert lines[-1] == ("    leaves out: lm_head (scope 'model' adds it): MACs 840.54  (10^9); "
                         "PARAMS 0, tied to the embedding (counted in embed)")
    assert "ACTIVE_PARAMS" not in "\n".join(lines)  # dense: active = total, not repeated


def test_simple_test_script_offline() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "simple_test.py"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "transformer with input batchsize 16 and sequence length 200:"
    assert lines[2] == "    MULT:       3.16  (10^12)"
    # the seed's own call: MULT in attn, 579_403_776_000 (derived in test_seed_example_instruct_offline)
    assert lines[-2:] == ["attn with input batchsize 16 and sequence length 200:", "    MULT:       579.40  (10^9)"]


def test_print_summary_exact_and_dtypes(capsys: Any) -> None:
    kwargs = {"model_config": "llama-3.2-1b", "input_shape": [16, 200]}
    print_summary(kwargs, exact=True, kv_dtype="fp8", act_dtype="fp32")
    lines = capsys.readouterr().out.splitlines()
    assert "    CACHE:      52428800   = 52428800 bytes in fp8" in lines  # 1 byte per element
    act = profile("llama-3.2-1b", 16, 200).total("act")
    assert f"    ACT:        {act}   = {4 * act} bytes in fp32" in lines


def test_moe_summary_shows_active_params(capsys: Any) -> None:
    values = print_summary({"model_config": "qwen3-30b-a3b", "input_shape": [1, 128]}, scope="model")
    assert list(values)[7:9] == ["params", "active_params"]  # right after PARAMS
    assert values["active_params"] == QWEN3_ACTIVE == 3_353_032_704
    assert values["params"] == 30_532_122_624
    out = capsys.readouterr().out
    assert "    ACTIVE_PARAMS: 3.35  (10^9)" in out.splitlines()
    assert "leaves out" not in out  # scope model leaves nothing out


def test_get_profile_exact_keyword(capsys: Any) -> None:
    value = get_profile({"model_config": "llama-2-7b", "input_shape": [16, 200]}, "macs", "model", exact=True)
    assert value == 21_310_419_763_200
    assert capsys.readouterr().out.splitlines()[1] == "    MACs:       21310419763200"


# --- the seed's example, offline ----------------------------------------------------------------------------
def test_seed_example_instruct_offline(monkeypatch: Any, capsys: Any) -> None:
    def no_hub(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(config_loader, "_fetch_from_hub", no_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = get_model_config("meta-llama/Llama-3.2-1B-Instruct")
    assert cfg.name == "meta-llama/Llama-3.2-1B-Instruct" and cfg.origin == "preset"
    assert cfg.data["eos_token_id"] == [128001, 128008, 128009]  # the instruct file's
    value = get_profile({"model_config": cfg, "input_shape": [16, 200]}, "mult", "attn")
    # Per layer (hidden 2048, 32 query heads and 8 KV heads of 64), per token: q and o projections
    # 2048*2048 each, k and v 2048*512 each, rope 2*(2048+512) = 5120; per token per key: scores 32*64 + 32
    # (the scale) = 2080, context 32*64 = 2048. B*S = 3200, S = 200 keys, 16 layers:
    per_layer = 3200 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 5120) + 3200 * 200 * (2080 + 2048)
    assert value == 16 * per_layer == 579_403_776_000
    base = get_profile({"model_config": "meta-llama/Llama-3.2-1B", "input_shape": [16, 200]}, "mult", "attn")
    assert value == base
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["attn with input batchsize 16 and sequence length 200:", "    MULT:       579.40  (10^9)"]


def test_variants_are_the_base_config_plus_overrides() -> None:
    variants = list_variants()
    assert len(variants) == 19
    for variant in variants:
        base = find_preset(variant.variant_of or "")
        assert base is not None and base.variant_of is None and variant.filename == base.filename
        data = read_preset(variant)
        expected = read_preset(base)
        expected.update(dict(variant.overrides))
        assert data == expected, variant.hub_id
        assert variant.params == base.params and variant.published_params == base.published_params
        for name in (variant.hub_id, variant.alias, variant.repo_name, variant.hub_id.upper()):
            assert find_preset(name) is variant
        assert load_config(variant.alias).name == variant.hub_id
    # the preset files and their table are unchanged: variants are listed apart
    assert all(p.variant_of is None for p in list_presets())
    assert find_preset("Meta-Llama-3.1-8B-Instruct").hub_id == "meta-llama/Llama-3.1-8B-Instruct"  # type: ignore[union-attr]
    assert find_preset("llama-2-7b-chat").hub_id == "meta-llama/Llama-2-7b-chat-hf"  # type: ignore[union-attr]


def test_variant_overrides_are_copies() -> None:
    preset = find_preset("llama-3.2-1b-instruct")
    assert preset is not None
    read_preset(preset)["eos_token_id"].append(1)  # mutating one result leaves the table alone
    assert read_preset(preset)["eos_token_id"] == [128001, 128008, 128009]


def test_variant_counts_equal_the_base() -> None:
    for variant in list_variants():
        if variant.alias not in ("llama-3.2-1b-instruct", "mixtral-8x7b-instruct", "gemma-2-9b-it"):
            continue
        a = profile_model(variant.hub_id)
        b = profile_model(variant.variant_of)
        for metric in ("flops", "macs", "params", "active_params", "cache", "act"):
            assert a.count(metric, "model", 3, 7, 5) == b.count(metric, "model", 3, 7, 5), (variant.alias, metric)


# --- presets: the cached counts ------------------------------------------------------------------------------
def test_cached_preset_params_are_the_profilers_count() -> None:
    for preset in list_presets():
        assert preset.params == profile_model(preset.hub_id).count("params", "model"), preset.hub_id
    # gemma-3-27b's published total includes the vision tower; the profiler counts the text model
    gemma3 = find_preset("gemma-3-27b")
    assert gemma3 is not None and gemma3.params == 27_009_346_304 != gemma3.published_params


def test_presets_command(capsys: Any) -> None:
    code, out, _ = _cli(["presets", "--json"], capsys)
    cached = PresetList.model_validate_json(out)
    code2, out2, _ = _cli(["presets", "--json", "--recount"], capsys)
    assert code == code2 == 0 and PresetList.model_validate_json(out2) == cached
    assert [p.alias for p in cached.presets] == [p.alias for p in list_presets()]
    llama = next(p for p in cached.presets if p.alias == "llama-3.2-1b")
    assert llama.params == llama.published_params == 1_235_814_400
    code, out, _ = _cli(["presets"], capsys)
    assert code == 0 and "instruct / chat variants" in out
    line = next(x for x in out.splitlines() if x.startswith("llama-3.2-1b-instruct "))
    assert "meta-llama/Llama-3.2-1B-Instruct" in line and "llama-3.2-1b" in line.split()[2]
    code, out, _ = _cli(["presets", "--csv"], capsys)
    assert len(list(csv.reader(io.StringIO(out)))) == 1 + len(list_presets())  # machine formats: the files only
    assert main(["presets", "--no-params", "--recount"]) == 2  # mutually exclusive
    capsys.readouterr()


# --- labels: issue 10's KeyError ------------------------------------------------------------------------------
def test_every_metric_has_a_label_and_description() -> None:
    assert set(M.LABELS) == set(M.ALL)
    assert set(M.DESCRIPTIONS) == set(M.ALL)
    assert len(set(M.LABELS.values())) == len(M.ALL)


def test_active_params_cli_quiet(capsys: Any) -> None:
    code, out, err = _cli(["profile", "qwen3-30b-a3b", "--attr", "active_params", "--scope", "model", "-q"], capsys)
    assert code == 0 and out == f"{QWEN3_ACTIVE}\n" == "3353032704\n"
    code, out, err = _cli(["profile", "qwen3-30b-a3b", "--attr", "active_params", "--scope", "model"], capsys)
    assert code == 0 and out.splitlines()[1] == "    ACTIVE_PARAMS: 3.35  (10^9)"


def test_active_params_per_layer(capsys: Any) -> None:
    argv = ["profile", "qwen3-30b-a3b", "--per-layer", "--metrics", "flops,active_params", "--layers", "0"]
    code, out, err = _cli(argv, capsys)
    assert code == 0 and "Traceback" not in err
    lines = out.splitlines()
    assert lines[0].split() == ["scope", "FLOPs", "ACTIVE_PARAMS"]
    assert lines[-1].split()[-1] == "3.35G"
    code, out, _ = _cli([*argv, "--json", "--exact"], capsys)
    rows = {r.label: r.values for r in PerLayerResult.model_validate_json(out).rows}
    assert rows["layers.0"]["active_params"] == QWEN3_LAYER_ACTIVE == 56_889_600
    assert rows["total"]["active_params"] == QWEN3_ACTIVE
    table = profile("qwen3-30b-a3b", 1, 128).table(["params", "active_params"], exact=True, layers=[0])
    assert f"{QWEN3_MOE_ACTIVE:,}" in table  # the layer's mlp row: 38,010,880 active


# --- the CLI summary ----------------------------------------------------------------------------------------
def test_cli_summary_names_scope_and_what_it_leaves_out(capsys: Any) -> None:
    code, out, _ = _cli(["profile", "llama-2-7b", "-b", "16", "-s", "200"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("transformer with input batchsize 16")
    # llama-2-7b's untied lm_head: 32000 x 4096 = 131_072_000 params, 3200 tokens x that = 419_430_400_000 MACs
    assert lines[-1] == "    leaves out: lm_head (--scope model adds it): MACs 419.43  (10^9); PARAMS 131.07  (10^6)"
    code, out, _ = _cli(["profile", "llama-2-7b", "-b", "16", "-s", "200", "--exact"], capsys)
    assert "    MACs:       20890989363200" in out.splitlines()
    assert out.splitlines()[-1].endswith("MACs 419430400000; PARAMS 131072000")
    code, out, _ = _cli(["profile", "llama-2-7b", "--scope", "model", "--attr", "params"], capsys)
    assert out.splitlines() == ["model with input batchsize 1 and sequence length 2048:",
                                "    PARAMS:     6.74  (10^9)"]  # 6_738_415_616


def test_cli_bytes_beside_cache_and_act(capsys: Any) -> None:
    # llama-2-7b, B=1, S=2048: cache 32 layers x 2 x 4096 x 2048 = 536_870_912 elements
    code, out, _ = _cli(["profile", "llama-2-7b", "--attr", "cache", "--kv-dtype", "fp8"], capsys)
    assert out.splitlines()[1] == "    CACHE:      536.87  (10^6)   = 536.87 MB in fp8"
    code, out, _ = _cli(["profile", "llama-2-7b", "--attr", "cache", "--exact"], capsys)
    assert out.splitlines()[1] == "    CACHE:      536870912   = 1073741824 bytes in bf16"
    code, out, err = _cli(["profile", "llama-2-7b", "--act-dtype", "fp7"], capsys)
    assert code == 2 and err.startswith("error: --act-dtype: unknown dtype 'fp7'")


def test_cli_moe_summary_and_machine_formats(capsys: Any) -> None:
    code, out, _ = _cli(["profile", "qwen3-30b-a3b", "-s", "128", "--json"], capsys)
    result = ProfileResult.model_validate_json(out)
    assert result.scope == "transformer" and "active_params" in result.totals
    assert result.totals["active_params"] == QWEN3_ACTIVE - QWEN3_EMBED  # the transformer has no lm_head
    code, out, _ = _cli(["profile", "qwen3-30b-a3b", "-s", "128", "--csv"], capsys)
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["scope", "metric", "value"]
    assert ["transformer", "ACTIVE_PARAMS", str(QWEN3_ACTIVE - QWEN3_EMBED)] in rows
    code, out, _ = _cli(["profile", "llama-2-7b", "--json"], capsys)
    assert "active_params" not in json.loads(out)["totals"]  # dense: the seed's ten only
