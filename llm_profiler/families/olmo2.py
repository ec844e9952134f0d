"""The OLMo-2 family: Llama with the norms moved after the blocks and q / k normalised over the whole
projection."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, part


@register
class Olmo2(DecoderTemplate):
    """olmo2. Quirks, all from transformers' Olmo2Config / modeling_olmo2:

    - no input norm: ``post_attention_layernorm`` normalises the attention output and
      ``post_feedforward_layernorm`` the MLP output, each before its residual addition.
    - q_norm / k_norm are RMSNorms over the full q (heads*head_dim) and k (kv_heads*head_dim) projections,
      applied before the split into heads (Qwen3 normalises per head instead).
    - ``attention_bias`` on q, k, v and o; gated SiLU MLP without bias; untied lm_head by default.
    """

    name = "olmo2"
    model_types = ("olmo2",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "olmo2")
        common = decoder_fields(f, self.name, name)
        bias = f.bool("attention_bias", default=False)
        return ArchSpec(**{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias, qk_norm=True)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        # Llama's q_norm / k_norm work per head (rows = tokens*heads, width head_dim); OLMo-2's see one row
        # per token over the whole projection: same multiplications, fewer reductions, more weights.
        widths = {".self_attn.q_norm": spec.num_heads * spec.head_dim,
                  ".self_attn.k_norm": spec.num_kv_heads * spec.head_dim}
        return [replace(p, counts=self.norm(spec, blk.TOKENS, widths[p.suffix])) if p.suffix in widths else p
                for p in super().attention_parts(spec, layer)]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, t = spec.hidden_size, blk.TOKENS
        return [
            *self.attention_parts(spec, layer),
            part(".post_attention_layernorm", NodeKind.NORM, self.norm(spec, t, h)),
            part(":residual", NodeKind.RESIDUAL, blk.residual(h)),
            *self.ffn_parts(spec, layer),
            part(".post_feedforward_layernorm", NodeKind.NORM, self.norm(spec, t, h)),
        ]
