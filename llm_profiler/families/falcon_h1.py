"""Falcon-H1: every layer runs a Mamba-2 mixer and a rotary GQA attention in parallel, then a gated MLP; muP
multipliers everywhere.

Layer: ``input_layernorm`` -> ``mamba`` (x ssm_out_multiplier) and ``self_attn`` (on x * attention_in_multiplier,
output x attention_out_multiplier), summed, + residual; ``pre_ff_layernorm`` -> ``feed_forward`` + residual.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import MLP, NodeKind
from ..graph.ssm import Mamba2, mamba2_parts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, part, tiny_dims


class FalconH1Spec(ArchSpec):
    mamba: Mamba2
    # with mamba_rms_norm: norm(x) * silu(gate) (true) or norm(x * silu(gate)); the same forward ops, but the
    # backward's read-twice of the norm's input lands on a different node (training/backward_ssm.py)
    mamba_norm_before_gate: bool = True


@register
class FalconH1(DecoderTemplate):
    """falcon_h1. Quirks, from transformers' FalconH1Config and modeling code:

    - Mamba-2 inner width ``mamba_d_ssm`` (else ``mamba_expand`` x hidden), ``mamba_n_heads`` heads of
      ``mamba_d_head`` ("auto": inner / heads), ``mamba_n_groups``, ``mamba_d_state``, ``mamba_d_conv``,
      ``mamba_chunk_size``; ``mamba_proj_bias`` on in_proj, ``projectors_bias`` on out_proj; ``mamba_rms_norm``
      (default off: the scan output times silu(gate), no norm module) with ``mamba_n_groups`` groups;
    - muP: each multiplier is an op whatever its value: embeddings x embedding_multiplier, the mixer's input x
      ssm_in_multiplier and its projection x the mup vector (one per channel), k x key_multiplier, the MLP's
      gate and down multipliers, the mamba / attention in and out multipliers, logits x lm_head_multiplier;
    - attention: rotary on the whole head (hidden / heads), ``attention_bias`` on q, k, v, o; MLP
      ``mlp_bias``. The cache holds, per layer, K and V and the Mamba conv and SSM states.
    """

    name = "falcon_h1"
    model_types = ("falcon_h1",)
    final_norm_name = "final_layernorm"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "falcon_h1")
        common = decoder_fields(f, self.name, name, kv_default=8)
        hidden = common["hidden_size"]
        inner = f.int("mamba_d_ssm", default=f.int("mamba_expand", default=2) * hidden)
        heads = f.int("mamba_n_heads", default=128)
        f.divisible(inner, heads, "the Mamba inner width (mamba_d_ssm or mamba_expand x hidden) must be a multiple "
                    "of mamba_n_heads")
        head_dim = inner // heads if f.raw("mamba_d_head", default="auto") == "auto" else f.int("mamba_d_head")
        groups = f.int("mamba_n_groups", default=1)
        mamba = Mamba2(heads=heads, head_dim=head_dim, groups=groups, state=f.int("mamba_d_state", default=256),
                       conv_kernel=f.int("mamba_d_conv", default=4), chunk=f.int("mamba_chunk_size", default=256),
                       conv_bias=f.bool("mamba_conv_bias", default=True),
                       proj_bias=f.bool("mamba_proj_bias", default=False), norm_groups=groups,
                       gated_norm=f.bool("mamba_rms_norm", default=False),
                       out_bias=f.bool("projectors_bias", default=False))
        if mamba.inner != inner:
            raise ConfigError(f"falcon_h1 config: mamba_d_head x mamba_n_heads ({mamba.inner}) must equal the Mamba "
                              f"inner width ({inner})")
        bias = f.bool("attention_bias", default=False)
        layer = LayerSpec(mixer=Mixer(kind="state_space", chunk=mamba.chunk), ffn=FFN(intermediate=common["intermediate_size"]))
        return FalconH1Spec(**{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias,
                            mlp_bias=f.bool("mlp_bias", default=False), layers=(layer,) * common["num_layers"],
                            mamba=mamba, mamba_norm_before_gate=f.bool("mamba_norm_before_gate", default=True))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        parts = super().head_of_model_parts(spec)
        scale = ops.elementwise("mul", blk.TOKENS * spec.hidden_size)  # embeddings x embedding_multiplier
        return [parts[0], Part(f"{self.base}:embedding_multiplier", self.base, NodeKind.ELEMENTWISE, scale), *parts[1:]]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, FalconH1Spec)
        h, t, m, inter = spec.hidden_size, blk.TOKENS, spec.mamba, spec.intermediate_size
        proj = m.inner + m.conv_channels + m.heads
        muls = ops.elementwise("mul", t * h) + ops.elementwise("mul", t * proj)  # x ssm_in, x the mup vector
        attention = [*self.attention_parts(spec, LayerSpec()),  # k x key_multiplier, in the attention's forward
                     Part(".self_attn", ".self_attn", NodeKind.ELEMENTWISE,
                          ops.elementwise("mul", t * spec.num_kv_heads * spec.head_dim))]
        # the layer's own ops: x ssm_out, x attention_in, x attention_out, mamba + attention, two residual adds
        mix = blk.residual(h) + ops.elementwise("mul", 3 * t * h) + ops.elementwise("add", t * h)
        ffn = [
            part(".feed_forward.gate_proj", NodeKind.LINEAR, blk.linear(t, h, inter, spec.mlp_bias), MLP),
            part(".feed_forward.act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
            part(".feed_forward.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, spec.mlp_bias), MLP),
            part(".feed_forward.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, spec.mlp_bias), MLP),
            # gate x gate_multiplier, up * act(gate), down x down_multiplier
            part(".feed_forward", NodeKind.ELEMENTWISE, ops.elementwise("mul", 2 * t * inter + t * h), MLP),
        ]
        return [self.norm_part(spec, ".input_layernorm"),
                *mamba2_parts(m, h, ".mamba", act=spec.activation, own_extra=muls), *attention,
                part(":residual", NodeKind.RESIDUAL, mix), self.norm_part(spec, ".pre_ff_layernorm"), *ffn]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        scale = ops.elementwise("mul", blk.TOKENS * spec.vocab_size)  # logits x lm_head_multiplier
        return [*super().tail_parts(spec), Part(":lm_head_multiplier", "", NodeKind.LM_HEAD, scale)]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head="auto", mamba_n_groups=2,
                         mamba_d_state=8, mamba_chunk_size=4)
