"""The bundled presets: copies of published Hugging Face ``config.json`` files shipped as package data, and
their instruct / chat variants (same architecture, loaded from the base file).

The tables are the single place that names them; ``docs/presets.md`` documents where each file came from.
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
    """One bundled config: where it came from and the parameter total published for it.

    A *variant* (``variant_of`` set) is an instruct / chat checkpoint with the same architecture as a bundled
    base: it loads the base's file under its own hub id, with ``overrides`` (top-level fields whose published
    value differs, each from a recorded source) applied; ``note`` says what is known about the difference.
    """

    hub_id: str
    alias: str
    filename: str
    reconstructed: bool
    # The parameter total published for the model (tied weights once), the cross-check of docs/presets.md.
    published_params: int | None
    # What the profiler counts for the file (tied weights once, lm_head included; text model only), cached
    # here so that listing the presets builds no graph (tests/test_face.py recounts every one).
    params: int | None = None
    variant_of: str | None = None  # the base preset's hub id
    overrides: tuple[tuple[str, Any], ...] = ()
    note: str = ""
    extra_names: tuple[str, ...] = ()  # further lookup names (an older hub id)

    @property
    def repo_name(self) -> str:
        """The hub id without its organisation (``Llama-2-7b-hf``), also accepted as a lookup name."""
        return self.hub_id.split("/", 1)[1]

    @property
    def names(self) -> set[str]:
        """Every name that finds this preset (lower case): hub id, alias, repo name and extra names."""
        return {n.lower() for n in (self.hub_id, self.alias, self.repo_name, *self.extra_names)} | {
            n.split("/", 1)[1].lower() for n in self.extra_names if "/" in n}


def _preset(filename: str, alias: str, published_params: int | None, counted: int | None = None) -> Preset:
    # The hub id is encoded in the file name, so it cannot drift from it. ``counted`` defaults to the published
    # total: every preset but gemma-3-27b (whose published total includes the vision tower) reproduces it.
    reconstructed = filename.endswith(_RECONSTRUCTED_SUFFIX)
    stem = filename.removesuffix(_RECONSTRUCTED_SUFFIX if reconstructed else ".json")
    return Preset(
        hub_id=stem.replace("--", "/", 1),
        alias=alias,
        filename=filename,
        reconstructed=reconstructed,
        published_params=published_params,
        params=published_params if counted is None else counted,
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
    _preset("google--gemma-3-27b-pt.reconstructed.json", "gemma-3-27b", 27_432_406_640, counted=27_009_346_304),
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
    # 2025-26 families (sources: shared/hf-configs/SOURCES.md). Where no exact total is published, the total
    # is transformers' own count of the model built from the file (each validated exact, tests/test_family_*).
    _preset("openai--gpt-oss-20b.json", "gpt-oss-20b", 20_914_757_184),  # published "21B total, 3.6B active"
    # Text model only (the copy keeps text_config); the published 109B includes the vision tower.
    _preset("meta-llama--Llama-4-Scout-17B-16E-Instruct.json", "llama-4-scout", 107_769_861_120),
    _preset("zai-org--GLM-4.5-Air.json", "glm-4.5-air", 106_852_245_504),  # published "106B total, 12B active"
    _preset("MiniMaxAI--MiniMax-M2.5.json", "minimax-m2.5", 228_689_748_992),  # published "230B total, 10B active"
    _preset("LGAI-EXAONE--EXAONE-4.0-32B.json", "exaone-4.0-32b", 32_003_216_384),  # 30.95B without embeddings
    _preset("allenai--Olmo-3.1-32B-Instruct.json", "olmo-3.1-32b-instruct", 32_233_522_176),
    _preset("CohereForAI--aya-23-8B.json", "aya-23-8b", 8_028_033_024),  # the Hub's 8.03B
    _preset("stabilityai--stablelm-2-zephyr-1_6b.json", "stablelm-2-zephyr-1.6b", 1_644_515_328),  # the Hub's 1.64B
    # Hybrids with Mamba mixers (graph/ssm.py): no exact total is published, these are transformers' own counts.
    _preset("nvidia--Nemotron-H-56B-Base-8K.json", "nemotron-h-56b", 56_324_350_464),  # the model card's "56B"
    _preset("ai21labs--AI21-Jamba-1.5-Mini.json", "jamba-1.5-mini", 51_570_323_328),  # published "52B total, 12B active"
    # Without the multi-token-prediction layer, as deepseek-v3 (the Hub's "685B" counts it): V3's 671,026,404,352
    # plus 61 lightning indexers of 13,959,424 (wq_b 1536*8192, wk 7168*128, k_norm 2*128, weights_proj 7168*64).
    _preset("deepseek-ai--DeepSeek-V3.2.json", "deepseek-v3.2", 671_877_929_216),
    # Text model only (Gemma4ForCausalLM from text_config; the vision tower is not counted): published "25.2B total,
    # 3.8B active"; transformers' count of the text model, active 3,822,530,560.
    _preset("google--gemma-4-26B-A4B.json", "gemma-4-26b-a4b", 25_233_141_760),
    # Without the multi-token-prediction layer, which transformers does not build: published "284B total, 13B
    # activated" (the model card); the fp8 / fp4 quantization_config changes no count.
    _preset("deepseek-ai--DeepSeek-V4-Flash.json", "deepseek-v4-flash", 284_332_230_231),
    # The gated hub file reconstructed from its open mirrors' dims (docs/presets.md); the Hub's safetensors count:
    # 256000*1152 embedding + 26 * (3*1152*1024 + 1024*1152 + 3*1152*6912 + 2*1152) + 1152 final norm.
    _preset("google--vaultgemma-1b.reconstructed.json", "vaultgemma-1b", 1_038_741_120),
    # Reconstructed: MiniMax-Text-01 in transformers' minimax form (model card dims, MiniMax-M1 config.json's KV heads
    # and factors); published "456B total, 45.9B activated" (45,944,920,064 without the embedding and lm_head).
    _preset("MiniMaxAI--MiniMax-Text-01-hf.reconstructed.json", "minimax-text-01", 456_089_655_296),
    # Trimmed public copies of the checkpoint configs (MLX's quantization block left out; docs/presets.md):
    # DBRX published "132B total, 36B active"; Apertus-8B "8B".
    _preset("databricks--dbrx-instruct.reconstructed.json", "dbrx-instruct", 131_596_523_520),
    _preset("swiss-ai--Apertus-8B-Instruct-2509.reconstructed.json", "apertus-8b-instruct", 8_053_338_176),
    # Published "80B total, 3B active"; transformers' count (the checkpoint's MTP layer is not loaded).
    _preset("Qwen--Qwen3-Next-80B-A3B-Thinking.json", "qwen3-next-80b-a3b", 79_674_391_296),
    # Multimodal checkpoint: the text model (text_config) only; the published "27B" includes the vision tower.
    _preset("Qwen--Qwen3.5-27B.json", "qwen3.5-27b", 26_895_998_464),
)


_LLAMA_3_EOS = [128001, 128008, 128009]
# Instruct / chat checkpoints whose architecture is the base's (same fields for every count: dims, layers,
# heads, vocab, tying, rope, windows); they differ in metadata (eos ids, dtype, max_position_embeddings for
# some), which only ``overrides`` changes. (hub id, alias, base hub id, overrides, note, extra names)
_VARIANT_TABLE: tuple[tuple[str, str, str, tuple[tuple[str, Any], ...], str, tuple[str, ...]], ...] = (
    ("meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B",
     (("eos_token_id", _LLAMA_3_EOS),),
     # Source: GitHub DannyMeb/iShrink-LLM-Compression-Framework models/Llama-3.2-1B-Instruct/config.json
     # (commit b2cf257f), a save_pretrained copy of the instruct file: every count-relevant field equals the
     # base's; its torch_dtype (float16), transformers_version (4.47.1) and _name_or_path are the re-save's.
     "eos_token_id from a copy of the instruct file (docs/presets.md); other fields the base's", ()),
    ("meta-llama/Llama-3.2-3B-Instruct", "llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B", (),
     "the base's file, eos ids included", ()),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B", (),
     "the base's file, eos ids included", ("meta-llama/Meta-Llama-3.1-8B-Instruct",)),
    ("meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-70b-instruct", "meta-llama/Llama-3.1-70B", (),
     "the base's file, eos ids included", ("meta-llama/Meta-Llama-3.1-70B-Instruct",)),
    ("meta-llama/Llama-3.1-405B-Instruct", "llama-3.1-405b-instruct", "meta-llama/Llama-3.1-405B", (),
     "the base's file, eos ids included", ("meta-llama/Meta-Llama-3.1-405B-Instruct",)),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama-3-8b-instruct", "meta-llama/Meta-Llama-3-8B", (),
     "the base's file, eos id included", ()),
    ("meta-llama/Meta-Llama-3-70B-Instruct", "meta-llama-3-70b-instruct", "meta-llama/Meta-Llama-3-70B", (),
     "the base's file, eos id included", ()),
    ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b-chat", "meta-llama/Llama-2-7b-hf", (),
     "the base's file", ()),
    ("meta-llama/Llama-2-70b-chat-hf", "llama-2-70b-chat", "meta-llama/Llama-2-70b-hf", (),
     "the base's file", ()),
    ("mistralai/Mistral-7B-Instruct-v0.1", "mistral-7b-instruct", "mistralai/Mistral-7B-v0.1", (),
     "the base's file (v0.1 only: later versions change rope_theta and the window)", ()),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b-instruct", "mistralai/Mixtral-8x7B-v0.1", (),
     "the base's file", ()),
    ("Qwen/Qwen2-7B-Instruct", "qwen2-7b-instruct", "Qwen/Qwen2-7B", (),
     "the base's file, eos id and max_position_embeddings included (no count uses them)", ()),
    ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B", (),
     "the base's file, eos id and max_position_embeddings included (no count uses them)", ()),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B", (),
     "the base's file, eos id and max_position_embeddings included (no count uses them)", ()),
    ("Qwen/Qwen1.5-MoE-A2.7B-Chat", "qwen1.5-moe-a2.7b-chat", "Qwen/Qwen1.5-MoE-A2.7B", (),
     "the base's file (itself reconstructed from the chat model's)", ()),
    ("google/gemma-2b-it", "gemma-2b-it", "google/gemma-2b", (), "the base's file", ()),
    ("google/gemma-2-9b-it", "gemma-2-9b-it", "google/gemma-2-9b", (),
     "the base's file, torch_dtype included", ()),
    ("google/gemma-2-27b-it", "gemma-2-27b-it", "google/gemma-2-27b", (),
     "the base's file, torch_dtype included", ()),
    ("tiiuae/falcon-7b-instruct", "falcon-7b-instruct", "tiiuae/falcon-7b", (),
     "the base's file (itself reconstructed from the instruct model's)", ()),
)


def _variant(hub_id: str, alias: str, base_id: str, overrides: tuple[tuple[str, Any], ...], note: str,
             extra_names: tuple[str, ...]) -> Preset:
    base = next(p for p in _PRESETS if p.hub_id == base_id)
    return Preset(hub_id=hub_id, alias=alias, filename=base.filename, reconstructed=base.reconstructed,
                  published_params=base.published_params, params=base.params, variant_of=base.hub_id,
                  overrides=overrides, note=note, extra_names=extra_names)


_VARIANTS: tuple[Preset, ...] = tuple(_variant(*row) for row in _VARIANT_TABLE)


@lru_cache(maxsize=1)
def _lookup_table() -> dict[str, Preset]:
    # Hub id, alias and bare repo name all resolve, case-insensitively; they are unique across both tables.
    table: dict[str, Preset] = {}
    for preset in (*_PRESETS, *_VARIANTS):
        for key in preset.names:
            if key in table and table[key] is not preset:
                raise AssertionError(f"preset name {key!r} is ambiguous")
            table[key] = preset
    return table


def list_presets() -> list[Preset]:
    """Every bundled preset file, in table order (grouped by family); the variants are ``list_variants()``."""
    return list(_PRESETS)


def list_variants() -> list[Preset]:
    """The instruct / chat variants: presets with ``variant_of`` set, loading their base's file."""
    return list(_VARIANTS)


def find_preset(name: str) -> Preset | None:
    """The preset or variant whose hub id, alias or repo name is ``name`` (case-insensitive), else ``None``."""
    return _lookup_table().get(name.strip().lower())


@cache
def _preset_text(filename: str) -> str:
    return (resources.files("llm_profiler") / "presets" / filename).read_text(encoding="utf-8")


def read_preset(preset: Preset) -> dict[str, Any]:
    """The preset's config.json content (a variant's: its base's with its overrides); a fresh dict on each
    call, so callers may mutate it."""
    try:
        data = json.loads(_preset_text(preset.filename))
    except (OSError, json.JSONDecodeError) as exc:  # a broken install, not a user error
        raise ConfigError(f"bundled preset file {preset.filename} is missing or corrupt: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"bundled preset file {preset.filename} does not hold a JSON object")
    for key, value in preset.overrides:
        data[key] = json.loads(json.dumps(value))  # a copy: the table's value is shared
    return data
