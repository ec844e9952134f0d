"""The HunYuan-MoE family (tencent Hunyuan-A13B): GQA with per-head q / k norms after RoPE, every layer a
softmax top-k MoE beside a shared MLP."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field

from ..errors import ConfigError
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.moe import gated_mlp_parts, shared_expert_mix
from ..graph.node import MLP, NodeKind
from ..graph.routers import RoutedMoESpec, Router, routed_moe_parts, topk_router
from ..spec import ArchSpec, LayerSpec
from . import register
from ._moe_style import RoutedMoEStyle
from .fields import Fields
from .template import decoder_fields, tiny_dims


class HunyuanMoESpec(RoutedMoESpec):
    layer_top_k: tuple[int, ...] = Field(default=())  # per-layer top-k (``moe_topk`` as a list)

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        layers = super().derive_layers()
        if not self.layer_top_k:
            return layers
        return tuple(layer.model_copy(update={"ffn": layer.ffn.model_copy(update={"top_k": k})})
                     for layer, k in zip(layers, self.layer_top_k, strict=True))


@register
class HunyuanV1Moe(RoutedMoEStyle):
    """hunyuan_v1_moe. Quirks (transformers HunYuanMoEV1Config / modeling_hunyuan_v1_moe):

    - ``head_dim`` explicit, else hidden / heads; ``attention_bias`` on q, k, v and o.
    - ``query_layernorm`` / ``key_layernorm``: per-head RMSNorms applied after RoPE.
    - every layer: ``num_experts`` (an int: the experts tensor takes no per-layer list) experts of
      ``intermediate_size``, top ``moe_topk`` per token (an int, or one per layer); the router
      ``mlp.gate`` holds its fp32 linear as ``mlp.gate.wg``, then softmax, top-k, always renormalised.
    - ``mlp.shared_mlp``: one gated MLP of ``intermediate_size`` on every token, added to the routed output.
      The checkpoint's ``moe_intermediate_size`` / ``num_shared_expert`` lists and ``use_mixed_mlp_moe`` are
      read by no transformers code (they must match what it builds: noted).
    """

    name = "hunyuan_v1_moe"
    model_types = ("hunyuan_v1_moe",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "hunyuan_v1_moe")
        common = decoder_fields(f, self.name, name)
        layers, inter = common["num_layers"], common["intermediate_size"]
        if isinstance(f.raw("num_experts"), list):
            raise ConfigError("hunyuan_v1_moe config field 'num_experts' must be one integer: transformers' "
                              "HunYuanMoEV1Experts has the same experts on every layer")
        top_k = f.raw("moe_topk", "num_experts_per_tok", default=1)
        per_layer = tuple(top_k[:layers]) if isinstance(top_k, list) else ()  # layer i reads moe_topk[i]
        if isinstance(top_k, list) and (len(per_layer) != layers or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                                          for k in per_layer)):
            raise ConfigError(f"hunyuan_v1_moe config field 'moe_topk' must be a positive integer or a list of "
                              f"at least {layers} of them (one per layer)")
        notes = tuple(f"{key} is ignored: transformers builds experts and the shared MLP of intermediate_size "
                      f"({inter}), one shared MLP per layer" for key in ("moe_intermediate_size", "num_shared_expert")
                      if f.has(key))
        bias = f.bool("attention_bias", default=False)
        return HunyuanMoESpec(
            **common, qkv_bias=bias, o_bias=bias, qk_norm=True, notes=notes,
            num_experts=f.int("num_experts", "num_local_experts", default=1),
            experts_per_token=max(per_layer) if per_layer else f.int("moe_topk", "num_experts_per_tok", default=1),
            layer_top_k=per_layer, moe_intermediate_size=inter, shared_expert_intermediate_size=inter,
            norm_topk_prob=True, router=Router(scoring="softmax", normalize=True),
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        names = {".self_attn.q_norm": ".self_attn.query_layernorm", ".self_attn.k_norm": ".self_attn.key_layernorm"}
        return [replace(p, suffix=names[p.suffix], module_suffix=names[p.suffix]) if p.suffix in names else p
                for p in super().attention_parts(spec, layer)]

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, RoutedMoESpec)
        h, E, k, t = spec.hidden_size, spec.num_experts, layer.ffn.top_k, blk.TOKENS
        routed = routed_moe_parts(spec, shared_name=None, top_k=k)
        gate = Part(".mlp.gate", ".mlp.gate", NodeKind.ROUTER, topk_router(h, E, k, spec.router, logits=False), MLP)
        return [
            *gated_mlp_parts(".mlp.shared_mlp", h, spec.shared_expert_intermediate_size, spec.activation),
            Part(".mlp.gate.wg", ".mlp.gate.wg", NodeKind.LINEAR, blk.linear(t, h, E, False), MLP),
            gate, *routed[1:],
            Part(".mlp:shared_mix", ".mlp", NodeKind.ELEMENTWISE, shared_expert_mix(h, False), MLP),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        top_k = data.get("moe_topk", 1)
        out = tiny_dims(data, intermediate_size=24, num_experts=8)
        out["moe_topk"] = [min(2, int(k)) for k in top_k[:2]] if isinstance(top_k, list) else min(2, int(top_k))
        for key in ("moe_intermediate_size", "num_shared_expert"):
            if isinstance(data.get(key), list):
                out[key] = data[key][:2]
        return out
