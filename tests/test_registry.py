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
