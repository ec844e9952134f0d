"""The Gemma families: gemma, gemma2, gemma3_text, vaultgemma, and the multimodal gemma3 through its
``text_config``.

All three follow the eager transformers code (5.23) op by op:

- RMSNorm computes ``x * rsqrt(mean(x^2) + eps) * (1 + weight)`` in float32: the ``1 + weight`` is an add
  over the n weights on every call (ops.rms_norm's ``plus_one``); the float casts are no-ops in float32.
- the embedding module (``*TextScaledWordEmbedding``) multiplies its output by sqrt(hidden): one mul
  over B*S*hidden, inside ``model.embed_tokens``.
- gated MLP with gelu_pytorch_tanh; head_dim defaults to 256 (not hidden/heads); tied embeddings.
- gemma2 / gemma3: four norms per layer (post-attention, pre- and post-feedforward around the MLP); layers
  alternate sliding-window and global attention (``layer_types``, or the old pattern); the base model
  always builds both masks.
- gemma2 softcaps the attention logits (``x / c``, tanh, ``* c``) and the final logits (in the CausalLM
  root module, on the lm_head output). Gemma3's attention does not pass ``attn_logit_softcapping`` to the
  attention function, so it never applies; its final softcap applies when set (default null).
- vaultgemma (VaultGemma-1B, trained with differential privacy): gemma2's attention, masks, softcaps and
  alternating layers, with two norms per layer only: ``input_layernorm`` before the attention and
  ``pre_feedforward_layernorm`` before the MLP (VaultGemmaDecoderLayer deletes gemma2's post-norms).
- gemma3: q_norm / k_norm per head, and one rotary table per distinct layer type (local base frequency
  for sliding layers, global for full ones: one ``model.rotary_emb`` module called once per type).

Missing fields take the defaults of the transformers config classes, copied below as data (the core
package does not import transformers).
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import B, Formula, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import HF_ACTIVATIONS
from ..graph.activations import supported as supported_activations
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..ops import Counts
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, part, tiny_dims

# Defaults of GemmaConfig / Gemma2Config / VaultGemmaConfig / Gemma3TextConfig (transformers 5.23), for fields a config omits.
_COMMON = {"head_dim": 256, "tie_word_embeddings": True, "attention_bias": False}
DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma": {**_COMMON, "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
              "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
              "hidden_act": "gelu_pytorch_tanh"},
    "gemma2": {**_COMMON, "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
               "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
               "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    "vaultgemma": {**_COMMON, "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
                   "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                   "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096,
                   "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    "gemma3_text": {**_COMMON, "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                    "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                    "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256,
                    "sliding_window": 4096, "final_logit_softcapping": None, "attn_logit_softcapping": None,
                    "sliding_window_pattern": 6},
}
# Fields a user should know were filled in (the ones that change a count).
_SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "sliding_window")


class GemmaSpec(ArchSpec):
    post_norms: bool = False  # gemma2/3: norms after attention and around the MLP (4 per layer)
    pre_ffn_name: str = ".post_attention_layernorm"  # the pre-MLP norm's module (vaultgemma: pre_feedforward_...)
    attn_softcap: float | None = None  # attention logits: c * tanh(x / c)
    final_softcap: float | None = None  # final logits: c * tanh(x / c), in the root module
    query_pre_attn_scalar: float | None = None  # scaling = this ** -0.5 (one multiply either way)
    sliding_mask: bool = False  # the base model builds the sliding-window mask (gemma2/3: always)
    rope_tables: int = 1  # rotary_emb calls per forward (gemma3: one per distinct layer type)


def softcap(n: Formula) -> Counts:
    """c * tanh(x / c) over n elements: n DIV, n tanh (EXP), n MULT."""
    return ops.elementwise("div", n) + ops.elementwise("tanh", n) + ops.elementwise("mul", n)


@register
class Gemma(DecoderTemplate):
    name = "gemma"
    model_types = ("gemma", "gemma2", "gemma3_text", "gemma3", "vaultgemma")

    # --- config -----------------------------------------------------------------------------------
    def spec(self, data: dict[str, Any], name: str = "") -> GemmaSpec:
        notes: list[str] = []
        data = self._text(data, notes)
        model_type = data["model_type"]
        defaults = DEFAULTS[model_type]
        f = Fields(data, model_type)

        def get(key: str) -> Any:  # a present key wins, even null (null softcapping = none)
            return data[key] if key in data else defaults.get(key)

        filled = [f"{k}={defaults[k]}" for k in _SHAPE_FIELDS if k in defaults and data.get(k) is None]
        if filled:
            notes.append(f"{model_type}: fields absent from the config take the transformers defaults: "
                         + ", ".join(filled))
        window: int | None = None
        layer_types: tuple[str, ...] = ()
        attn_cap = final_cap = scalar = None
        if model_type == "gemma":
            # GemmaConfig turns the legacy hidden_act "gelu" into the tanh approximation it always meant
            act = f.str("hidden_act", default=defaults["hidden_act"])
            act = "gelu_pytorch_tanh" if act == "gelu" else act
        else:
            act = f.str("hidden_activation", default=defaults["hidden_activation"])  # hidden_act is unused
            if f.has("hidden_act") and data["hidden_act"] != act:
                notes.append(f"{model_type} uses hidden_activation={act!r}; hidden_act is ignored")
        if act not in HF_ACTIVATIONS:
            field = "hidden_act" if model_type == "gemma" else "hidden_activation"
            raise ConfigError(f"{model_type} config field {field!r} = {act!r} is not a supported activation; "
                              f"supported: {', '.join(supported_activations())}")
        # the common fields, absent ones at the config class defaults
        filled_in = {k: v for k, v in defaults.items() if data.get(k) is None}
        common = decoder_fields(Fields({**data, **filled_in, "hidden_act": act}, model_type), self.name, name,
                                tie_default=True)
        layers, heads = common["num_layers"], common["num_heads"]
        if model_type != "gemma":  # Gemma2Config / Gemma3TextConfig.validate_architecture
            f.divisible(common["hidden_size"], heads, "hidden_size must be a multiple of num_attention_heads")
            window = f.int("sliding_window", default=defaults["sliding_window"], minimum=2)
            # the old patterns: gemma2 (and vaultgemma) alternates (sliding first); gemma3 puts a global layer every
            # sliding_window_pattern layers (default 6: five local, one global)
            period = 2 if model_type in ("gemma2", "vaultgemma") else f.int("sliding_window_pattern", default=6)
            layer_types = f.layer_types(layers) or tuple(
                SLIDING_ATTENTION if (i + 1) % period else FULL_ATTENTION for i in range(layers))
            final_cap = self._cap(f, get("final_logit_softcapping"), "final_logit_softcapping")
            scalar = f.float("query_pre_attn_scalar", default=float(defaults["query_pre_attn_scalar"]))
            if model_type in ("gemma2", "vaultgemma"):
                attn_cap = self._cap(f, get("attn_logit_softcapping"), "attn_logit_softcapping")
            elif get("attn_logit_softcapping") is not None:
                notes.append("gemma3 ignores attn_logit_softcapping (transformers does not apply it)")
            if model_type == "gemma3_text" and f.bool("use_bidirectional_attention", default=False):
                raise ConfigError("gemma3_text with use_bidirectional_attention=true (embedding models) is "
                                  "not supported: its masks differ from the causal decoder's")
        bias = f.bool("attention_bias", default=False)
        return GemmaSpec(
            **{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias,
            sliding_window=window, layer_types=layer_types, qk_norm=model_type == "gemma3_text",
            post_norms=model_type not in ("gemma", "vaultgemma"),
            pre_ffn_name=".pre_feedforward_layernorm" if model_type == "vaultgemma" else ".post_attention_layernorm",
            attn_softcap=attn_cap, final_softcap=final_cap,
            query_pre_attn_scalar=scalar, sliding_mask=model_type != "gemma",
            rope_tables=len(set(layer_types)) if model_type == "gemma3_text" else 1, notes=tuple(notes),
        )

    @staticmethod
    def _text(data: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """The language model's config: the ``text_config`` of a multimodal gemma3 config."""
        if data.get("model_type") != "gemma3":
            return data
        text = data.get("text_config")
        if text is None:
            text = {}  # Gemma3Config builds a default Gemma3TextConfig
        if not isinstance(text, dict):
            raise ConfigError("gemma3 config field 'text_config' must be an object")
        notes.append("multimodal 'gemma3' config: profiling its language model (text_config, as "
                     "Gemma3ForCausalLM) only; the vision tower and projector are not counted")
        return {**text, "model_type": "gemma3_text"}

    @staticmethod
    def _cap(f: Fields, value: Any, key: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{f.model_type} config field {key!r} must be a positive number or null, got {value!r}")
        return float(value)

    # --- graph ------------------------------------------------------------------------------------
    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        return blk.rms_norm(rows, n, plus_one=True)

    def mask_counts(self, spec: ArchSpec) -> Counts:
        assert isinstance(spec, GemmaSpec)
        out = blk.position_ids() + blk.causal_mask(blk.keys_full())
        if spec.sliding_mask:  # gemma2/3 build both masks whatever the layer types
            w = spec.sliding_window
            assert w is not None
            # sized by the first sliding cache layer; with none (VaultGemma-1B: all full), by layer 0's full
            # cache (masking_utils.create_sliding_window_causal_mask's layer_idx)
            keys = blk.keys_sliding(w) if SLIDING_ATTENTION in spec.layer_types else blk.keys_full()
            out = out + blk.causal_mask(keys, w)
        return out

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, GemmaSpec)
        b, h = self.base, spec.hidden_size
        # lookup, then * sqrt(hidden) (GemmaTextScaledWordEmbedding.forward)
        embed = blk.embedding(spec.vocab_size, h) + ops.elementwise("mul", blk.TOKENS * h)
        return [
            part(f"{b}.embed_tokens", NodeKind.EMBEDDING, embed),
            part(f"{b}:positions", NodeKind.POSITIONS, self.mask_counts(spec)),
            part(f"{b}.rotary_emb", NodeKind.ROTARY, blk.rotary_table(spec.rotary_dim) * spec.rope_tables),
        ]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, GemmaSpec)
        parts = super().attention_parts(spec, layer)
        if spec.attn_softcap is None:
            return parts
        a = ".self_attn"
        n = B * spec.num_heads * S * self.keys(spec, layer)  # one per score
        at = next(i for i, p in enumerate(parts) if p.suffix == f"{a}:scores") + 1
        parts.insert(at, part(f"{a}:softcap", NodeKind.ATTN_SCORES, softcap(n), ATTN))
        return parts

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, GemmaSpec)
        if not spec.post_norms:
            parts = super().layer_parts(spec, layer)
            return [p if p.suffix != ".post_attention_layernorm" else self.norm_part(spec, spec.pre_ffn_name)
                    for p in parts]
        return [
            self.norm_part(spec, ".input_layernorm"),
            *self.attention_parts(spec, layer),
            self.norm_part(spec, ".post_attention_layernorm"),
            part(":residual", NodeKind.RESIDUAL, blk.residual(spec.hidden_size)),
            self.norm_part(spec, ".pre_feedforward_layernorm"),
            *self.ffn_parts(spec, layer),
            self.norm_part(spec, ".post_feedforward_layernorm"),
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, GemmaSpec)
        parts = super().tail_parts(spec)
        if spec.final_softcap is not None:  # on the logits, in the CausalLM's own forward
            parts.append(part(":final_softcap", NodeKind.LM_HEAD, softcap(blk.TOKENS * spec.vocab_size)))
        return parts

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """gemma3 validates as the text-only Gemma3ForCausalLM built from its text_config."""
        return self._text(dict(data), [])

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("model_type") == "gemma3":
            return {**data, "text_config": self.tiny(self._text(data, []))}
        spec = self.spec(data)  # the template's rule on the fields as the config class fills them in
        full = {**data, "num_attention_heads": spec.num_heads, "num_key_value_heads": spec.num_kv_heads}
        if spec.layer_types:
            full.pop("sliding_window_pattern", None)
            full.update(layer_types=list(spec.layer_types), sliding_window=spec.sliding_window)
        return tiny_dims(full, head_dim=24)  # head_dim 24 != 64/4
