"""The Llama 4 family: llama4_text, and the multimodal llama4 through its ``text_config`` (Scout, Maverick).

What transformers 5.23 computes, op by op:

- layers are chunked (``attention_chunk_size``) or full per ``layer_types``; by default a layer is chunked
  where it uses rotary (``no_rope_layers[i] == 1``) and full where it is NoPE (every
  ``no_rope_layer_interval``-th layer, default 4). A chunked layer's cache keeps the last chunk - 1 tokens
  (transformers' sliding-window cache layer), its scores cover those plus the new tokens and the chunked mask
  hides the other chunks (``graph.attention_variants``). The base model builds both masks on every forward.
- rotary as complex products (``torch.polar`` tables; ``view_as_complex(x) * freqs_cis``), only on layers
  with ``no_rope_layers[i]``; there, with ``use_qk_norm``, one weightless L2 norm (``self_attn.qk_norm``) runs
  on q and on k after the rotation. NoPE layers with ``attn_temperature_tuning`` scale q by
  ``log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1``.
- ``feed_forward`` is a MoE block on ``moe_layers`` (default every ``interleave_moe_layer_step``-th layer)
  and a gated MLP of ``intermediate_size_mlp`` elsewhere. The router is a linear, a top-k of the logits and
  a sigmoid over all experts' scores (-inf, hence 0, for the others). transformers runs every expert on every
  token, each token pre-scaled by its score (E / top_k times a routed kernel's expert compute), sums the E
  outputs and adds the shared expert (a gated MLP of ``intermediate_size``).
Missing fields take Llama4TextConfig's defaults (the trimmed Scout copy drops no_rope_layers, moe_layers and
the temperature fields).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field

from .. import ops
from ..errors import ConfigError
from ..facts import TensorClass, Weight
from ..formula import Formula, S
from ..graph import NodeKind
from ..graph import attention_variants as av
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN, MLP
from ..metrics import ACTIVE_PARAMS
from ..ops import Counts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, tiny_dims

DEFAULTS = {"vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
            "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
            "num_experts_per_tok": 1, "num_local_experts": 16, "attention_chunk_size": 8192}
CHUNKED: Final = "chunked_attention"


class Llama4Spec(ArchSpec):
    qk_l2_norm: bool = True  # use_qk_norm: the L2 norm of q and k on rotary layers
    temperature_tuning: bool = True  # attn_temperature_tuning on NoPE layers
    attention_chunk_size: int = Field(gt=0)  # the chunked mask's chunk (built even with no chunked layer)


@register
class Llama4(DecoderTemplate):
    name = "llama4"
    model_types = ("llama4", "llama4_text")

    def spec(self, data: dict[str, Any], name: str = "") -> Llama4Spec:
        notes: list[str] = []
        data = self._text(data, notes)
        filled = sorted(k for k in DEFAULTS if k not in data)
        if filled:
            notes.append("llama4_text: fields absent from the config take Llama4TextConfig's defaults: "
                         + ", ".join(f"{k}={DEFAULTS[k]}" for k in filled))
        f = Fields({**DEFAULTS, **data}, "llama4_text")
        common = decoder_fields(f, self.name, name)
        n = common["num_layers"]
        if f.raw("attention_chunk_size") is None:
            raise ConfigError("llama4_text config field 'attention_chunk_size' must be an integer >= 1, got null: "
                              "transformers builds the chunked mask on every forward")
        chunk = f.int("attention_chunk_size")
        rope = f.raw("no_rope_layers") or [int((i + 1) % f.int("no_rope_layer_interval", default=4) != 0)
                                           for i in range(n)]
        if not isinstance(rope, list) or len(rope) < n or any(r not in (0, 1) for r in rope):
            raise ConfigError(f"llama4_text config field 'no_rope_layers' must list at least {n} entries of 1 "
                              "(rotary) / 0 (NoPE)")
        types = f.layer_types(n, ("full_attention", CHUNKED)) or tuple(
            CHUNKED if rope[i] else "full_attention" for i in range(n))
        step = f.int("interleave_moe_layer_step", default=1)
        moe_list = f.raw("moe_layers", default=list(range(step - 1, n, step)))
        if not isinstance(moe_list, list) or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n
                                                 for i in moe_list):
            raise ConfigError(f"llama4_text config field 'moe_layers' must list layer indices in [0, {n})")
        moe = set(moe_list)
        inter = common["intermediate_size"]
        sparse = FFN(kind="moe", intermediate=inter, experts=f.int("num_local_experts"),
                     top_k=f.int("num_experts_per_tok"), shared_intermediate=inter)
        dense = FFN(kind="gated", intermediate=f.int("intermediate_size_mlp"))
        layers = tuple(LayerSpec(mixer=Mixer(kind=CHUNKED, chunk=chunk, rope=bool(rope[i])) if types[i] == CHUNKED
                                 else Mixer(rope=bool(rope[i])), ffn=sparse if i in moe else dense) for i in range(n))
        bias = f.bool("attention_bias", default=False)
        return Llama4Spec(**common, qkv_bias=bias, o_bias=bias, layers=layers, notes=tuple(notes),
                          qk_l2_norm=f.bool("use_qk_norm", default=True),
                          temperature_tuning=f.bool("attn_temperature_tuning", default=True),
                          attention_chunk_size=chunk)

    @staticmethod
    def _text(data: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """The language model's config: the ``text_config`` of a multimodal llama4 config."""
        if data.get("model_type") != "llama4":
            return data
        text = data.get("text_config") or {}  # Llama4Config builds a default Llama4TextConfig
        if not isinstance(text, dict):
            raise ConfigError("llama4 config field 'text_config' must be an object")
        notes.append("multimodal 'llama4' config: profiling its language model (text_config, as Llama4ForCausalLM) "
                     "only; the vision tower and projector are not counted")
        return {**text, "model_type": "llama4_text"}

    # --- graph ------------------------------------------------------------------------------------
    def keys(self, spec: ArchSpec, layer: LayerSpec) -> Formula:
        return av.keys_chunked(layer.mixer.chunk) if layer.mixer.chunk else blk.keys_full()

    def cached(self, spec: ArchSpec, layer: LayerSpec) -> Formula:
        return av.cached_chunked(layer.mixer.chunk) if layer.mixer.chunk else blk.cached_full()

    def mask_counts(self, spec: ArchSpec) -> Counts:
        """Both masks on every forward, each sized by the first layer of its kind (else layer 0)."""
        assert isinstance(spec, Llama4Spec)
        full = next((layer for layer in spec.layers if not layer.mixer.chunk), spec.layers[0])
        chunked = next((layer for layer in spec.layers if layer.mixer.chunk), spec.layers[0])
        return (blk.position_ids() + blk.causal_mask(self.keys(spec, full))
                + av.chunked_causal_mask(self.keys(spec, chunked), spec.attention_chunk_size))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        # freqs = positions * inv_freq; polar(1, freqs); * attention_scaling (complex times real): S * D/2 each
        half = S * (spec.head_dim // 2)
        table = ops.elementwise("mul", half) + ops.polar(half) + ops.complex_mul(half, complex_factor=False)
        return [p for p in super().head_of_model_parts(spec) if p.kind != NodeKind.ROTARY] + [
            Part(f"{self.base}.rotary_emb", f"{self.base}.rotary_emb", NodeKind.ROTARY, table)]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, Llama4Spec)
        H, KV, D, t, a = spec.num_heads, spec.num_kv_heads, spec.head_dim, blk.TOKENS, ".self_attn"
        out: list[Part] = []
        for part in super().attention_parts(spec, layer):
            if part.suffix != f"{a}:rope":
                out.append(part)
            elif layer.mixer.rope:  # one complex product per (q or k head, pair), then the L2 norm of q and k
                out.append(Part(part.suffix, a, NodeKind.ROPE, ops.complex_mul(t * (H + KV) * (D // 2)), ATTN))
                if spec.qk_l2_norm:
                    norm = ops.rms_norm(t * H, D, weight=False) + ops.rms_norm(t * KV, D, weight=False)
                    out.append(Part(f"{a}.qk_norm", f"{a}.qk_norm", NodeKind.NORM, norm, ATTN))
            elif spec.temperature_tuning:
                # positions = arange(S) + past, + 1, / floor_scale, floor, log1p, * attn_scale, + 1; q * scale
                scale = (ops.elementwise("add", 2 * S) + ops.elementwise("div", S) + av.floor(S) + av.log1p(S)
                         + ops.elementwise("mul", S) + ops.elementwise("add", S) + ops.elementwise("mul", t * H * D))
                out.append(Part(f"{a}:temperature", a, NodeKind.ELEMENTWISE, scale, ATTN))
        return out

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return self._mlp(spec, ".feed_forward", layer.ffn.intermediate)

    def _mlp(self, spec: ArchSpec, m: str, inter: int) -> list[Part]:
        """Llama4TextMLP: down(activation_fn(gate(x)) * up(x))."""
        h, t = spec.hidden_size, blk.TOKENS
        return [
            Part(f"{m}.gate_proj", f"{m}.gate_proj", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            Part(f"{m}.activation_fn", f"{m}.activation_fn", NodeKind.ACTIVATION,
                 blk.activation(spec.activation, t * inter), MLP),
            Part(f"{m}.up_proj", f"{m}.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            Part(f"{m}:gate_mul", m, NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
            Part(f"{m}.down_proj", f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, t, E, k, inter = spec.hidden_size, blk.TOKENS, layer.ffn.experts, layer.ffn.top_k, layer.ffn.intermediate
        router = blk.linear(t, h, E, False) + ops.topk(t, E, k) + ops.elementwise("sigmoid", t * E)
        # every token to every expert: (E, T, h) @ (E, h, 2I); up * act(gate); (E, T, I) @ (E, I, h)
        experts = (ops.matmul(t, 2 * inter, h, batch=E) + ops.elementwise("mul", E * t * inter)
                   + ops.matmul(t, h, inter, batch=E))
        experts = blk.with_params(experts, E * 3 * h * inter)
        experts[ACTIVE_PARAMS] = Formula.const(k * 3 * h * inter)
        weight = Weight("experts", (E, 3 * h * inter), TensorClass.EXPERTS, pairs=E * t)  # every expert is read
        # inputs * their scores (E*T*h); the E outputs summed per token; + the shared expert's output
        routing = ops.elementwise("mul", E * t * h) + ops.reduce_sum(t * h, E) + ops.elementwise("add", t * h)
        m = ".feed_forward"
        return [
            Part(f"{m}.router", f"{m}.router", NodeKind.ROUTER, router, MLP),
            Part(f"{m}.experts", f"{m}.experts", NodeKind.EXPERTS, experts.with_facts(weights=(weight,)), MLP),
            Part(f"{m}.experts.act_fn", f"{m}.experts.act_fn", NodeKind.ACTIVATION,
                 blk.activation(spec.activation, E * t * inter), MLP),
            *self._mlp(spec, f"{m}.shared_expert", layer.ffn.shared_intermediate),
            Part(f"{m}:routing", m, NodeKind.ELEMENTWISE, routing, MLP),
        ]

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """llama4 validates as the text-only Llama4ForCausalLM built from its text_config."""
        return self._text(dict(data), [])

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("model_type") == "llama4":
            return {**data, "text_config": self.tiny(self._text(data, []))}
        out = tiny_dims(data, layers=4, intermediate_size_mlp=80, num_local_experts=4, attention_chunk_size=4,
                        num_experts_per_tok=min(2, data.get("num_experts_per_tok") or 1))
        if isinstance(data.get("moe_layers"), list):
            out["moe_layers"] = [i for i in data["moe_layers"] if isinstance(i, int) and i < out["num_hidden_layers"]]
        return out
