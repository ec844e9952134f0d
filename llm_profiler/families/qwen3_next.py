"""Qwen3-Next and Qwen3.5: gated DeltaNet linear attention interleaved with gated full attention.

qwen3_next (Qwen3-Next-80B-A3B), qwen3_5_text / qwen3_5_moe_text, and the multimodal qwen3_5 / qwen3_5_moe
through their ``text_config`` (Qwen3.5-27B, Qwen3.5-397B-A17B). The DeltaNet mixer is
``graph/linear_attention.py``; this module holds the config quirks.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..checks import layer_set
from ..errors import ConfigError
from ..formula import B, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.linear_attention import LINEAR_ATTENTION, DeltaNet, DeltaNetMoESpec, DeltaNetSpec, deltanet_parts
from ..graph.node import ATTN
from ..ops import Counts
from ..spec import FULL_ATTENTION, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .mixtral import SparseMoEStyle
from .template import decoder_fields, part, tiny_dims

_MULTIMODAL = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}


@register
class Qwen3Next(SparseMoEStyle):
    """qwen3_next, qwen3_5(_text), qwen3_5_moe(_text). Quirks (transformers 5.23 config and modeling classes):

    - ``layer_types`` (``linear_attention`` / ``full_attention``), else every ``full_attention_interval``-th
      layer (default 4) is full attention, the others gated DeltaNet (``linear_*`` dims, conv kernel
      ``linear_conv_kernel_dim``); the cache holds a conv and a recurrent state per DeltaNet layer and keys /
      values per attention layer.
    - attention: q_proj is twice as wide (query and an output gate per head); per-head q/k norms; partial
      rotary (``partial_rotary_factor``, top level or in ``rope_parameters``; default 0.25);
      the output is multiplied by sigmoid(gate) before o_proj; head_dim defaults to 256.
    - every RMSNorm but the DeltaNet's gated one is zero-centred: x * rsqrt(...) * (1 + weight).
    - qwen3_next: MoE as qwen2_moe (``decoder_sparse_step``, ``mlp_only_layers``, ``norm_topk_prob``, a shared
      expert of ``shared_expert_intermediate_size`` with a sigmoid gate); qwen3_5_moe: every layer MoE with the
      top-k always renormalised; qwen3_5: dense MLPs. qwen3_next projects DeltaNet inputs with in_proj_qkvz /
      in_proj_ba, qwen3_5 with in_proj_qkv / _z / _b / _a.
    - qwen3_5 rotary (mrope): the positions are expanded to 3 x B rows before the frequencies, so the table
      costs 3*B*S*rotary_dim/2 per op.
    """

    name = "qwen3_next"
    model_types = ("qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        notes: list[str] = []
        data = self._text(data, notes)
        model_type = data["model_type"]
        f = Fields(data, model_type)
        layers = f.int("num_hidden_layers")
        moe_type = model_type != "qwen3_5_text"
        common = decoder_fields(f, self.name, name, head_dim_default=256,
                                intermediate_default=f.int("moe_intermediate_size") if model_type == "qwen3_5_moe_text" else None)
        rope = f.raw("rope_parameters") or {}
        factor = rope.get("partial_rotary_factor", data.get("partial_rotary_factor", 0.25))  # the classes' default
        if not 0 < factor <= 1:
            raise ConfigError(f"{model_type} config field 'partial_rotary_factor' must be in (0, 1], got {factor}")
        interval = f.int("full_attention_interval", default=4)
        types = f.layer_types(layers, allowed=(FULL_ATTENTION, LINEAR_ATTENTION)) or tuple(
            LINEAR_ATTENTION if (i + 1) % interval else FULL_ATTENTION for i in range(layers))
        delta = DeltaNet(key_heads=f.int("linear_num_key_heads"), value_heads=f.int("linear_num_value_heads"),
                         key_dim=f.int("linear_key_head_dim"), value_dim=f.int("linear_value_head_dim"),
                         kernel=f.int("linear_conv_kernel_dim"), fused_projections=model_type == "qwen3_next")
        f.divisible(delta.value_heads, delta.key_heads, "linear_num_value_heads must be a multiple of linear_num_key_heads")
        bias = f.bool("attention_bias", default=False)
        fields = {**common, "rotary_dim": int(common["head_dim"] * factor), "qkv_bias": bias, "o_bias": bias,
                  "qk_norm": True, "layer_types": types, "delta_net": delta, "notes": tuple(notes)}
        if not moe_type:
            return DeltaNetSpec(**fields)
        experts = f.int("num_experts", minimum=0)
        dense: tuple[int, ...] = ()
        if model_type == "qwen3_next":
            step = f.int("decoder_sparse_step", default=1)
            mlp_only = layer_set(f.raw("mlp_only_layers", default=[]), "mlp_only_layers")
            dense = tuple(i for i in range(layers) if experts == 0 or i in mlp_only or (i + 1) % step)
        return DeltaNetMoESpec(
            **fields, num_experts=experts, experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=f.int("moe_intermediate_size"), dense_layers=dense,
            norm_topk_prob=f.bool("norm_topk_prob", default=True) if model_type == "qwen3_next" else True,
            shared_expert_intermediate_size=f.int("shared_expert_intermediate_size"), shared_expert_gate=True)

    @staticmethod
    def _text(data: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """The language model's config: the ``text_config`` of a multimodal qwen3_5 / qwen3_5_moe config."""
        text_type = _MULTIMODAL.get(data.get("model_type", ""))
        if text_type is None:
            return data
        text = data.get("text_config")
        if not isinstance(text, dict) or not text:
            raise ConfigError(f"{data['model_type']} config field 'text_config' must be an object holding the "
                              f"language model's fields ({text_type}: hidden_size, num_hidden_layers, ...), got {text!r}")
        notes.append(f"multimodal '{data['model_type']}' config: profiling its language model (text_config, as "
                     f"{text_type}) only; the vision tower and projector are not counted")
        tie = {"tie_word_embeddings": data["tie_word_embeddings"]} if "tie_word_embeddings" in data else {}
        return {**tie, **text, "model_type": text_type}

    # --- graph ------------------------------------------------------------------------------------
    def norm(self, spec: ArchSpec, rows: Any, n: int) -> Counts:
        return blk.rms_norm(rows, n, plus_one=True)  # x * rsqrt(mean(x^2) + eps) * (1 + weight)

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        parts = super().head_of_model_parts(spec)
        if spec.model_type == "qwen3_next":
            return parts
        half = 3 * B * S * (spec.rotary_dim // 2)  # mrope: freqs over the 3 x B expanded position rows
        table = (ops.elementwise("mul", half) + ops.elementwise("cos", half) + ops.elementwise("mul", half)
                 + ops.elementwise("sin", half) + ops.elementwise("mul", half))
        return [p if p.kind != NodeKind.ROTARY else Part(p.suffix, p.module_suffix, p.kind, table) for p in parts]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        if layer.mixer.kind == "linear_attention":
            assert isinstance(spec, (DeltaNetSpec, DeltaNetMoESpec))
            return deltanet_parts(spec.delta_net, spec.hidden_size, spec.activation)
        width, t = spec.num_heads * spec.head_dim, blk.TOKENS
        parts = []
        for p in super().attention_parts(spec, layer):
            if p.suffix == ".self_attn.q_proj":  # query and gate
                p = part(p.suffix, NodeKind.LINEAR, blk.linear(t, spec.hidden_size, 2 * width, spec.qkv_bias), ATTN)
            elif p.suffix == ".self_attn.o_proj":
                gate = ops.elementwise("sigmoid", t * width) + ops.elementwise("mul", t * width)
                parts.append(part(".self_attn:output_gate", NodeKind.ELEMENTWISE, gate, ATTN))
            parts.append(p)
        return parts

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """qwen3_5 / qwen3_5_moe validate as the text-only causal LM built from their text_config."""
        return self._text(dict(data), [])

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("model_type") in _MULTIMODAL:
            return {**data, "text_config": self.tiny(self._text(data, []))}
        # 4 layers: 3 DeltaNet and 1 full with the default interval; q / k heads repeated to 2x value heads
        moe = {} if data.get("model_type") == "qwen3_5_text" else {
            "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 40}
        out = tiny_dims({k: v for k, v in data.items() if k != "mlp_only_layers"}, layers=4, **moe,
                        linear_num_key_heads=4 if data.get("linear_num_key_heads") == data.get("linear_num_value_heads") else 2,
                        linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=12)
        if data.get("mlp_only_layers"):
            out["mlp_only_layers"] = [0]
        return out
