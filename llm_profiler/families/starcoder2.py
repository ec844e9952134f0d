"""The StarCoder2 family: a Llama-like decoder with LayerNorm (with bias), biased projections and a plain
(non-gated) c_fc -> act -> c_proj MLP."""

from __future__ import annotations

from typing import Any

from ..graph.blocks import Part
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, every_layer_window, plain_mlp


@register
class Starcoder2(DecoderTemplate):
    """starcoder2. Quirks, all from transformers' Starcoder2Config / modeling_starcoder2:

    - nn.LayerNorm (weight and bias) for the two layer norms and the final ``model.norm`` (``norm_epsilon``).
    - ``use_bias`` (default true) on q, k, v, o, c_fc and c_proj.
    - MLP: c_fc -> ``hidden_act`` (gelu_pytorch_tanh) -> c_proj, no gate.
    - ``num_key_value_heads`` defaults to 2; ``partial_rotary_factor`` is not read (the whole head rotates).
    - ``sliding_window`` (null = none) applies to every layer (mask and cache).
    - the lm_head is tied to the embedding unless ``tie_word_embeddings`` is false (default true).
    """

    name = "starcoder2"
    model_types = ("starcoder2",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "starcoder2")
        common = decoder_fields(f, self.name, name, activation_default="gelu_pytorch_tanh", tie_default=True,
                                kv_default=2)
        bias = f.bool("use_bias", default=True)
        return ArchSpec(
            **{**common, "rotary_dim": common["head_dim"]},
            **every_layer_window(f, common["num_layers"]),
            norm="layernorm", gated_mlp=False, qkv_bias=bias, o_bias=bias, mlp_bias=bias,
        )

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".mlp.c_fc", ".mlp.act", ".mlp.c_proj")
