"""LFM2: gated short-convolution layers and rotary GQA attention layers (per ``layer_types``), each followed
by a SwiGLU MLP.

Layer: ``operator_norm`` -> ``conv`` (graph/ssm.py ``short_conv_parts``) or ``self_attn`` -> + residual;
``ffn_norm`` -> ``feed_forward`` (w1, w3, w2; silu and the product in its own forward) -> + residual. The
final norm is ``model.embedding_norm``.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import MLP, NodeKind
from ..graph.ssm import short_conv_parts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, part, renamed, tiny_dims


class Lfm2Spec(ArchSpec):
    conv_kernel: int
    conv_bias: bool


@register
class Lfm2(DecoderTemplate):
    """lfm2. Quirks, from transformers' Lfm2Config and modeling code:

    - ``layer_types`` ("full_attention" / "conv"), else ``full_attn_idxs`` (default: every layer attention);
    - short conv: in_proj hidden -> 3 hidden (B, C, x), B * x, depthwise causal conv1d of ``conv_L_cache``
      (no activation), C * y, out_proj; ``conv_bias`` on all three; its cache holds the conv state only;
    - attention: per-head RMSNorm on q and k (``q_layernorm`` / ``k_layernorm``), rotary, no bias, ``out_proj``;
    - MLP width: ``intermediate_size``, with ``block_auto_adjust_ff_dim`` 2/3 of it, times
      ``block_ffn_dim_multiplier``, rounded up to ``block_multiple_of``; embeddings tied by default.
    """

    name = "lfm2"
    model_types = ("lfm2",)
    final_norm_name = "embedding_norm"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "lfm2")
        common = decoder_fields(f, self.name, name, kv_default=8, tie_default=True)
        layers = common["num_layers"]
        types = f.layer_types(layers, ("full_attention", "conv"))
        if types is None:
            idxs = f.raw("full_attn_idxs")
            attn = set(range(layers)) if idxs is None else set(idxs)
            types = tuple("full_attention" if i in attn else "conv" for i in range(layers))
        inter = common["intermediate_size"]
        if f.bool("block_auto_adjust_ff_dim", default=True):
            inter = int(2 * inter / 3)
            multiplier = f.raw("block_ffn_dim_multiplier", default=1.0)
            if multiplier is not None:
                multiple = f.int("block_multiple_of", default=256)
                inter = multiple * ((int(f.float("block_ffn_dim_multiplier") * inter) + multiple - 1) // multiple)
        kernel = f.int("conv_L_cache", default=3)
        specs = tuple(LayerSpec(mixer=Mixer() if t == "full_attention" else Mixer(kind="linear_attention"),
                                ffn=FFN(intermediate=inter)) for t in types)
        return Lfm2Spec(**{**common, "rotary_dim": common["head_dim"], "intermediate_size": inter}, qk_norm=True,
                        layers=specs, conv_kernel=kernel, conv_bias=f.bool("conv_bias", default=False))

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, Lfm2Spec)
        h, t, inter = spec.hidden_size, blk.TOKENS, spec.intermediate_size
        if layer.mixer.kind == "attention":
            mixer = renamed(self.attention_parts(spec, layer), {
                ".self_attn.q_norm": ".self_attn.q_layernorm", ".self_attn.k_norm": ".self_attn.k_layernorm",
                ".self_attn.o_proj": ".self_attn.out_proj"})
        else:
            mixer = short_conv_parts(h, spec.conv_kernel, spec.conv_bias, ".conv")
        f = ".feed_forward"
        ffn = [
            part(f"{f}.w1", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            part(f"{f}.w3", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            # silu(w1 x) * w3 x, in the MLP's own forward (F.silu)
            part(f, NodeKind.ACTIVATION, blk.activation("silu", t * inter) + ops.elementwise("mul", t * inter), MLP),
            part(f"{f}.w2", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]
        return [self.norm_part(spec, ".operator_norm"), *mixer, part(":residual", NodeKind.RESIDUAL, blk.residual(h)),
                self.norm_part(spec, ".ffn_norm"), *ffn]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, conv_L_cache=data.get("conv_L_cache") or 3)
        if not isinstance(data.get("layer_types"), list):
            out["layer_types"] = ["conv", "full_attention"]
            out["num_hidden_layers"] = 2
            out.pop("full_attn_idxs", None)
        return out
