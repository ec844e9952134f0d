"""Jamba: Mamba-1 mixers with an attention layer every ``attn_layer_period``, MoE every ``expert_layer_period``.

Every layer is ``input_layernorm -> mixer -> + residual -> pre_ff_layernorm -> feed_forward -> + residual``;
the mixer a Mamba-1 mixer (``.mamba``: graph/ssm.py, with Jamba's RMSNorms on dt, B and C) or a GQA
attention without positions (``.self_attn``: no rotary, no bias); the feed-forward a gated MLP or a sparse
MoE (softmax router, top-k kept unnormalised, gated experts).
"""

from __future__ import annotations

from math import ceil
from typing import Any

from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.moe import MoESpec, sparse_moe_parts
from ..graph.ssm import Mamba1, mamba1_parts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, gated_mlp, part, tiny_dims


class JambaSpec(MoESpec):
    mamba: Mamba1


@register
class Jamba(DecoderTemplate):
    """jamba. Quirks, from transformers' JambaConfig and modeling code:

    - layer i is attention when i % ``attn_layer_period`` == ``attn_layer_offset``, else Mamba; its
      feed-forward is MoE when i % ``expert_layer_period`` == ``expert_layer_offset`` (and ``num_experts`` > 1);
    - attention: head_dim = hidden / heads (or ``head_dim``), no rotary, no biases, one causal mask per forward;
    - Mamba-1: inner = ``mamba_expand`` x hidden, ``mamba_d_state``, ``mamba_d_conv``, ``mamba_dt_rank``
      ("auto" = ceil(hidden / 16)), ``mamba_conv_bias``, ``mamba_proj_bias``; the conv's activation is
      ``hidden_act``; transformers' torch scan is a sequential loop that starts every multi-token forward from a
      zero state (the cached SSM state is read only by the one-token update);
    - MoE: ``num_experts`` experts of ``intermediate_size``, ``num_experts_per_tok``, softmax then top-k (not
      renormalised); ``use_mamba_kernels`` changes no count (the torch path is what is counted).
    """

    name = "jamba"
    model_types = ("jamba",)
    final_norm_name = "final_layernorm"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "jamba")
        common = decoder_fields(f, self.name, name, kv_default=8)
        hidden, layers = common["hidden_size"], common["num_layers"]
        rank = f.raw("mamba_dt_rank", default="auto")
        mamba = Mamba1(inner=f.int("mamba_expand", default=2) * hidden, state=f.int("mamba_d_state", default=16),
                       conv_kernel=f.int("mamba_d_conv", default=4),
                       dt_rank=ceil(hidden / 16) if rank == "auto" else f.int("mamba_dt_rank"),
                       conv_bias=f.bool("mamba_conv_bias", default=True),
                       proj_bias=f.bool("mamba_proj_bias", default=False), dt_norms=True)
        attn_period, attn_offset = f.int("attn_layer_period", default=8), f.int("attn_layer_offset", default=4, minimum=0)
        moe_period, moe_offset = f.int("expert_layer_period", default=2), f.int("expert_layer_offset", default=1, minimum=0)
        experts, top_k = f.int("num_experts", default=16), f.int("num_experts_per_tok", default=2)
        inter = common["intermediate_size"]
        dense = FFN(intermediate=inter)
        moe = FFN(kind="moe", intermediate=inter, experts=experts, top_k=top_k) if experts > 1 else dense
        specs = tuple(LayerSpec(mixer=Mixer(rope=False) if i % attn_period == attn_offset else Mixer(kind="state_space"),
                                ffn=moe if i % moe_period == moe_offset else dense)
                      for i in range(layers))
        return JambaSpec(**{**common, "rotary_dim": 0}, num_experts=experts, experts_per_token=top_k,
                         moe_intermediate_size=inter, norm_topk_prob=False, layers=specs, mamba=mamba)

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, JambaSpec)
        h = spec.hidden_size
        if layer.mixer.kind == "state_space":
            mixer = mamba1_parts(spec.mamba, h, ".mamba", act=spec.activation)
        else:
            mixer = self.attention_parts(spec, layer)
        ffn = sparse_moe_parts(spec, ".feed_forward", ".router") if layer.moe else gated_mlp(spec, ".feed_forward")
        return [self.norm_part(spec, ".input_layernorm"), *mixer,
                part(":residual", "residual", blk.residual(h)),
                self.norm_part(spec, ".pre_ff_layernorm"), *ffn]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        # 4 layers: attention on layer 1, MoE on odd layers (mamba+MLP, attention+MoE, mamba+MLP, mamba+MoE)
        return tiny_dims(data, layers=4, attn_layer_period=4, attn_layer_offset=1, expert_layer_period=2,
                         expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=8,
                         mamba_dt_rank=6, mamba_expand=2)
