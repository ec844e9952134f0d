"""The EXAONE-MoE family (LG AI K-EXAONE): EXAONE-4 attention (sliding-window layers with RoPE, global layers
without) and DeepSeek-V3 routing with a shared expert."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph.blocks import Part
from ..graph.node import NodeKind
from ..graph.routers import RoutedMoESpec, Router
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from ._moe_style import RoutedMoEStyle
from .fields import Fields
from .template import decoder_fields, tiny_dims


class ExaoneMoeSpec(RoutedMoESpec):
    nope_global: bool = True  # full-attention layers rotate nothing (when a sliding window exists)

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        layers = super().derive_layers()
        if not self.nope_global:
            return layers
        return tuple(layer if layer.sliding else layer.model_copy(update={"mixer": layer.mixer.model_copy(
            update={"rope": False})}) for layer in layers)


@register
class ExaoneMoe(RoutedMoEStyle):
    """exaone_moe. Quirks (transformers ExaoneMoeConfig / modeling_exaone_moe):

    - per-head q_norm / k_norm (before RoPE); no biases; head_dim explicit, else hidden / heads.
    - ``layer_types``, else every ``sliding_window_pattern``-th layer (default 4: layers 3, 7, ...) is
      global and the others slide over ``sliding_window`` (default 4096). With a window, only the sliding
      layers apply RoPE (the global ones are NoPE); the rotary tables are built once either way.
    - ``mlp_layer_types`` (dense / sparse), else the first ``first_k_dense_replace`` (default 1) layers dense
      (``intermediate_size``); sparse layers: ``num_experts`` experts of ``moe_intermediate_size`` plus
      ``num_shared_experts`` shared ones as one MLP.
    - the router is DeepSeek-V3's (sigmoid, + correction bias, group-limited by the sum of each group's
      top-2, / (sum + 1e-20) with ``norm_topk_prob``, * ``routed_scaling_factor``).
    """

    name = "exaone_moe"
    model_types = ("exaone_moe",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "exaone_moe")
        common = decoder_fields(f, self.name, name)
        layers = common["num_layers"]
        window = f.int("sliding_window", default=4096 if "sliding_window" not in data else None, minimum=2)
        layer_types = f.layer_types(layers)
        if layer_types is None:
            pattern = f.raw("sliding_window_pattern", default=4)
            if window is None or isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
                raise ConfigError("exaone_moe config needs 'layer_types', or a 'sliding_window' with an integer "
                                  f"'sliding_window_pattern' >= 1 (got {pattern!r})")
            layer_types = tuple(SLIDING_ATTENTION if (i + 1) % pattern else FULL_ATTENTION for i in range(layers))
        mlp_types = f.layer_types(layers, allowed=("dense", "sparse"), name="mlp_layer_types") or tuple(
            "dense" if i < f.int("first_k_dense_replace", default=1, minimum=0) else "sparse" for i in range(layers))
        experts, groups = f.int("num_experts", default=64), f.int("n_group", default=1)
        f.divisible(experts, groups, "num_experts must be a multiple of n_group")
        norm, inter = f.bool("norm_topk_prob", default=True), f.int("moe_intermediate_size", default=1024)
        sliding = SLIDING_ATTENTION in layer_types
        return ExaoneMoeSpec(
            **common, qk_norm=True, sliding_window=window if sliding else None, layer_types=layer_types if sliding
            else (), nope_global=window is not None, num_experts=experts,
            experts_per_token=f.int("num_experts_per_tok", default=8), moe_intermediate_size=inter,
            norm_topk_prob=norm, shared_expert_intermediate_size=inter * f.int("num_shared_experts", default=1,
                                                                               minimum=0),
            dense_layers=tuple(i for i, t in enumerate(mlp_types) if t == "dense"),
            router=Router(scoring="sigmoid", correction_bias=True, grouped=True, n_group=groups,
                          topk_group=f.int("topk_group", default=1), normalize=norm, norm_eps=True, scaling=True),
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        parts = super().attention_parts(spec, layer)
        return parts if layer.mixer.rope else [p for p in parts if p.kind != NodeKind.ROPE]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, layers=4, moe_intermediate_size=24, num_experts=8, num_experts_per_tok=2,
                        first_k_dense_replace=1, sliding_window_pattern=2)
        if data.get("sliding_window", 4096) is not None:
            out["sliding_window"] = 4
        for key in ("layer_types", "mlp_layer_types"):
            if isinstance(data.get(key), list):
                out[key] = data[key][:4]
        if int(data.get("n_group") or 1) > 1:
            out["n_group"], out["topk_group"] = 4, min(2, int(data.get("topk_group") or 1))
        return out
