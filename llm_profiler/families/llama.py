"""The Llama family: llama, mistral, qwen2, qwen3 (decoder-only, pre-RMSNorm, RoPE, gated SiLU MLP).

The graph comes from the shared ``families.template.DecoderTemplate``; this module holds only the
config quirks of these four model types.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph.activations import read_activation
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate


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
        hidden = f.int("hidden_size")
        heads, kv_heads, head_dim = f.attention_heads(hidden, head_dim_default=128 if model_type == "qwen3" else None)
        layers = f.int("num_hidden_layers")

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
            given = f.raw("layer_types")
            if given is not None:
                layer_types = self._layer_types(given, layers, model_type)
            else:
                first = f.int("max_window_layers", default=28, minimum=0)
                layer_types = tuple(SLIDING_ATTENTION if i >= first else FULL_ATTENTION for i in range(layers))
            if SLIDING_ATTENTION not in layer_types:
                window, layer_types = None, ()

        return ArchSpec(
            model_type=model_type,
            family=self.name,
            name=name,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=f.int("intermediate_size"),
            vocab_size=f.int("vocab_size"),
            activation=read_activation(f, "hidden_act", default="silu"),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=f.bool("mlp_bias", default=False) if model_type == "llama" else False,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=False),
            rotary_dim=head_dim,
            sliding_window=window,
            layer_types=layer_types,
            qk_norm=model_type == "qwen3",
        )

    @staticmethod
    def _layer_types(given: Any, layers: int, model_type: str) -> tuple[str, ...]:
        if not isinstance(given, list) or len(given) != layers or any(
            t not in (FULL_ATTENTION, SLIDING_ATTENTION) for t in given
        ):
            raise ConfigError(
                f"{model_type} config field 'layer_types' must list {layers} entries of "
                f"'{FULL_ATTENTION}' / '{SLIDING_ATTENTION}'"
            )
        return tuple(given)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        heads = data.get("num_attention_heads", 4)
        kv = data.get("num_key_value_heads") or heads
        tiny_kv = 4 if kv == heads else (1 if kv == 1 else 2)
        out = {**data, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": tiny_kv, "vocab_size": 128}
        if data.get("head_dim") is not None:
            out["head_dim"] = 24  # keep an explicit head_dim that differs from hidden/heads (64/4 = 16)
        if data.get("sliding_window") is not None:
            out["sliding_window"] = 4
        if data.get("use_sliding_window"):
            out["max_window_layers"] = 1
        out.pop("layer_types", None)
        return out
