"""The Phi-3 family: phi3 (Phi-3 / Phi-3.5 / Phi-4 text models), a Llama with fused qkv_proj and gate_up_proj."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN, MLP
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .phi import rope_parameters, rotary_dim
from .template import DecoderTemplate, decoder_fields, every_layer_window, part, tiny_dims


class Phi3Spec(ArchSpec):
    rope_type: str = "default"  # "longrope" adds the per-forward frequency choice in rotary_emb


@register
class Phi3(DecoderTemplate):
    """phi3. Quirks, all from transformers' Phi3Config / modeling_phi3:

    - fused ``qkv_proj`` (heads + 2 kv_heads) * head_dim wide and ``gate_up_proj`` (2 * intermediate), no
      biases; the MLP computes up * act(gate) after a chunk (a view).
    - ``sliding_window`` (null = none; phi-3-mini-4k: 2047) applies to every layer (mask and cache).
    - ``partial_rotary_factor`` (default 1; Phi-4-mini 0.75) rotates the first dims only.
    - RoPE scaling (``rope_scaling`` / ``rope_parameters``: longrope, the legacy su / yarn) changes no count
      of the layers; longrope's per-forward choice between the short and long frequencies is counted in
      ``model.rotary_emb``.
    """

    name = "phi3"
    model_types = ("phi3",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "phi3")
        common = decoder_fields(f, self.name, name)
        return Phi3Spec(**{**common, "rotary_dim": rotary_dim(f, common["head_dim"], 1.0)},
                        **every_layer_window(f, common["num_layers"]), rope_type=_rope_type(f))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        parts = super().head_of_model_parts(spec)
        if isinstance(spec, Phi3Spec) and spec.rope_type == "longrope":
            parts.append(part(f"{self.base}.rotary_emb:longrope", NodeKind.ROTARY, longrope_update(spec.rotary_dim)))
        return parts

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        H, KV, D, t = spec.num_heads, spec.num_kv_heads, spec.head_dim, blk.TOKENS
        a = ".self_attn"
        qkv = part(f"{a}.qkv_proj", NodeKind.LINEAR, blk.linear(t, spec.hidden_size, (H + 2 * KV) * D, False), ATTN)
        rest = [p for p in super().attention_parts(spec, layer)
                if p.suffix not in (f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj")]
        return [qkv, *rest]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, inter, t = spec.hidden_size, spec.intermediate_size, blk.TOKENS
        m = ".mlp"
        return [
            part(f"{m}.gate_up_proj", NodeKind.LINEAR, blk.linear(t, h, 2 * inter, False), MLP),
            part(f"{m}.activation_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
            part(f"{m}:gate_mul", NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
            part(f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data)
        # longrope's short / long factor lists hold one entry per rotary frequency: resize them
        f = Fields(out, "phi3")
        half = rotary_dim(f, f.attention_heads(64)[2], 1.0) // 2
        for key in ("rope_parameters", "rope_scaling"):
            rope = out.get(key)
            if isinstance(rope, dict):
                out[key] = {k: v[:1] * half if k in ("short_factor", "long_factor") and isinstance(v, list) else v
                            for k, v in rope.items()}
        return out


def _rope_type(f: Fields) -> str:
    rope = rope_parameters(f)
    kind = rope.get("rope_type", rope.get("type", "default"))
    return "longrope" if kind in ("longrope", "su", "yarn") else str(kind)


def longrope_update(rotary: int) -> Counts:
    """transformers' longrope_frequency_update, every forward (modeling_rope_utils.dynamic_rope_update):
    seq_len = max(position_ids) + 1: S-1 CMP and 1 ADD; seq_len > original_max: 1 CMP;
    where(that, long_inv_freq, inv_freq): rotary/2 elements (a select); the copy into the buffer is a move."""
    return (ops.reduce_max(1, blk.S) + ops.elementwise("add", 1) + ops.elementwise("cmp", 1)
            + ops.elementwise("select", rotary // 2))
