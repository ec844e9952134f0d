"""Write llm_profiler/families/data/architectures.json: architecture class -> the model types it serves.

Read from the installed transformers' auto mappings (causal LM and image-text-to-text), so that a config whose
``model_type`` transformers does not know (a fine-tune's own name, e.g. Kimi-K2's ``kimi_k2``) but whose
``architectures`` names a known class is profiled as that class's model type, without importing transformers
on the profile path. ``tests/test_registry.py`` checks the file against the installed transformers.

    python scripts/architectures_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "llm_profiler" / "families" / "data" / "architectures.json"


def table() -> dict[str, list[str]]:
    from transformers.models.auto import modeling_auto

    out: dict[str, set[str]] = {}
    for mapping in (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                    modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES):
        for model_type, classes in mapping.items():
            for cls in classes if isinstance(classes, (list, tuple)) else (classes,):
                out.setdefault(cls, set()).add(model_type)
    return {cls: sorted(types) for cls, types in sorted(out.items())}


def main() -> None:
    import transformers

    data = {"transformers": transformers.__version__, "classes": table()}
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(data['classes'])} classes (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
