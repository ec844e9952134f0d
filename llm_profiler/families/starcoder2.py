"""The StarCoder2 family: a Llama-like decoder with LayerNorm (with bias), biased projections and a plain
(non-gated) c_fc -> act -> c_proj MLP."""

from __future__ import annotations

from typing import Any

from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import MLP
from ..spec import SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate as LlamaStyle


@register
class Starcoder2(LlamaStyle):
    """starcoder2. Quirks, all from transformers' Starcoder2Config / modeling_starcoder2:

    - nn.LayerNorm (weight and bias) for the two layer norms and the final ``model.norm`` (``norm_epsilon``).
    - ``use_bias`` (default true) on q, k, v, o, c_fc and c_proj.
    - MLP: c_fc -> ``hidden_act`` (gelu_pytorch_tanh) -> c_proj, no gate.
    - ``sliding_window`` (null = none) applies to every layer (mask and cache).
    - the lm_head is tied to the embedding unless ``tie_word_embeddings`` is false (default true).
    """

    name = "starcoder2"
    model_types = ("starcoder2",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "starcoder2")
        hidden = f.int("hidden_size")
        heads, kv_heads, head_dim = f.attention_heads(hidden, kv_default=2)
        layers = f.int("num_hidden_layers")
        bias = f.bool("use_bias", default=True)
        window = f.int("sliding_window", default=None, minimum=2)
        return ArchSpec(
            model_type="starcoder2",
            family=self.name,
            name=name,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=f.int("intermediate_size"),
            vocab_size=f.int("vocab_size"),
            norm="layernorm",
            activation=read_activation(f, "hidden_act", default="gelu_pytorch_tanh"),
            gated_mlp=False,
            qkv_bias=bias,
            o_bias=bias,
            mlp_bias=bias,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            rotary_dim=head_dim,
            sliding_window=window,
            layer_types=(SLIDING_ATTENTION,) * layers if window is not None else (),
        )

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, inter, t = spec.hidden_size, spec.intermediate_size, blk.TOKENS
        m = ".mlp"
        return [
            Part(f"{m}.c_fc", f"{m}.c_fc", NodeKind.LINEAR, blk.linear(t, h, inter, spec.mlp_bias), MLP),
            Part(f"{m}.act", f"{m}.act", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
            Part(f"{m}.c_proj", f"{m}.c_proj", NodeKind.LINEAR, blk.linear(t, inter, h, spec.mlp_bias), MLP),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}
        if data.get("head_dim") is not None:
            out["head_dim"] = 24  # keep an explicit head_dim that differs from hidden/heads (64/4 = 16)
        if data.get("sliding_window") is not None:
            out["sliding_window"] = 4
        return out
