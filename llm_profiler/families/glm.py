"""The GLM families: glm (GLM-4-9B, GLM-4-9B-chat) and glm4 (GLM-4-0414, GLM-Z1, GLM-4.1 text): Llama with
partial rotary over interleaved pairs, a fused gate_up_proj, q/k/v biases; glm4 adds two post-norms."""

from __future__ import annotations

from typing import Any

from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import MLP
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate, norm_part
from .fields import Fields
from .phi import rotary_dim
from .template import decoder_fields, tiny_dims


@register
class Glm(DenseTemplate):
    """glm, glm4. Quirks, all from transformers' GlmConfig / Glm4Config and their modeling code:

    - head_dim defaults to 128; ``attention_bias`` (default true) on q, k, v, never on o_proj.
    - partial rotary: int(head_dim * ``partial_rotary_factor``) dims (default 0.5); apply_rotary_pos_emb
      takes the first half of cos / sin and repeat_interleaves it (a copy), then rotates interleaved pairs:
      the same counts as Llama's rotation over those dims.
    - MLP: fused ``gate_up_proj`` (2 x intermediate), up * act(gate), ``down_proj``; no biases.
    - glm4: ``post_self_attn_layernorm`` on the attention output and ``post_mlp_layernorm`` on the MLP output,
      each before its residual addition (four RMSNorms per layer).
    """

    name = "glm"
    model_types = ("glm", "glm4")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, data["model_type"])
        common = decoder_fields(f, self.name, name, head_dim_default=128)
        return DenseSpec(**{**common, "rotary_dim": rotary_dim(f, common["head_dim"], 0.5)},
                         qkv_bias=f.bool("attention_bias", default=True))

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, inter, t, m = spec.hidden_size, spec.intermediate_size, blk.TOKENS, ".mlp"
        return [
            Part(f"{m}.gate_up_proj", f"{m}.gate_up_proj", NodeKind.LINEAR, blk.linear(t, h, 2 * inter, False), MLP),
            Part(f"{m}.activation_fn", f"{m}.activation_fn", NodeKind.ACTIVATION,
                 blk.activation(spec.activation, t * inter), MLP),
            Part(f"{m}:gate_mul", m, NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
            Part(f"{m}.down_proj", f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        if spec.model_type != "glm4":
            return super().layer_parts(spec, layer)
        return [
            norm_part(spec, self, ".input_layernorm"),
            *self.attention_parts(spec, layer),
            norm_part(spec, self, ".post_self_attn_layernorm"),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(spec.hidden_size)),
            norm_part(spec, self, ".post_attention_layernorm"),
            *self.ffn_parts(spec, layer),
            norm_part(spec, self, ".post_mlp_layernorm"),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data)
