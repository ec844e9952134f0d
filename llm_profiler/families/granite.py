"""The Granite family (IBM Granite 3.x dense): Llama with four scalar multipliers, each one elementwise op."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from ._granite_swa import SlidingSinks, swa_fields, with_sinks
from .fields import Fields
from .template import decoder_fields, tiny_dims


@register
class Granite(DenseTemplate):
    """granite. Quirks, all from transformers' GraniteConfig / modeling_granite (each multiplier is applied
    even when it is 1.0, so each costs its op whatever its value):

    - ``embedding_multiplier``: inputs_embeds * m in the base model's forward: B*S*hidden MULT.
    - ``attention_multiplier`` replaces head_dim**-0.5 as the score scaling (the same one MULT per score).
    - ``residual_multiplier``: residual + out * m after attention and after the MLP: 2 * B*S*hidden MULT.
    - ``logits_scaling``: logits / s in the CausalLM's forward: B*S*vocab DIV.
    - ``attention_bias`` on q/k/v/o, ``mlp_bias`` on the MLP projections; head_dim as given, else hidden / heads.
    """

    name = "granite"
    model_types = ("granite",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "granite")
        common = decoder_fields(f, self.name, name)
        bias = f.bool("attention_bias", default=False)
        for field in ("embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling"):
            f.float(field, default=1.0)  # type-checked: a string would fail in transformers
        return DenseSpec(**{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias,
                         mlp_bias=f.bool("mlp_bias", default=False))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        scale = ops.elementwise("mul", blk.TOKENS * spec.hidden_size)  # inputs_embeds * embedding_multiplier
        parts = super().head_of_model_parts(spec)
        return [parts[0], Part(f"{self.base}:embedding_multiplier", self.base, NodeKind.ELEMENTWISE, scale),
                *parts[1:]]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        scale = ops.elementwise("mul", 2 * blk.TOKENS * spec.hidden_size)  # out * residual_multiplier, twice
        return [*super().layer_parts(spec, layer), Part(":residual_multiplier", "", NodeKind.ELEMENTWISE, scale)]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        scale = ops.elementwise("div", blk.TOKENS * spec.vocab_size)  # logits / logits_scaling
        return [*super().tail_parts(spec), Part(":logits_scaling", "", NodeKind.LM_HEAD, scale)]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data)


@register
class GraniteSWA(SlidingSinks, Granite):
    """granite_swa: granite with sliding-window layers, attention sinks and per-layer RoPE bases
    (``_granite_swa``); GraniteSWAConfig's defaults differ from granite's (2560 wide, 24 layers, 20 heads,
    4 KV heads, tied embeddings), and the config is read with them."""

    name = "granite_swa"
    model_types = ("granite_swa",)
    defaults = {"vocab_size": 100352, "hidden_size": 2560, "intermediate_size": 8192, "num_hidden_layers": 24,
                "num_attention_heads": 20, "num_key_value_heads": 4, "tie_word_embeddings": True}

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        full = {**self.defaults, **data}
        base = super().spec(full, name)
        extra = swa_fields(Fields(full, "granite_swa"), base.num_layers)
        return with_sinks(DenseSpec(**{**dict(base), **extra, "model_type": "granite_swa", "layers": ()}), extra["nope_layers"])
