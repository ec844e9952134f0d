"""The GLM-4-MoE-Lite family (GLM-4.7-Flash): DeepSeek-V3 exactly (MLA, sigmoid group-limited routing, a
shared expert), with the dense / MoE layer pattern given per layer and its own defaults."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..spec import ArchSpec, LayerSpec
from . import register
from .deepseek import Deepseek, DeepseekSpec
from .fields import Fields

# Glm4MoeLiteConfig defaults (transformers 5.23; GLM-4.7-Flash's dims) where DeepseekV3Config's differ
DEFAULTS: dict[str, Any] = {
    "vocab_size": 154880, "hidden_size": 2048, "intermediate_size": 10240, "moe_intermediate_size": 1536,
    "num_hidden_layers": 47, "num_attention_heads": 20, "num_key_value_heads": 20, "n_shared_experts": 1,
    "n_routed_experts": 64, "kv_lora_rank": 512, "q_lora_rank": 768, "qk_rope_head_dim": 64, "v_head_dim": 256,
    "qk_nope_head_dim": 192, "n_group": 1, "topk_group": 1, "num_experts_per_tok": 4, "norm_topk_prob": True,
}


class Glm4MoeLiteSpec(DeepseekSpec):
    dense_layers: tuple[int, ...] = Field(default=())  # ``mlp_layer_types`` == "dense"

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        moe = super().derive_layers()[-1].ffn  # the MoE FFN (first_k_dense_replace is 0 here)
        dense = frozenset(self.dense_layers)
        return tuple(layer if i in dense else layer.model_copy(update={"ffn": moe})
                     for i, layer in enumerate(ArchSpec.derive_layers(self)))


@register
class Glm4MoeLite(Deepseek):
    """glm4_moe_lite. Quirks (transformers Glm4MoeLiteConfig / modeling_glm4_moe_lite): the attention, router,
    experts and shared expert are DeepSeek-V3's line for line (see families/deepseek.py: MLA with a low-rank q,
    the latent cache, interleaved RoPE with ``rope_interleave``, sigmoid + correction bias + group-limited
    top-k, * ``routed_scaling_factor``). Differences: ``mlp_layer_types`` (dense / sparse per layer; default
    the first layer dense) replaces ``first_k_dense_replace``; the defaults are GLM-4.7-Flash's.
    """

    name = "glm4_moe_lite"
    model_types = ("glm4_moe_lite",)  # type: ignore[assignment]  # Deepseek's is inferred as a 2-tuple

    def spec(self, data: dict[str, Any], name: str = "") -> DeepseekSpec:
        full = {**DEFAULTS, **{k: v for k, v in data.items() if v is not None or k == "q_lora_rank"}}
        f = Fields(full, "glm4_moe_lite")
        layers = f.int("num_hidden_layers")
        types = f.layer_types(layers, allowed=("dense", "sparse"), name="mlp_layer_types") or (
            ("dense",) + ("sparse",) * (layers - 1))
        base = super().spec({**full, "model_type": "deepseek_v3", "first_k_dense_replace": 0}, name)
        fields = {**base.model_dump(exclude={"layers"}), "model_type": "glm4_moe_lite", "family": self.name}
        return Glm4MoeLiteSpec(**fields, dense_layers=tuple(i for i, t in enumerate(types) if t == "dense"))

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        full = {**DEFAULTS, **data}
        out = super().tiny({**full, "model_type": "deepseek_v3"})
        out.pop("first_k_dense_replace", None)
        types = full.get("mlp_layer_types")
        out["mlp_layer_types"] = list(types[:3]) if isinstance(types, list) else ["dense", "sparse", "sparse"]
        if int(full.get("n_group") or 1) == 1:
            out["n_group"], out["topk_group"] = 1, 1
        return {**out, "model_type": "glm4_moe_lite"}
