"""The Llama family: llama, mistral, qwen2, qwen3 (decoder-only, pre-RMSNorm, RoPE, gated SiLU MLP).

The graph comes from the shared ``families.template.DecoderTemplate``; this module holds only the
config quirks of these four model types.
"""

from __future__ import annotations

from typing import Any

from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, tiny_dims


@register
class Llama(DecoderTemplate):
    """llama, mistral, qwen2, qwen3. Quirks, all from the transformers config classes:

    - head_dim: explicit when given; else hidden/heads (llama, mistral, qwen2) but 128 for qwen3.
    - biases: llama/qwen3 ``attention_bias`` on q, k, v and o; qwen2 always has q/k/v bias, never o;
      llama's ``mlp_bias`` on the three MLP projections.
    - qwen3 normalises q and k per head (q_norm / k_norm over head_dim).
    - sliding windows: mistral's ``sliding_window`` (null = none) applies to every layer; qwen2/qwen3 use
      one only with ``use_sliding_window``, on layers >= ``max_window_layers`` (or per ``layer_types``).
    - RoPE scaling types (linear, dynamic at short context, yarn, llama3) change no count here.
    """

    name = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        model_type = data["model_type"]
        f = Fields(data, model_type)
        common = decoder_fields(f, self.name, name, head_dim_default=128 if model_type == "qwen3" else None)
        layers = common["num_layers"]

        qkv_bias = o_bias = False
        if model_type == "qwen2":
            qkv_bias = True
        elif model_type in ("llama", "qwen3"):
            qkv_bias = o_bias = f.bool("attention_bias", default=False)

        window: int | None = None
        layer_types: tuple[str, ...] = ()
        if model_type == "mistral":
            window = f.int("sliding_window", default=None, minimum=2) if "sliding_window" in data else 4096
            if window is not None:
                layer_types = (SLIDING_ATTENTION,) * layers
        elif model_type in ("qwen2", "qwen3") and f.bool("use_sliding_window", default=False):
            window = f.int("sliding_window", default=4096, minimum=2)
            first = f.int("max_window_layers", default=28, minimum=0)
            layer_types = f.layer_types(layers) or tuple(
                SLIDING_ATTENTION if i >= first else FULL_ATTENTION for i in range(layers))
            if SLIDING_ATTENTION not in layer_types:
                window, layer_types = None, ()

        return ArchSpec(
            **{**common, "rotary_dim": common["head_dim"]},  # these four ignore partial_rotary_factor
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=f.bool("mlp_bias", default=False) if model_type == "llama" else False,
            sliding_window=window,
            layer_types=layer_types,
            qk_norm=model_type == "qwen3",
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims({k: v for k, v in data.items() if k != "layer_types"})
        if data.get("use_sliding_window"):
            out["max_window_layers"] = 1
        return out
