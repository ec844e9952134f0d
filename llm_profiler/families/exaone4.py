"""The EXAONE-4 family: post-norm layers, per-head q / k norms, sliding layers with RoPE and NoPE global layers."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph.blocks import Part
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate, post_norm_layer
from .fields import Fields
from .template import decoder_fields, tiny_dims


@register
class Exaone4(DenseTemplate):
    """exaone4. Quirks, all from transformers' Exaone4Config / modeling_exaone4:

    - OLMo-2-style layer: no input norm, ``post_attention_layernorm`` / ``post_feedforward_layernorm`` on the
      block outputs before the residual additions; q_norm / k_norm are RMSNorms per head (over head_dim).
    - ``layer_types``, else from ``sliding_window_pattern`` (an int n: every n-th layer global; a string like
      "LLLG": L local, G global, repeated); ``sliding_window`` null means no sliding layer.
    - with a sliding window set, only sliding layers rotate q / k: the global layers are NoPE (the rotary
      table is still computed once); without one, every layer rotates.
    - the full mask always, the sliding one when a layer slides; no biases; untied lm_head by default.
    """

    name = "exaone4"
    model_types = ("exaone4",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "exaone4")
        common = decoder_fields(f, self.name, name)
        layers = common["num_layers"]
        # a present null means no window (and pattern 0); an absent field takes the default 4096
        window = None if data.get("sliding_window", 0) is None else f.int("sliding_window", default=4096, minimum=2)
        types = f.layer_types(layers) or (self._pattern(f, layers) if window is not None else ())
        nope = tuple(i for i, t in enumerate(types) if t == FULL_ATTENTION) if window is not None else ()
        sliding = SLIDING_ATTENTION in types and window is not None
        return DenseSpec(
            **{**common, "rotary_dim": common["head_dim"]}, qk_norm=True,
            sliding_window=window if sliding else None, layer_types=types if sliding else (),
            nope_layers=nope,
        )

    @staticmethod
    def _pattern(f: Fields, layers: int) -> tuple[str, ...]:
        pattern = f.raw("sliding_window_pattern", default=4)
        if isinstance(pattern, str) and pattern and set(pattern) <= {"L", "G"}:
            return tuple(SLIDING_ATTENTION if pattern[i % len(pattern)] == "L" else FULL_ATTENTION
                         for i in range(layers))
        if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
            return tuple(SLIDING_ATTENTION if (i + 1) % pattern else FULL_ATTENTION for i in range(layers))
        raise ConfigError("exaone4 config field 'sliding_window_pattern' must be a positive integer or a string "
                          f"of 'L' (local) and 'G' (global), got {pattern!r}")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return post_norm_layer(self, spec, layer)

    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """transformers cannot expand a string pattern (int % str) nor a null window (% 0) itself: hand it
        the layer types."""
        out = dict(data)
        if out.get("layer_types") is None:
            f = Fields(out, "exaone4")
            layers = f.int("num_hidden_layers")
            out["layer_types"] = (list(self._pattern(f, layers)) if out.get("sliding_window", 0) is not None
                                  else [FULL_ATTENTION] * layers)
        return out

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(self.hf_config(data))
