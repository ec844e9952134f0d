"""The gpt_oss family (OpenAI gpt-oss-20b / gpt-oss-120b), op by op as transformers 5.23 runs it:

- attention: q/k/v/o with biases (``attention_bias``, default true), learned attention sinks (one logit per
  head joined to the softmax: ``graph.attention_variants.sinks``), layers alternating sliding-window
  (``sliding_window``, 128) and full attention per ``layer_types`` (default: sliding on even layers). The
  base model builds both masks on every forward, whatever the layer types.
- rotary: yarn (the type changes no count). The tables are over head_dim / 2 (no ``cat(freqs, freqs)``),
  and q / k are rotated by halves: x1*cos - x2*sin, x2*cos + x1*sin (4 MULT, 2 ADD per pair).
- MoE on every layer: ``mlp.router`` is a biased linear to the ``num_local_experts`` experts, a top-k of the
  logits and a softmax over the k kept; ``mlp.experts`` run as batched_mm (each (token, expert) pair: a bmm
  with the pair's expert, its bias added, the clamped SwiGLU ``(clamp(up) + 1) * clamp(gate) *
  sigmoid(alpha * clamp(gate))`` on interleaved gate / up columns, the biased down bmm, times the routing
  weight, summed over the k experts). ``hidden_act`` is not used.
- the checkpoints store the experts in MXFP4 (``quantization_config``); the counts are dtype-free, the
  reference model is built without it.
Missing fields take GptOssConfig's defaults, which are gpt-oss-120b's.
"""

from __future__ import annotations

from typing import Any

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
from ..spec import FFN, SLIDING_ATTENTION, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, tiny_dims

DEFAULTS = {"num_hidden_layers": 36, "num_local_experts": 128, "vocab_size": 201088, "hidden_size": 2880,
            "intermediate_size": 2880, "head_dim": 64, "num_attention_heads": 64, "num_key_value_heads": 8,
            "sliding_window": 128, "num_experts_per_tok": 4, "attention_bias": True}


@register
class GptOss(DecoderTemplate):
    name = "gpt_oss"
    model_types = ("gpt_oss",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        filled = sorted(k for k in DEFAULTS if k not in data)
        f = Fields({**DEFAULTS, **data}, "gpt_oss")
        common = decoder_fields(f, self.name, name)
        layers = common["num_layers"]
        if f.raw("sliding_window") is None:  # create_sliding_window_causal_mask raises on every forward
            raise ConfigError("gpt_oss config field 'sliding_window' must be an integer >= 2, got null: "
                              "transformers builds the sliding-window mask on every forward")
        window = f.int("sliding_window", minimum=2)
        types = f.layer_types(layers) or tuple(SLIDING_ATTENTION if i % 2 == 0 else "full_attention"
                                               for i in range(layers))
        ffn = FFN(kind="moe", intermediate=common["intermediate_size"], experts=f.int("num_local_experts"),
                  top_k=f.int("num_experts_per_tok"))
        mixers = {t: Mixer(kind=SLIDING_ATTENTION if t == SLIDING_ATTENTION else "attention", sinks=True,
                           window=window if t == SLIDING_ATTENTION else None) for t in set(types)}
        bias = f.bool("attention_bias")
        notes = ("gpt_oss: fields absent from the config take GptOssConfig's defaults: "
                 + ", ".join(f"{k}={DEFAULTS[k]}" for k in filled),) if filled else ()
        return ArchSpec(**{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias,
                        sliding_window=window, layer_types=types, notes=notes,
                        layers=tuple(LayerSpec(mixer=mixers[t], ffn=ffn) for t in types))

    # --- graph ------------------------------------------------------------------------------------
    def mask_counts(self, spec: ArchSpec) -> Counts:
        """Both masks on every forward, each sized by the first layer of its kind (else layer 0)."""
        window = spec.sliding_window
        assert window is not None
        full = next((layer for layer in spec.layers if layer.mixer.window is None), spec.layers[0])
        sliding = next((layer for layer in spec.layers if layer.mixer.window), spec.layers[0])
        return (blk.position_ids() + blk.causal_mask(self.keys(spec, full))
                + blk.causal_mask(self.keys(spec, sliding), window))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        # freqs = positions * inv_freq; cos, sin, each * attention_scaling: all over S * head_dim / 2
        n = S * (spec.rotary_dim // 2)
        table = ops.total(ops.elementwise(op, n) for op in ("mul", "cos", "mul", "sin", "mul"))
        return [p for p in super().head_of_model_parts(spec) if p.kind != NodeKind.ROTARY] + [
            Part(f"{self.base}.rotary_emb", f"{self.base}.rotary_emb", NodeKind.ROTARY, table)]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        H, a, keys = spec.num_heads, ".self_attn", self.keys(spec, layer)
        pairs = blk.TOKENS * (spec.num_heads + spec.num_kv_heads) * (spec.rotary_dim // 2)
        rope = ops.elementwise("mul", 4 * pairs) + ops.elementwise("sub", pairs) + ops.elementwise("add", pairs)
        out: list[Part] = []
        for part in super().attention_parts(spec, layer):
            if part.suffix == f"{a}:rope":
                part = Part(part.suffix, a, NodeKind.ROPE, rope, ATTN)
            elif part.suffix == f"{a}:softmax":
                out.append(Part(f"{a}:sinks", a, NodeKind.ATTN_SOFTMAX, av.sinks(H, keys), ATTN, label="sinks"))
                part = Part(part.suffix, a, NodeKind.ATTN_SOFTMAX, av.sink_softmax(H, keys), ATTN)
            out.append(part)
        return out

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, t, E, k, inter = (spec.hidden_size, blk.TOKENS, layer.ffn.experts, layer.ffn.top_k,
                             layer.ffn.intermediate)
        pairs = t * k
        router = blk.linear(t, h, E, bias=True) + ops.topk(t, E, k) + ops.softmax(t, k)
        # per pair: (1 x h) @ (h x 2I) + bias; ... (1 x I) @ (I x h) + bias; * routing weight; sum over k
        experts = (ops.matmul(1, 2 * inter, h, batch=pairs) + ops.elementwise("add", pairs * 2 * inter)
                   + ops.matmul(1, h, inter, batch=pairs) + ops.elementwise("add", pairs * h)
                   + ops.elementwise("mul", pairs * h) + ops.reduce_sum(t * h, k))
        one = 3 * h * inter + 2 * inter + h  # gate_up (h x 2I) and its bias, down (I x h) and its bias
        experts = blk.with_params(experts, E * one)
        experts[ACTIVE_PARAMS] = Formula.const(k * one)
        weight = Weight("experts", (E, one), TensorClass.EXPERTS, pairs=pairs)
        m = ".mlp"
        return [
            Part(f"{m}.router", f"{m}.router", NodeKind.ROUTER, router, MLP),
            Part(f"{m}.experts", f"{m}.experts", NodeKind.EXPERTS, experts.with_facts(weights=(weight,)), MLP),
            Part(f"{m}.experts:swiglu", f"{m}.experts", NodeKind.ACTIVATION, av.clamped_swiglu(pairs * inter), MLP),
        ]

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k != "quantization_config"}  # MXFP4 storage: not the reference

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(self.hf_config(data), num_local_experts=4, num_experts_per_tok=2)
