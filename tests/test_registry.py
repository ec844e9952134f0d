"""The family registry: the model_type index read from the family modules matches the @register decorators,
and a profile imports only its own family module."""

from __future__ import annotations

import subprocess
import sys

from llm_profiler import families


def test_index_matches_the_registered_families() -> None:
    index = dict(families._index())
    families._load_all()
    assert sorted(index) == sorted(families._REGISTRY)
    for model_type, module in index.items():  # each model_type is registered by the module the index names
        assert type(families._REGISTRY[model_type]).__module__ == f"llm_profiler.families.{module}"


def test_a_profile_imports_only_its_family() -> None:
    code = ("import sys; from llm_profiler import profile; profile('llama-3.1-8b').total('macs'); "
            "print(sorted(m for m in sys.modules if m.startswith('llm_profiler.families.')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = eval(out)  # a printed list of module names
    assert "llm_profiler.families.llama" in loaded
    assert "llm_profiler.families.deepseek" not in loaded and "llm_profiler.families.gemma" not in loaded


def _kimi_like() -> dict[str, object]:
    """A Kimi-K2-style config: its own model_type, transformers' DeepseekV3ForCausalLM class."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "llm_profiler" / "presets" / "deepseek-ai--DeepSeek-V3.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("auto_map", None)
    return {**data, "model_type": "kimi_k2", "architectures": ["DeepseekV3ForCausalLM"]}


def test_an_unknown_model_type_is_profiled_as_its_architecture_class() -> None:
    from llm_profiler import profile

    p = profile(_kimi_like())
    assert p.spec.model_type == "deepseek_v3"
    assert any("'kimi_k2'" in n and "DeepseekV3ForCausalLM" in n and "no remote code" in n for n in p.spec.notes)
    assert p.total("params", "model") == profile("deepseek-v3").total("params", "model")  # 671,026,419,200


def test_an_unknown_architecture_class_gets_one_clear_error() -> None:
    import pytest

    from llm_profiler import profile
    from llm_profiler.errors import UnknownModelTypeError

    with pytest.raises(UnknownModelTypeError, match=r"'kimi_k2', and its architectures \['FooForCausalLM'\].*--as-family"):
        profile({**_kimi_like(), "architectures": ["FooForCausalLM"]})


def test_multimodal_classes_pick_the_model_type_matching_the_config_shape() -> None:
    flat = {"architectures": ["Llama4ForCausalLM"]}
    nested = {"architectures": ["Llama4ForCausalLM"], "text_config": {}}
    assert families.model_type_of_architecture(flat) == ("Llama4ForCausalLM", "llama4_text")
    assert families.model_type_of_architecture(nested) == ("Llama4ForCausalLM", "llama4")


def test_the_architectures_table_is_transformers_own() -> None:
    import importlib.util
    import json
    from pathlib import Path

    import pytest

    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is the validate extra")
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from architectures_table import OUT, table

    stored = json.loads(OUT.read_text(encoding="utf-8"))
    assert stored["transformers"] == transformers.__version__  # regenerate with scripts/architectures_table.py
    assert stored["classes"] == table()
    assert "deepseek_v3" in stored["classes"]["DeepseekV3ForCausalLM"]


def test_a_config_profiled_by_its_class_validates_as_that_class() -> None:
    import pytest

    pytest.importorskip("transformers")
    from llm_profiler.validation import validate

    report = validate(_kimi_like(), 2, 3, 0, tiny=True)  # built as DeepseekV3ForCausalLM, never remote code
    assert report.ok, report.summary_line()
    assert report.model_type == "deepseek_v3"
