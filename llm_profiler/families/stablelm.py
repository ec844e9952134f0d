"""The StableLM family (StableLM-2, StableLM-3B-4E1T, StableCode): LayerNorm with bias, partial rotary."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate, norm_part
from .fields import Fields
from .phi import rotary_dim
from .template import decoder_fields, tiny_dims


def check_head_dim(data: dict[str, Any], model_type: str) -> None:
    """The attention of these models uses hidden / heads, their rotary table an explicit head_dim: the two must
    agree (transformers fails on mismatched shapes otherwise)."""
    given, hidden, heads = data.get("head_dim"), data.get("hidden_size"), data.get("num_attention_heads")
    if given is not None and isinstance(hidden, int) and isinstance(heads, int) and heads and given != hidden // heads:
        raise ConfigError(f"{model_type} config field 'head_dim' ({given}) must equal hidden_size / "
                          f"num_attention_heads ({hidden // heads}) or be absent")


class StableLmSpec(DenseSpec):
    parallel_residual: bool = False


@register
class StableLm(DenseTemplate):
    """stablelm. Quirks, all from transformers' StableLmConfig / modeling_stablelm:

    - nn.LayerNorm with bias (``layer_norm_eps``) for ``input_layernorm``, ``post_attention_layernorm`` and
      ``model.norm``; head_dim is hidden / heads.
    - partial rotary: int(head_dim * ``partial_rotary_factor``) dims (default 0.25) rotate, the rest pass.
    - ``use_qkv_bias`` on q/k/v (o never); gated SiLU MLP without bias.
    - ``use_parallel_residual``: x + attn(ln(x)) + mlp(ln(x)) with one norm (no post_attention_layernorm).
    - ``qk_layernorm``: one bias-free nn.LayerNorm per head (``q_layernorm.norms.<i>``) over head_dim.
    """

    name = "stablelm"
    model_types = ("stablelm",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        check_head_dim(data, "stablelm")
        f = Fields({k: v for k, v in data.items() if k != "head_dim"}, "stablelm")  # attention uses hidden/heads
        common = decoder_fields(f, self.name, name)
        return StableLmSpec(
            **{**common, "rotary_dim": rotary_dim(f, common["head_dim"], 0.25)},
            norm="layernorm", qkv_bias=f.bool("use_qkv_bias", default=False),
            qk_norm=f.bool("qk_layernorm", default=False),
            parallel_residual=f.bool("use_parallel_residual", default=False),
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        out: list[Part] = []
        for p in super().attention_parts(spec, layer):
            if p.suffix in (".self_attn.q_norm", ".self_attn.k_norm"):
                heads = spec.num_heads if p.suffix.endswith("q_norm") else spec.num_kv_heads
                name = ".self_attn.q_layernorm" if p.suffix.endswith("q_norm") else ".self_attn.k_layernorm"
                out += [Part(f"{name}.norms.{i}", f"{name}.norms.{i}", NodeKind.NORM,
                             blk.layer_norm(blk.TOKENS, spec.head_dim, bias=False), ATTN) for i in range(heads)]
            else:
                out.append(p)
        return out

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, StableLmSpec)
        if not spec.parallel_residual:
            return super().layer_parts(spec, layer)
        return [
            norm_part(spec, self, ".input_layernorm"),
            *self.attention_parts(spec, layer),
            *self.ffn_parts(spec, layer),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(spec.hidden_size)),  # x + attn + mlp
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims({k: v for k, v in data.items() if k != "head_dim"})
