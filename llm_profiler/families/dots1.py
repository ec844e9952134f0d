"""The dots.llm1 family (rednote-hilab dots1): Qwen3-style attention with DeepSeek-V3 routing."""

from __future__ import annotations

from typing import Any

from ..graph.routers import RoutedMoESpec, Router
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec
from . import register
from ._moe_style import RoutedMoEStyle
from .fields import Fields
from .template import decoder_fields, tiny_dims


@register
class Dots1(RoutedMoEStyle):
    """dots1. Quirks (transformers Dots1Config / modeling_dots1):

    - per-head q_norm / k_norm (RMSNorm over head_dim) before RoPE; ``attention_bias`` on q, k, v and o;
      head_dim explicit, else hidden / heads; full rotary.
    - sliding windows per ``layer_types``, else on layers >= ``max_window_layers`` (default 62) when
      ``sliding_window`` (default 4096) is set: none in dots.llm1 (62 layers).
    - layers < ``first_k_dense_replace`` (default 0; 1 in dots.llm1) run a dense MLP of ``intermediate_size``,
      the others ``n_routed_experts`` experts of ``moe_intermediate_size`` plus ``n_shared_experts`` shared ones.
    - the router is GLM-4-MoE's / DeepSeek-V3's: sigmoid, + correction bias, group-limited by the sum of each
      group's top-2 (``n_group``, ``topk_group``; computed with one group too), weights from the unbiased
      scores, / (sum + 1e-20) with ``norm_topk_prob`` (default false), * ``routed_scaling_factor``.
    """

    name = "dots1"
    model_types = ("dots1",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "dots1")
        common = decoder_fields(f, self.name, name)
        layers = common["num_layers"]
        experts, groups = f.int("n_routed_experts"), f.int("n_group", default=1)
        f.divisible(experts, groups, "n_routed_experts must be a multiple of n_group")
        window: int | None = f.int("sliding_window", default=4096 if "sliding_window" not in data else None, minimum=2)
        first = f.int("max_window_layers", default=62, minimum=0)
        layer_types = f.layer_types(layers) or tuple(
            SLIDING_ATTENTION if window is not None and i >= first else FULL_ATTENTION for i in range(layers))
        if SLIDING_ATTENTION not in layer_types:
            window, layer_types = None, ()
        norm, bias = f.bool("norm_topk_prob", default=False), f.bool("attention_bias", default=False)
        return RoutedMoESpec(
            **common, qkv_bias=bias, o_bias=bias, qk_norm=True, sliding_window=window, layer_types=layer_types,
            num_experts=experts, experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=f.int("moe_intermediate_size"), norm_topk_prob=norm,
            shared_expert_intermediate_size=f.int("moe_intermediate_size") * f.int("n_shared_experts", minimum=0),
            dense_layers=tuple(range(min(f.int("first_k_dense_replace", default=0, minimum=0), layers))),
            router=Router(scoring="sigmoid", correction_bias=True, grouped=True, n_group=groups,
                          topk_group=f.int("topk_group", default=1), normalize=norm, norm_eps=True, scaling=True),
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, layers=3, moe_intermediate_size=24, n_routed_experts=8,
                        num_experts_per_tok=min(2, int(data.get("num_experts_per_tok") or 2)),
                        n_shared_experts=min(2, int(data.get("n_shared_experts") or 0)),
                        first_k_dense_replace=min(1, int(data.get("first_k_dense_replace") or 0)))
        if int(data.get("n_group") or 1) > 1:
            out["n_group"], out["topk_group"] = 4, min(2, int(data.get("topk_group") or 1))
        if out.get("sliding_window") and not isinstance(data.get("layer_types"), list):
            out["max_window_layers"] = min(int(data.get("max_window_layers", 62)), 1)
        return out
