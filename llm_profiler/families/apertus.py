"""The Apertus family (Swiss AI Apertus-8B / -70B): Llama attention with per-head q / k norms, a non-gated
MLP with the xIELU activation, its norms named after the block they precede."""

from __future__ import annotations

from typing import Any

from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import MLP, NodeKind
from ..graph.xielu import xielu
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, part, plain_mlp, renamed, tiny_dims

XIELU = "xielu"


@register
class Apertus(DecoderTemplate):
    """apertus. Quirks (transformers ApertusConfig / modeling_apertus):

    - ``hidden_act`` defaults to ``xielu`` (graph/xielu.py: two learned scalars per layer, alpha_p and
      alpha_n, that ``mlp.act_fn`` holds as parameters); any other name is a transformers ACT2FN activation.
    - MLP: ``down_proj(act_fn(up_proj(x)))``, not gated, no bias; attention: q / k / v / o with
      ``attention_bias``, q_norm / k_norm RMSNorms per head (always on), head_dim hidden / heads unless given.
    - the two norms are ``attention_layernorm`` and ``feedforward_layernorm``; no sliding window; untied
      lm_head by default; the llama3 rope scaling of the defaults changes no count.
    - config fields the checkpoints carry for other runtimes (``qk_norm``, ``post_norm``, ``mlp_bias``) are not
      read by transformers' Apertus and not here.
    """

    name = "apertus"
    model_types = ("apertus",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "apertus")
        act = f.str("hidden_act", default=XIELU)
        # xIELU is not an ACT2FN function (graph.activations); the common reader checks any other name
        common = decoder_fields(Fields({k: v for k, v in data.items() if k != "hidden_act" or act != XIELU}, "apertus"),
                                self.name, name, activation_default="silu")
        bias = f.bool("attention_bias", default=False)
        return ArchSpec(**{**common, "rotary_dim": common["head_dim"], "activation": act}, qkv_bias=bias,
                        o_bias=bias, qk_norm=True)

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        if spec.activation != XIELU:
            return plain_mlp(spec, ".mlp.up_proj", ".mlp.act_fn", ".mlp.down_proj")
        h, inter, t = spec.hidden_size, spec.intermediate_size, blk.TOKENS
        return [
            part(".mlp.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            part(".mlp.act_fn", NodeKind.ACTIVATION, xielu(t * inter), MLP),
            part(".mlp.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return renamed(super().layer_parts(spec, layer), {".input_layernorm": ".attention_layernorm",
                                                          ".post_attention_layernorm": ".feedforward_layernorm"})

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data)
