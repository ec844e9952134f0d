"""Granite-4.0 hybrids (granitemoehybrid): GraniteMoeShared layers whose token mixer is a Mamba-2 layer
(``mamba``, graph/ssm.py) or attention (``self_attn``) per ``layer_types``, with the same muP multipliers."""

from __future__ import annotations

from typing import Any

from ..graph import blocks as blk
from ..graph.activations import activation_counts
from ..graph.blocks import Part
from ..graph.node import MLP, NodeKind
from ..graph.routers import RoutedMoESpec, Router
from ..graph.ssm import Mamba2, mamba2_parts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .bamba import mamba_mixer
from .fields import Fields
from .granitemoe import GraniteMoe
from .template import decoder_fields


class GraniteMoeHybridSpec(RoutedMoESpec):
    mamba: Mamba2


@register
class GraniteMoeHybrid(GraniteMoe):
    """granitemoehybrid. Quirks, from transformers' GraniteMoeHybridConfig and modeling code:

    - ``layer_types`` (alias ``layers_block_type``): ``linear_attention`` (Mamba-2, the default for every layer)
      or ``attention``; attention has rotary only with ``position_embedding_type`` "rope" (default none: NoPE),
      ``attention_multiplier`` as its scaling, ``attention_bias``;
    - Mamba-2: inner = ``mamba_expand`` x hidden, ``mamba_n_heads`` of ``mamba_d_head`` ("auto": inner /
      heads), ``mamba_n_groups``, ``mamba_d_state``, ``mamba_d_conv``, ``mamba_chunk_size``,
      ``mamba_conv_bias``, ``mamba_proj_bias`` (in and out_proj), the gated RMSNorm of n_groups groups;
    - FFN: ``num_local_experts`` > 0: the GraniteMoe block (top-k logits then softmax) plus ``shared_mlp``
      (``shared_intermediate_size``), summed; 0 experts: the shared MLP alone;
    - muP: embedding, residual (both block outputs) and logits multipliers, as granitemoe.
    """

    name = "granitemoehybrid"
    model_types = ("granitemoehybrid",)  # type: ignore[assignment]  # GraniteMoe's holds two

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "granitemoehybrid")
        common = decoder_fields(f, self.name, name)
        hidden, layers = common["hidden_size"], common["num_layers"]
        mamba = mamba_mixer(f, hidden)
        types = f.layer_types(layers, ("linear_attention", "attention")) or ("linear_attention",) * layers
        rope = f.raw("position_embedding_type") == "rope"
        experts, shared = f.int("num_local_experts", default=8, minimum=0), f.int("shared_intermediate_size", default=1024)
        top_k = f.int("num_experts_per_tok", default=2)
        ffn = FFN(kind="moe", intermediate=common["intermediate_size"], experts=experts, top_k=top_k,
                  shared_intermediate=shared) if experts else FFN(intermediate=shared)
        specs = tuple(LayerSpec(mixer=Mixer(kind="state_space", chunk=mamba.chunk) if t == "linear_attention"
                                else Mixer(rope=rope), ffn=ffn) for t in types)
        bias = f.bool("attention_bias", default=False)
        return GraniteMoeHybridSpec(
            **{**common, "rotary_dim": common["head_dim"] if rope else 0}, qkv_bias=bias, o_bias=bias,
            num_experts=experts, experts_per_token=top_k, moe_intermediate_size=common["intermediate_size"],
            norm_topk_prob=False, shared_expert_intermediate_size=shared, router=Router(scoring="topk_softmax"),
            layers=specs, mamba=mamba)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        if layer.mixer.kind == "state_space":
            assert isinstance(spec, GraniteMoeHybridSpec)
            return mamba2_parts(spec.mamba, spec.hidden_size, ".mamba", act=spec.activation)
        return super().attention_parts(spec, layer)

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        """No experts: the shared MLP alone (input_linear -> act(first half) * second half -> output_linear)."""
        h, inter, t, s = spec.hidden_size, layer.ffn.intermediate, blk.TOKENS, ".shared_mlp"
        return [
            Part(f"{s}.input_linear", f"{s}.input_linear", NodeKind.LINEAR, blk.linear(t, h, 2 * inter, False), MLP),
            Part(f"{s}.activation", f"{s}.activation", NodeKind.ACTIVATION, activation_counts(spec.activation, t * inter),
                 MLP),
            Part(f"{s}:gate_mul", s, NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
            Part(f"{s}.output_linear", f"{s}.output_linear", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = super().tiny(data)
        out.update(mamba_n_heads=4, mamba_d_head="auto", mamba_n_groups=2, mamba_d_state=8, mamba_chunk_size=4,
                   shared_intermediate_size=40)
        if data.get("num_local_experts") == 0:  # no MoE block: keep it so
            out["num_local_experts"] = 0
        out.pop("layers_block_type", None)
        if not isinstance(data.get("layer_types"), list):
            out["layer_types"] = ["linear_attention", "attention"]
            out["num_hidden_layers"] = 2
        return out


__all__ = ["GraniteMoeHybrid"]
