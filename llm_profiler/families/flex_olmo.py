"""The FlexOlmo family (allenai FlexOlmo-7x7B): OLMoE's experts and router in OLMo-2's post-norm layer."""

from __future__ import annotations

from typing import Any

from ..graph.blocks import Part
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import post_norm_layer
from .olmoe import Olmoe


@register
class FlexOlmo(Olmoe):
    """flex_olmo. What FlexOlmoConfig / modeling_flex_olmo change from olmoe:

    - the layer is OLMo-2's: no input norm; ``post_attention_layernorm`` and ``post_feedforward_layernorm``
      normalise the attention and MoE outputs before their residual additions;
    - the attention is Olmo2Attention's (whole-projection q / k norms, ``attention_bias`` on q/k/v/o): no
      ``clip_qkv``;
    - the experts (``num_experts`` of ``intermediate_size``, top ``num_experts_per_tok`` of a softmax,
      ``norm_topk_prob``) and the causal mask are OLMoE's.
    """

    name = "flex_olmo"
    model_types = ("flex_olmo",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        return super().spec({**data, "clip_qkv": None}, name)  # FlexOlmoConfig has no clip_qkv

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return post_norm_layer(self, spec, layer)
