"""The bundled presets: copies of published Hugging Face ``config.json`` files shipped as package data.

The table is the single place that names them; ``docs/presets.md`` documents where each file came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from ..errors import ConfigError

_RECONSTRUCTED_SUFFIX = ".reconstructed.json"


@dataclass(frozen=True)
class Preset:
    """One bundled config: where it came from and the parameter total published for it."""

    hub_id: str
    alias: str
    filename: str
    reconstructed: bool
    # The parameter total published for the model (tied weights once), the cross-check of docs/presets.md.
    published_params: int | None

    @property
    def repo_name(self) -> str:
        """The hub id without its organisation (``Llama-2-7b-hf``), also accepted as a lookup name."""
        return self.hub_id.split("/", 1)[1]


def _preset(filename: str, alias: str, published_params: int | None) -> Preset:
    # The hub id is encoded in the file name, so it cannot drift from it.
    reconstructed = filename.endswith(_RECONSTRUCTED_SUFFIX)
    stem = filename.removesuffix(_RECONSTRUCTED_SUFFIX if reconstructed else ".json")
    return Preset(
        hub_id=stem.replace("--", "/", 1),
        alias=alias,
        filename=filename,
        reconstructed=reconstructed,
        published_params=published_params,
    )


# Totals from /work/shared/hf-configs/SOURCES.md (each matched the transformers count of the file exactly).
_PRESETS: tuple[Preset, ...] = (
    _preset("meta-llama--Llama-2-7b-hf.json", "llama-2-7b", 6_738_415_616),
    _preset("meta-llama--Llama-2-70b-hf.json", "llama-2-70b", 68_976_648_192),
    _preset("meta-llama--Meta-Llama-3-8B.json", "meta-llama-3-8b", 8_030_261_248),
    _preset("meta-llama--Meta-Llama-3-70B.json", "meta-llama-3-70b", 70_553_706_496),
    _preset("meta-llama--Llama-3.1-8B.json", "llama-3.1-8b", 8_030_261_248),
    _preset("meta-llama--Llama-3.1-70B.json", "llama-3.1-70b", 70_553_706_496),
    _preset("meta-llama--Llama-3.1-405B.json", "llama-3.1-405b", 405_853_388_800),
    _preset("meta-llama--Llama-3.2-1B.json", "llama-3.2-1b", 1_235_814_400),
    _preset("meta-llama--Llama-3.2-3B.json", "llama-3.2-3b", 3_212_749_824),
    _preset("mistralai--Mistral-7B-v0.1.json", "mistral-7b", 7_241_732_096),
    _preset("mistralai--Mixtral-8x7B-v0.1.json", "mixtral-8x7b", 46_702_792_704),
    _preset("Qwen--Qwen2-7B.json", "qwen2-7b", 7_615_616_512),
    _preset("Qwen--Qwen2.5-0.5B.json", "qwen2.5-0.5b", 494_032_768),
    _preset("Qwen--Qwen2.5-7B.json", "qwen2.5-7b", 7_615_616_512),
    _preset("Qwen--Qwen3-8B.json", "qwen3-8b", 8_190_735_360),
    _preset("Qwen--Qwen3-30B-A3B.json", "qwen3-30b-a3b", 30_532_122_624),
    _preset("Qwen--Qwen1.5-MoE-A2.7B.reconstructed.json", "qwen1.5-moe-a2.7b", 14_315_784_192),
    _preset("google--gemma-2b.json", "gemma-2b", 2_506_172_416),
    _preset("google--gemma-2-9b.json", "gemma-2-9b", 9_241_705_984),
    _preset("google--gemma-2-27b.json", "gemma-2-27b", 27_227_128_320),
    # Multimodal checkpoint: the total includes the vision tower; the text model sits under text_config.
    _preset("google--gemma-3-27b-pt.reconstructed.json", "gemma-3-27b", 27_432_406_640),
    _preset("microsoft--phi-2.json", "phi-2", 2_779_683_840),
    _preset("microsoft--Phi-3-mini-4k-instruct.json", "phi-3-mini", 3_821_079_552),
    _preset("openai-community--gpt2.json", "gpt2", 124_439_808),
    _preset("openai-community--gpt2-medium.json", "gpt2-medium", 354_823_168),
    _preset("openai-community--gpt2-large.reconstructed.json", "gpt2-large", 774_030_080),
    _preset("EleutherAI--gpt-neox-20b.json", "gpt-neox-20b", 20_554_567_680),
    _preset("tiiuae--falcon-7b.reconstructed.json", "falcon-7b", 6_921_720_704),
    _preset("facebook--opt-1.3b.reconstructed.json", "opt-1.3b", 1_315_758_080),
    _preset("bigscience--bloom-560m.reconstructed.json", "bloom-560m", 559_214_592),
    # Without the multi-token-prediction layer (671B total, 37B active as published).
    _preset("deepseek-ai--DeepSeek-V3.json", "deepseek-v3", 671_026_404_352),
    _preset("bigcode--starcoder2-7b.json", "starcoder2-7b", 7_173_923_840),
    # Remote-code model, so no transformers count: calflops' published total.
    _preset("THUDM--chatglm-6b.reconstructed.json", "chatglm-6b", 6_173_286_400),
)


@lru_cache(maxsize=1)
def _lookup_table() -> dict[str, Preset]:
    # Hub id, alias and bare repo name all resolve, case-insensitively; they are unique across the table.
    table: dict[str, Preset] = {}
    for preset in _PRESETS:
        for key in {preset.hub_id.lower(), preset.alias.lower(), preset.repo_name.lower()}:
            if key in table and table[key] is not preset:
                raise AssertionError(f"preset name {key!r} is ambiguous")
            table[key] = preset
    return table


def list_presets() -> list[Preset]:
    """Every bundled preset, in table order (grouped by family)."""
    return list(_PRESETS)


def find_preset(name: str) -> Preset | None:
    """The preset whose hub id, alias or repo name is ``name`` (case-insensitive), else ``None``."""
    return _lookup_table().get(name.strip().lower())


@cache
def _preset_text(filename: str) -> str:
    return (resources.files("llm_profiler") / "presets" / filename).read_text(encoding="utf-8")


def read_preset(preset: Preset) -> dict[str, Any]:
    """The preset's config.json content; a fresh dict on each call, so callers may mutate it."""
    try:
        data = json.loads(_preset_text(preset.filename))
    except (OSError, json.JSONDecodeError) as exc:  # a broken install, not a user error
        raise ConfigError(f"bundled preset file {preset.filename} is missing or corrupt: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"bundled preset file {preset.filename} does not hold a JSON object")
    return data
