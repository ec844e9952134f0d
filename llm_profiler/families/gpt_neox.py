"""The GPT-NeoX family (model_type gpt_neox): fused qkv, partial rotary, parallel residual, LayerNorm.

Quirks, all from transformers' GPTNeoXConfig / modeling_gpt_neox.py (5.23):

- ``query_key_value`` is one fused projection hidden -> 3 * hidden (heads * 3 * head_dim), ``dense`` the
  output projection; both carry a bias unless ``attention_bias`` is false.
- partial rotary: only ``int(head_dim * partial_rotary_factor)`` dimensions of q and k are rotated. The
  factor comes from ``rope_scaling`` / ``rope_parameters`` (``partial_rotary_factor``), else the legacy
  ``rotary_pct``, else 0.25. (A top-level ``partial_rotary_factor`` is ignored by transformers 5.x for
  this model: it is noted, not used.)
- parallel residual (``use_parallel_residual``, default true): attention and MLP both read the layer input,
  out = x + attn + mlp; the sequential variant adds the same two B*S*hidden tensors, so both are 2 adds.
- the output head (``embed_out`` in the original checkpoints, ``lm_head`` in transformers 5) is separate
  from ``embed_in`` unless ``tie_word_embeddings``.
- ``hidden_act`` (default gelu; gpt-neox-20b: gelu_fast, a 9-op Python expression, graph/activations.py).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, attention_core, part, plain_mlp


def partial_rotary_factor(f: Fields) -> tuple[float, tuple[str, ...]]:
    """The rotated fraction of each head, as GPTNeoXConfig resolves it, and a note when a field is ignored."""
    notes: tuple[str, ...] = ()
    rope = f.raw("rope_scaling") or f.raw("rope_parameters")
    if rope is not None and not isinstance(rope, dict):
        raise ConfigError(f"{f.model_type} config field 'rope_parameters' must be an object, got {rope!r}")
    if rope and rope.get("partial_rotary_factor") is not None:
        factor = Fields(rope, f.model_type).float("partial_rotary_factor")
    else:
        factor = f.float("rotary_pct", default=0.25)
    if f.has("partial_rotary_factor") and f.float("partial_rotary_factor") != factor:
        notes = (f"top-level partial_rotary_factor is ignored by transformers' GPT-NeoX; "
                 f"rotating {factor} of each head (rotary_pct / rope_parameters)",)
    if not 0 < factor <= 1:
        raise ConfigError(f"{f.model_type} config: the partial rotary factor (rotary_pct, or rope_parameters.partial_rotary_factor) must be in (0, 1], got {factor}")
    return factor, notes


class GPTNeoXSpec(ArchSpec):
    parallel_residual: bool = True  # use_parallel_residual (the graph is the same; the backward's dataflow is not)


@register
class GPTNeoX(DecoderTemplate):
    name = "gpt_neox"
    model_types = ("gpt_neox",)
    base = "gpt_neox"
    layer_prefix = "gpt_neox.layers."
    embed_name = "embed_in"
    final_norm_name = "final_layer_norm"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, data["model_type"])
        hidden, heads = f.int("hidden_size"), f.int("num_attention_heads")
        f.divisible(hidden, heads, "hidden_size must be a multiple of num_attention_heads")
        head_dim = hidden // heads
        factor, notes = partial_rotary_factor(f)
        # inv_freq has ceil(d/2) entries (d = int(head_dim * factor)) and cos/sin are cat(freqs, freqs)
        rotary_dim = 2 * ((int(head_dim * factor) + 1) // 2)
        if rotary_dim == 0:
            raise ConfigError(f"{f.model_type} config: partial rotary factor {factor} rotates no dimension "
                              f"of a head of {head_dim}")
        bias = f.bool("attention_bias", default=True)
        return GPTNeoXSpec(
            parallel_residual=f.bool("use_parallel_residual", default=True),
            model_type="gpt_neox", family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("num_hidden_layers"), num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            intermediate_size=f.int("intermediate_size"), vocab_size=f.int("vocab_size"), norm="layernorm",
            activation=read_activation(f, "hidden_act", default="gelu"), gated_mlp=False, qkv_bias=bias,
            o_bias=bias, mlp_bias=True, tie_word_embeddings=f.bool("tie_word_embeddings", default=False),
            rotary_dim=rotary_dim, notes=notes,
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, D, t, a = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS, ".attention"
        rope = blk.apply_rope(H, spec.rotary_dim) + blk.apply_rope(H, spec.rotary_dim)  # q and k
        return [
            part(f"{a}.query_key_value", NodeKind.LINEAR, blk.linear(t, h, 3 * h, spec.qkv_bias), ATTN),
            part(f"{a}:rope", NodeKind.ROPE, rope, ATTN),
            *attention_core(a, H, D, blk.keys_full(), blk.cached_full()),
            part(f"{a}.dense", NodeKind.LINEAR, blk.linear(t, h, h, spec.o_bias), ATTN),
        ]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".mlp.dense_h_to_4h", ".mlp.act", ".mlp.dense_4h_to_h")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        # parallel: mlp + attn + x; sequential: attn + x, then mlp + that: two adds either way
        residual = part(":residual", NodeKind.RESIDUAL, blk.residual(spec.hidden_size))
        return [self.norm_part(spec, ".input_layernorm"), *self.attention_parts(spec, layer),
                self.norm_part(spec, ".post_attention_layernorm"), *self.ffn_parts(spec, layer), residual]
