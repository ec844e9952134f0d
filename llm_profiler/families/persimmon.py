"""The Persimmon family (Persimmon-8B, Fuyu's language model): fused biased qkv, q/k LayerNorms, partial rotary,
relu2 MLP."""

from __future__ import annotations

from typing import Any

from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .phi import rotary_dim
from .stablelm import check_head_dim
from .template import decoder_fields, plain_mlp, tiny_dims


@register
class Persimmon(DenseTemplate):
    """persimmon. Quirks, all from transformers' PersimmonConfig / modeling_persimmon:

    - multi-head attention only (no ``num_key_value_heads``); head_dim = hidden / heads.
    - fused ``query_key_value`` (hidden -> 3 hidden) and ``dense`` output, both with bias.
    - ``qk_layernorm`` (default true): one nn.LayerNorm (weight and bias) over head_dim for q (``q_layernorm``)
      and one for k, applied to every head.
    - partial rotary: int(head_dim * ``partial_rotary_factor``) dims (default 0.5).
    - nn.LayerNorm with bias for the two layer norms and ``model.final_layernorm``; MLP ``dense_h_to_4h`` ->
      ``hidden_act`` (relu2) -> ``dense_4h_to_h``, both biased.
    """

    final_norm_name = "final_layernorm"

    name = "persimmon"
    model_types = ("persimmon",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        check_head_dim(data, "persimmon")
        f = Fields({k: v for k, v in data.items() if k not in ("head_dim", "num_key_value_heads")}, "persimmon")
        common = decoder_fields(f, self.name, name)
        return DenseSpec(**{**common, "rotary_dim": rotary_dim(f, common["head_dim"], 0.5),
                            "activation": read_activation(f, "hidden_act", default="relu2")},
                         norm="layernorm", gated_mlp=False, qkv_bias=True, o_bias=True, mlp_bias=True,
                         qk_norm=f.bool("qk_layernorm", default=True))

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, D, t, a = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS, ".self_attn"
        names = {f"{a}.q_norm": f"{a}.q_layernorm", f"{a}.k_norm": f"{a}.k_layernorm", f"{a}.o_proj": f"{a}.dense"}
        out = [Part(f"{a}.query_key_value", f"{a}.query_key_value", NodeKind.LINEAR, blk.linear(t, h, 3 * h, True),
                    ATTN)]
        for p in super().attention_parts(spec, layer):
            if p.suffix in (f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj"):
                continue
            if p.suffix in (f"{a}.q_norm", f"{a}.k_norm"):  # one LayerNorm(head_dim) shared by the heads
                p = Part(p.suffix, p.module_suffix, p.kind, blk.layer_norm(t * H, D), ATTN)
            out.append(Part(names[p.suffix], names[p.suffix], p.kind, p.counts, p.block) if p.suffix in names else p)
        return out

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".mlp.dense_h_to_4h", ".mlp.act", ".mlp.dense_4h_to_h")


    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims({k: v for k, v in data.items() if k != "head_dim"})
