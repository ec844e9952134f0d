"""The MiniMax-M2 family (MiniMax-M2, M2.1, M2.5): a GQA decoder where every layer is a sigmoid-routed MoE."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph.routers import RoutedMoESpec, Router
from ..spec import ArchSpec
from . import register
from ._moe_style import RoutedMoEStyle
from .fields import Fields
from .template import decoder_fields, tiny_dims


@register
class MiniMaxM2(RoutedMoEStyle):
    """minimax_m2. Quirks (transformers MiniMaxM2Config / modeling_minimax_m2):

    - head_dim explicit (default 128); partial RoPE through the legacy ``rotary_dim`` field (64 of 128 in
      the released checkpoints: ``partial_rotary_factor`` = rotary_dim / head_dim unless given).
    - q_norm / k_norm are always there, RMSNorms over the whole q (heads*head_dim) and k projections
      (``use_qk_norm`` / ``qk_norm_type: per_layer`` are read by no transformers code). No biases.
    - every layer is MoE: ``num_local_experts`` (alias num_experts) experts of ``intermediate_size``,
      ``num_experts_per_tok`` per token, no shared expert, no dense layer.
    - router: logits, sigmoid, + ``e_score_correction_bias`` (a buffer of the MoE block, always added;
      ``use_routing_bias`` / ``scoring_func`` are not read), top-k, weights gathered from the unbiased
      scores and always renormalised (no epsilon, no scaling factor).
    - the MTP modules of the checkpoint (``use_mtp``, ``num_mtp_modules``) are not built by transformers.
    """

    name = "minimax_m2"
    model_types = ("minimax_m2",)
    whole_qk_norm = True

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "minimax_m2")
        common = decoder_fields(f, self.name, name, head_dim_default=128)
        head_dim = common["head_dim"]
        if not f.has("partial_rotary_factor") and f.has("rotary_dim"):
            rotary = f.int("rotary_dim")
            if rotary > head_dim:
                raise ConfigError(f"minimax_m2 config field 'rotary_dim' ({rotary}) must be <= head_dim ({head_dim})")
            common["rotary_dim"] = rotary
        if f.int("shared_intermediate_size", default=0, minimum=0):
            raise ConfigError("minimax_m2 config field 'shared_intermediate_size' must be 0: transformers' "
                              "MiniMaxM2 has no shared expert")
        inter = common["intermediate_size"]
        return RoutedMoESpec(
            **common, qk_norm=True, num_experts=f.int("num_local_experts", "num_experts"),
            experts_per_token=f.int("num_experts_per_tok"), moe_intermediate_size=inter, norm_topk_prob=True,
            router=Router(scoring="sigmoid", correction_bias=True, normalize=True),
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(self.hf_config(data), head_dim=24, num_local_experts=8,
                        num_experts_per_tok=min(2, int(data.get("num_experts_per_tok") or 2)),
                        bos_token_id=None, eos_token_id=None)  # the class defaults lie outside the vocabulary
        out.pop("num_experts", None)
        if data.get("rotary_dim") is not None:  # keep the rotary share of the head
            out["rotary_dim"] = 24 * int(data["rotary_dim"]) // int(data.get("head_dim") or 128) // 2 * 2
        return out
