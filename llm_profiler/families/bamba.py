"""The Bamba family (IBM Bamba-9B): Mamba-2 layers with a few attention layers, every layer a gated MLP."""

from __future__ import annotations

from typing import Any

from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.ssm import Mamba2, mamba2_parts
from ..ops import Counts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, gated_mlp, renamed, tiny_dims


class BambaSpec(ArchSpec):
    mamba: Mamba2


def mamba_mixer(f: Fields, hidden: int) -> Mamba2:
    """The Mamba-2 mixer of BambaConfig's ``mamba_*`` fields (granitemoehybrid reads the same): inner =
    ``mamba_expand`` x hidden in ``mamba_n_heads`` heads of ``mamba_d_head`` ("auto": inner / heads),
    ``mamba_n_groups`` (the gated norm's groups too), ``mamba_d_state``, ``mamba_d_conv``, ``mamba_chunk_size``,
    ``mamba_conv_bias``, ``mamba_proj_bias``."""
    inner, heads = f.int("mamba_expand", default=2) * hidden, f.int("mamba_n_heads", default=128)
    f.divisible(inner, heads, "mamba_expand x hidden_size must be a multiple of mamba_n_heads")
    head_dim = inner // heads if f.raw("mamba_d_head", default="auto") == "auto" else f.int("mamba_d_head")
    groups = f.int("mamba_n_groups", default=1)
    return Mamba2(heads=heads, head_dim=head_dim, groups=groups, state=f.int("mamba_d_state", default=256),
                  conv_kernel=f.int("mamba_d_conv", default=4), chunk=f.int("mamba_chunk_size", default=256),
                  conv_bias=f.bool("mamba_conv_bias", default=True),
                  proj_bias=f.bool("mamba_proj_bias", default=False), norm_groups=groups)


@register
class Bamba(DecoderTemplate):
    """bamba. Quirks, from transformers' BambaConfig and modeling_bamba:

    - layer i is attention (``self_attn``) when i is in ``attn_layer_indices``, else a Mamba-2 mixer (``mamba``):
      inner = ``mamba_expand`` x hidden, ``mamba_n_heads`` of ``mamba_d_head`` ("auto": inner / heads),
      ``mamba_n_groups``, ``mamba_d_state``, ``mamba_d_conv``, ``mamba_chunk_size``, ``mamba_conv_bias``,
      ``mamba_proj_bias``, the gated RMSNorm of n_groups groups (granitemoehybrid's mixer, which derives from it);
    - attention: Llama's with ``attention_bias`` on q/k/v/o; the rotary table spans half of head_dim
      (BambaConfig hard-codes ``partial_rotary_factor`` 0.5);
    - every layer: ``input_layernorm``, the mixer, ``pre_ff_layernorm``, a gated MLP ``feed_forward``
      (``mlp_bias``); the final norm is ``final_layernorm``;
    - position ids are ``arange(S)`` with no past offset (no add), and the base model builds the causal mask.
    """

    name = "bamba"
    model_types = ("bamba",)
    final_norm_name = "final_layernorm"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "bamba")
        common = decoder_fields(f, self.name, name, kv_default=8)
        hidden, layers = common["hidden_size"], common["num_layers"]
        mamba = mamba_mixer(f, hidden)
        attention = set(f.raw("attn_layer_indices", default=None) or ())
        ffn = FFN(kind="gated", intermediate=common["intermediate_size"])
        specs = tuple(LayerSpec(mixer=Mixer() if i in attention else Mixer(kind="state_space", chunk=mamba.chunk),
                                ffn=ffn) for i in range(layers))
        bias = f.bool("attention_bias", default=False)
        return BambaSpec(**{**common, "rotary_dim": common["head_dim"] // 2}, qkv_bias=bias, o_bias=bias,
                         mlp_bias=f.bool("mlp_bias", default=False), layers=specs, mamba=mamba)

    def mask_counts(self, spec: ArchSpec) -> Counts:
        return blk.causal_mask(blk.keys_full())  # position ids: arange(S), nothing added

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        if layer.mixer.kind == "state_space":
            assert isinstance(spec, BambaSpec)
            return mamba2_parts(spec.mamba, spec.hidden_size, ".mamba", act=spec.activation)
        return super().attention_parts(spec, layer)

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return gated_mlp(spec, ".feed_forward")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return renamed(super().layer_parts(spec, layer), {".post_attention_layernorm": ".pre_ff_layernorm"})

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, layers=2)
        out.update(mamba_n_heads=4, mamba_d_head="auto", mamba_n_groups=2, mamba_d_state=8, mamba_chunk_size=4,
                   attn_layer_indices=[1])
        return out
