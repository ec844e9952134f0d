"""The SmolLM3 family: Llama with NoPE layers (every fourth layer by default) and optional sliding windows."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import decoder_fields, tiny_dims


@register
class SmolLM3(DenseTemplate):
    """smollm3. Quirks, all from transformers' SmolLM3Config / modeling_smollm3:

    - ``no_rope_layers``: one 0/1 flag per layer, 1 = rotate q / k (default: int((i + 1) %
      ``no_rope_layer_interval`` != 0), interval 4: every fourth layer is NoPE); the rotary table is computed
      once whatever the flags.
    - sliding windows only with ``use_sliding_window`` and a ``sliding_window``; by default the NoPE layers slide
      (``layer_types`` overrides); the sliding mask is built when a layer type is sliding.
    - ``attention_bias`` on q/k/v/o, ``mlp_bias``; tied embeddings by default.
    """

    name = "smollm3"
    model_types = ("smollm3",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "smollm3")
        common = decoder_fields(f, self.name, name, tie_default=True)
        layers = common["num_layers"]
        rope = self._rope_flags(f, layers)
        use_window = f.bool("use_sliding_window", default=False)
        window = f.int("sliding_window", default=None, minimum=2)
        types = f.layer_types(layers) or tuple(
            SLIDING_ATTENTION if use_window and window is not None and not r else FULL_ATTENTION for r in rope)
        if SLIDING_ATTENTION in types and not (use_window and window is not None):
            raise ConfigError("smollm3 config: 'layer_types' has sliding layers but 'use_sliding_window' is false or "
                              "'sliding_window' is null; transformers would mask them but not cache them as sliding")
        bias = f.bool("attention_bias", default=False)
        sliding = SLIDING_ATTENTION in types
        return DenseSpec(**{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias,
                         mlp_bias=f.bool("mlp_bias", default=False), sliding_window=window if sliding else None,
                         layer_types=types if sliding else (), nope_layers=tuple(i for i, r in enumerate(rope) if not r))

    @staticmethod
    def _rope_flags(f: Fields, layers: int) -> tuple[int, ...]:
        given = f.raw("no_rope_layers")
        if given is None:
            interval = f.int("no_rope_layer_interval", default=4)
            return tuple(int((i + 1) % interval != 0) for i in range(layers))
        if not isinstance(given, list) or len(given) != layers or any(v not in (0, 1) for v in given):
            raise ConfigError(f"smollm3 config field 'no_rope_layers' must list {layers} entries of 0 (NoPE) or 1 (RoPE)")
        return tuple(int(v) for v in given)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, layers=4)
        for key in ("no_rope_layers", "layer_types"):
            if isinstance(data.get(key), list):
                out[key] = list(data[key][:4])
        return out
