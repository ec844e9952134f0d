"""DeepSeek-V3.2 (deepseek_v32) and GLM-5 (glm_moe_dsa): DeepSeek-V3's MLA and MoE plus DeepSeek Sparse
Attention, a lightning indexer per layer (graph/sparse_attention.py), as transformers 5.23 computes them
(modeling_deepseek_v32.py, modeling_glm_moe_dsa.py).

- Attention: DeepSeek-V3's MLA (families/deepseek.py) with a low-rank q always (``q_lora_rank`` may not be
  null: the indexer reads the query latent ``q_a_layernorm(q_a_proj(x))``), RoPE always interleaved on the
  qk_rope dims (the config has no ``rope_interleave``), the rotary table over qk_rope dims (``head_dim`` is
  pointed at ``qk_rope_head_dim``), yarn's mscale**2 in the scaling (a value). The cache holds the latent as
  DeepSeek-V3's does: keys = the normed latent (kv_lora_rank), values = the rotated shared key (qk_rope), per
  token; every forward re-expands all P+S cached latents through ``kv_b_proj``.
- Indexer (``self_attn.indexer``): ``index_n_heads`` x ``index_head_dim`` queries from the q latent, one
  LayerNormed key per token (cached in the layer's ``indexer_keys``), ReLU(q.k) weighted per head, summed,
  masked, top ``index_topk``. DeepSeek-V3.2's indexer rotates by halves (rotate_half), GLM's by pairs.
- Sparse attention as transformers computes it: the chosen indices become a mask (scatter + masked_fill: no
  arithmetic) and eager attention computes every head's scores and context over ALL P+S keys, the dense
  counts; a DSA kernel (FlashMLA sparse) computes min(index_topk, P+S) keys per query.
- MLP: ``mlp_layer_types`` ("dense" / "sparse" per layer; default the first ``first_k_dense_replace`` dense),
  the MoE DeepSeek-V3's (sigmoid + correction bias, group-limited top-k, renormalised, shared experts).
- glm_moe_dsa: GlmMoeDsaConfig's defaults (GLM-5's dims), and ``indexer_types`` per layer: a "shared" layer
  has no indexer (and no indexer keys) and reuses the previous layer's top-k; from ``indexer_types``, else
  ``index_topk_pattern`` ("F"/"S" per layer), else "full" where max(i - index_skip_topk_offset + 1, 0) is a
  multiple of ``index_topk_freq`` (defaults 2 and 1: every layer full).
- The multi-token-prediction layer (``num_nextn_predict_layers``) is not part of the transformers model.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal

from pydantic import Field

from ..errors import ConfigError
from ..graph.blocks import Part
from ..graph.sparse_attention import lightning_indexer
from ..spec import ArchSpec, LayerSpec, Mixer
from . import register
from .deepseek import Deepseek, DeepseekSpec
from .fields import Fields
from .glm4_moe_lite import Glm4MoeLiteSpec

# DeepseekV32Config / GlmMoeDsaConfig defaults (transformers 5.23) where DeepseekV3Config's differ or are absent
DEFAULTS: dict[str, dict[str, Any]] = {
    "deepseek_v32": {"index_topk": 2048, "index_head_dim": 128, "index_n_heads": 64, "first_k_dense_replace": 3},
    "glm_moe_dsa": {
        "vocab_size": 154880, "hidden_size": 6144, "intermediate_size": 12288, "moe_intermediate_size": 2048,
        "num_hidden_layers": 78, "num_attention_heads": 64, "num_key_value_heads": 64, "n_shared_experts": 1,
        "n_routed_experts": 256, "kv_lora_rank": 512, "q_lora_rank": 2048, "qk_rope_head_dim": 64,
        "v_head_dim": 256, "qk_nope_head_dim": 192, "n_group": 1, "topk_group": 1, "num_experts_per_tok": 8,
        "norm_topk_prob": True, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 32,
        "first_k_dense_replace": 3,
    },
}


class DsaSpec(Glm4MoeLiteSpec):
    index_topk: int
    index_head_dim: int
    index_n_heads: int
    indexer_rope: Literal["rotate_half", "interleave"]
    shared_indexer_layers: tuple[int, ...] = Field(default=())  # glm_moe_dsa "shared" layers: no indexer

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(layer.model_copy(update={"mixer": Mixer(kind="sparse_attention")})
                     for layer in super().derive_layers())


def _indexer_types(f: Fields, data: dict[str, Any], layers: int) -> tuple[str, ...]:
    """GlmMoeDsaConfig.__post_init__'s per-layer indexer mode."""
    types = f.layer_types(layers, allowed=("full", "shared"), name="indexer_types")
    if types:
        return types
    pattern = data.get("index_topk_pattern")
    if pattern is not None:
        if isinstance(pattern, str):
            if set(pattern) - {"F", "S"}:
                raise ConfigError(f"glm_moe_dsa config field 'index_topk_pattern' = {pattern!r}: use 'F' and 'S'")
            pattern = [{"F": "full", "S": "shared"}[c] for c in pattern]
        data = {**data, "indexer_types": list(pattern)}
        return Fields(data, "glm_moe_dsa").layer_types(layers, allowed=("full", "shared"),
                                                       name="indexer_types") or ("full",) * layers
    freq = max(f.int("index_topk_freq", default=1), 1)
    offset = f.int("index_skip_topk_offset", default=2)
    return tuple("full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(layers))


@register
class DeepseekV32(Deepseek):
    """deepseek_v32, glm_moe_dsa: MLA + DeepSeek Sparse Attention + DeepSeek MoE (module docstring)."""

    name = "deepseek_v32"
    model_types = ("deepseek_v32", "glm_moe_dsa")  # type: ignore[assignment]

    def spec(self, data: dict[str, Any], name: str = "") -> DeepseekSpec:
        model_type = data["model_type"]
        full = {**DEFAULTS[model_type], **{k: v for k, v in data.items() if v is not None or k == "q_lora_rank"}}
        f = Fields(full, model_type)
        layers = f.int("num_hidden_layers")
        dense = min(f.int("first_k_dense_replace", minimum=0), layers)
        mlp = f.layer_types(layers, allowed=("dense", "sparse"), name="mlp_layer_types") or (
            ("dense",) * dense + ("sparse",) * (layers - dense))
        rope = f.int("qk_rope_head_dim", default=64)
        index_dim = f.int("index_head_dim", minimum=1)
        if index_dim < rope:
            raise ConfigError(f"{model_type} config: index_head_dim ({index_dim}) must be at least qk_rope_head_dim "
                              f"({rope}): the indexer rotates the first qk_rope_head_dim dims of its heads")
        indexers = _indexer_types(f, full, layers) if model_type == "glm_moe_dsa" else ("full",) * layers
        if indexers[0] == "shared":
            raise ConfigError(f"{model_type} config: layer 0's indexer type is 'shared', but a shared layer reuses "
                              "the previous layer's top-k (indexer_types / index_topk_pattern must start with full)")
        base = super().spec({**full, "model_type": "deepseek_v3", "first_k_dense_replace": 0,
                             "rope_interleave": True}, name)
        if not base.q_lora_rank:
            raise ConfigError(f"{model_type} config field 'q_lora_rank' must be a positive int: the indexer "
                              "reads the query latent (transformers has no q_proj path for this model)")
        notes = (*base.notes, "sparse attention as transformers computes it: the indexer's top-k only masks the "
                 "scores; eager attention computes every head over all P+S keys (a DSA kernel such as FlashMLA "
                 f"sparse attends to min({f.int('index_topk')}, P+S) keys per query)")
        fields = {**base.model_dump(exclude={"layers", "notes"}), "model_type": model_type, "family": self.name}
        return DsaSpec(
            **fields, notes=notes, dense_layers=tuple(i for i, t in enumerate(mlp) if t == "dense"),
            index_topk=f.int("index_topk", minimum=1), index_head_dim=index_dim,
            index_n_heads=f.int("index_n_heads", minimum=1),
            indexer_rope="rotate_half" if model_type == "deepseek_v32" else "interleave",
            shared_indexer_layers=tuple(i for i, t in enumerate(indexers) if t == "shared"),
        )

    # --- graph ------------------------------------------------------------------------------------
    def layer_key(self, spec: ArchSpec, index: int, layer: LayerSpec) -> Hashable:
        assert isinstance(spec, DsaSpec)
        return (layer, index not in spec.shared_indexer_layers)

    def keyed_layer_parts(self, spec: ArchSpec, key: Any) -> list[Part]:
        layer, indexer = key
        parts = self.layer_parts(spec, layer)
        if not indexer:
            return parts
        assert isinstance(spec, DsaSpec)
        at = next(i for i, p in enumerate(parts) if p.suffix == ".self_attn:scores")  # before the attention math
        return parts[:at] + lightning_indexer(
            ".self_attn", hidden=spec.hidden_size, q_lora_rank=spec.q_lora_rank, heads=spec.index_n_heads,
            head_dim=spec.index_head_dim, rope_dim=spec.qk_rope_head_dim, topk=spec.index_topk,
            rope=spec.indexer_rope) + parts[at:]

    # --- validation -------------------------------------------------------------------------------
    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        model_type = data["model_type"]
        full = {**DEFAULTS[model_type], **data}
        out = super().tiny({**full, "model_type": "deepseek_v3"})
        out.pop("mlp_layer_types", None)
        types = full.get("mlp_layer_types")
        if isinstance(types, list):
            out["mlp_layer_types"] = list(types[:3])
        if int(full.get("n_group") or 1) == 1:
            out["n_group"], out["topk_group"] = 1, 1
        # 3 indexer heads of 16 dims (8 rotated), top 4 keys: binds at the test shapes past 4 keys
        out.update(model_type=model_type, index_n_heads=3, index_head_dim=16, index_topk=4)
        for key in ("indexer_types", "index_topk_pattern"):
            if isinstance(full.get(key), (list, str)):
                out[key] = full[key][:3]
        return out
