"""The GLM-4-MoE family (GLM-4.5, GLM-4.5-Air, GLM-4.6): a Llama-style decoder with DeepSeek-V3 routing."""

from __future__ import annotations

from typing import Any

from ..graph.routers import RoutedMoESpec, Router
from ..spec import ArchSpec
from . import register
from ._moe_style import RoutedMoEStyle, rotary_factor
from .fields import Fields
from .template import decoder_fields, tiny_dims


@register
class Glm4Moe(RoutedMoEStyle):
    """glm4_moe. Quirks (transformers Glm4MoeConfig / modeling_glm4_moe):

    - head_dim explicit (GLM-4.5-Air: 128 with 96 heads of a 4096 hidden), else hidden / heads;
      ``partial_rotary_factor`` defaults to 0.5: RoPE on the first half of each head.
    - ``attention_bias`` on q, k and v only (o_proj never has one); ``use_qk_norm``: per-head RMSNorm of q
      and k (off in GLM-4.5 / Air).
    - layers < ``first_k_dense_replace`` run a dense gated MLP of ``intermediate_size``; the others a MoE
      of ``n_routed_experts`` (alias num_local_experts) experts of ``moe_intermediate_size`` plus
      ``n_shared_experts`` shared ones (one MLP of moe_intermediate_size x n_shared_experts).
    - the router is DeepSeek-V3's: fp32 logits, sigmoid, + ``e_score_correction_bias`` (a buffer, no
      params), group-limited choice (``n_group`` groups by the sum of their top-2, ``topk_group`` kept:
      computed even with one group), top-k, weights gathered from the unbiased scores, divided by
      (sum + 1e-20) when ``norm_topk_prob``, times ``routed_scaling_factor`` (always multiplied).
    - ``num_nextn_predict_layers`` (MTP) adds no module to Glm4MoeForCausalLM (its weights are ignored on load).
    """

    name = "glm4_moe"
    model_types = ("glm4_moe",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, data.get("model_type") or "glm4_moe")  # solar_open reuses this spec
        common = decoder_fields(f, self.name, name)
        common["rotary_dim"] = int(common["head_dim"] * rotary_factor(f, 0.5))
        experts = f.int("n_routed_experts", "num_local_experts")
        groups = f.int("n_group", default=1)
        f.divisible(experts, groups, "n_routed_experts must be a multiple of n_group")
        norm = f.bool("norm_topk_prob", default=True)
        dense = min(f.int("first_k_dense_replace", default=1, minimum=0), common["num_layers"])
        return RoutedMoESpec(
            **common, qkv_bias=f.bool("attention_bias", default=False), qk_norm=f.bool("use_qk_norm", default=False),
            num_experts=experts, experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=f.int("moe_intermediate_size"), norm_topk_prob=norm,
            shared_expert_intermediate_size=f.int("moe_intermediate_size") * f.int("n_shared_experts", default=1,
                                                                                    minimum=0),
            dense_layers=tuple(range(dense)),
            router=Router(scoring="sigmoid", correction_bias=True, grouped=True, n_group=groups,
                          topk_group=f.int("topk_group", default=1), normalize=norm, norm_eps=True, scaling=True),
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, layers=3, moe_intermediate_size=24, n_routed_experts=8,
                        num_experts_per_tok=min(2, int(data.get("num_experts_per_tok") or 2)),
                        first_k_dense_replace=min(1, int(data.get("first_k_dense_replace", 1))))
        out.pop("num_local_experts", None)
        if int(data.get("n_group") or 1) > 1:
            out["n_group"], out["topk_group"] = 4, min(2, int(data.get("topk_group") or 1))
        return out
