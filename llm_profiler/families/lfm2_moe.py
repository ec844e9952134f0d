"""The LFM2-MoE family (Liquid LFM2-8B-A1B): LFM2's short-conv and attention layers, MoE feed-forwards after the
first ``num_dense_layers``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import ConfigError
from ..graph.blocks import Part
from ..graph.routers import RoutedMoESpec, Router, routed_moe_parts
from ..spec import FFN, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .lfm2 import Lfm2, Lfm2Spec
from .template import renamed


class Lfm2MoeSpec(Lfm2Spec, RoutedMoESpec):
    pass


@register
class Lfm2Moe(Lfm2):
    """lfm2_moe. What Lfm2MoeConfig / modeling_lfm2_moe change from lfm2:

    - ``layer_types`` is required ("full_attention" / "conv"; no ``full_attn_idxs``); the dense MLP is
      ``intermediate_size`` wide as given (no ``block_auto_adjust_ff_dim``);
    - layers from ``num_dense_layers`` on run ``Lfm2MoeSparseMoeBlock`` at ``feed_forward``: the router ``gate``
      (sigmoid of the logits, + the ``expert_bias`` buffer for the choice when ``use_expert_bias``, top
      ``num_experts_per_tok``, weights gathered from the unbiased scores, divided by (sum + 1e-6) when
      ``norm_topk_prob``, times ``routed_scaling_factor`` always) and ``num_experts`` SwiGLU experts of
      ``moe_intermediate_size`` (batched_mm; their SiLU is ``F.silu`` in the experts' forward, no module);
      no shared expert;
    - the rotary table is ``model.pos_emb`` (LFM2's module is ``rotary_emb``); the norm eps is ``norm_eps``.
    """

    name = "lfm2_moe"
    model_types = ("lfm2_moe",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "lfm2_moe")
        layers = f.int("num_hidden_layers")
        if f.layer_types(layers, ("full_attention", "conv")) is None:
            raise ConfigError("lfm2_moe config needs 'layer_types' (one of full_attention / conv per layer): "
                              "transformers reads it for every layer")
        base = super().spec({**data, "block_auto_adjust_ff_dim": False, "full_attn_idxs": None}, name)
        dense = min(f.int("num_dense_layers", default=2, minimum=0), layers)
        experts, top_k = f.int("num_experts", default=32), f.int("num_experts_per_tok", default=4)
        moe_inter = f.int("moe_intermediate_size", default=1792)
        moe = FFN(kind="moe", intermediate=moe_inter, experts=experts, top_k=top_k)
        specs = tuple(layer if i < dense else layer.model_copy(update={"ffn": moe})
                      for i, layer in enumerate(base.layers))
        norm = f.bool("norm_topk_prob", default=True)
        fields = {k: v for k, v in base.model_dump().items() if k != "layers"}
        return Lfm2MoeSpec(**{**fields, "model_type": "lfm2_moe", "family": self.name}, layers=specs,
                           num_experts=experts, experts_per_token=top_k, moe_intermediate_size=moe_inter,
                           norm_topk_prob=norm, dense_layers=tuple(range(dense)),
                           router=Router(scoring="sigmoid", correction_bias=f.bool("use_expert_bias", default=True),
                                         normalize=norm, norm_eps=True, scaling=True))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        return renamed(super().head_of_model_parts(spec), {f"{self.base}.rotary_emb": f"{self.base}.pos_emb"})

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        parts = super().layer_parts(spec, layer)
        if not layer.moe:
            return parts
        assert isinstance(spec, RoutedMoESpec)
        ffn = next(i for i, p in enumerate(parts) if p.suffix.startswith(".feed_forward"))
        moe = routed_moe_parts(spec, block=".feed_forward", shared_name=None)
        # the experts' act_fn is F.silu, a function: its ops run in the experts module's own forward
        experts, act = (next(p for p in moe if p.suffix == name)
                        for name in (".feed_forward.experts", ".feed_forward.experts.act_fn"))
        merged = replace(experts, counts=experts.counts + act.counts)
        return [*parts[:ffn], *(merged if p is experts else p for p in moe if p is not act)]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = super().tiny(data)
        out.update(num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"], num_dense_layers=1,
                   num_experts=8, num_experts_per_tok=2, moe_intermediate_size=24)
        return out
