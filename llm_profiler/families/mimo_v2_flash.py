"""MiMo-V2-Flash (mimo_v2_flash), as transformers 5.23 computes it (modeling_mimo_v2_flash.py).

- Layers: ``layer_types`` (default: layer 0 and every 6th full, the rest sliding); the window is
  ``sliding_window_size + 1`` when the hub's ``sliding_window_size`` is given (the query plus that many
  earlier tokens), else ``sliding_window`` (default 129). ``mlp_layer_types`` (default: layer 0 dense, the rest
  MoE). transformers derives both and the sliding layers' KV heads itself: the hub's ``hybrid_layer_pattern``,
  ``moe_layer_freq``, ``swa_num_key_value_heads``, ``swa_rope_theta`` and ``add_*_sink_bias`` are not read
  (a note says so when they disagree with what transformers builds).
- Attention: q / k of ``head_dim`` (192), v of ``v_head_dim`` (128); sliding layers have 2 x
  ``num_key_value_heads`` KV heads and a learned sink logit per head, full layers neither. The values are
  scaled by ``attention_value_scale`` (one multiply, 1.0 when null); the scores by head_dim**-0.5.
  RoPE on the first int(head_dim * partial_rotary_factor) dims (default 0.334: 64 of 192), one table per
  layer type (``rope_parameters`` per type). Every layer subtracts the row maximum before the softmax
  (``:row_max``, over the keys and, on sliding layers, the sink column; the softmax then covers keys + 1).
- MoE: DeepSeek-V3's router (sigmoid + correction bias, group-limited top-k, renormalised with + 1e-20,
  * routed_scaling_factor, null = 1.0) and batched experts; no shared experts. Dense layers: a gated MLP.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import attention_variants as av
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..graph.routers import RoutedMoESpec, Router
from ..ops import Counts
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from ._moe_style import RoutedMoEStyle
from .fields import Fields
from .template import decoder_fields, part, tiny_dims

# MiMoV2FlashConfig defaults (transformers 5.23; MiMo-V2-Flash's dims)
DEFAULTS: dict[str, Any] = {
    "vocab_size": 152576, "hidden_size": 4096, "intermediate_size": 16384, "num_hidden_layers": 48,
    "num_attention_heads": 64, "num_key_value_heads": 4, "moe_intermediate_size": 2048, "num_experts_per_tok": 8,
    "n_routed_experts": 256, "n_group": 1, "topk_group": 1, "norm_topk_prob": True, "head_dim": 192,
    "v_head_dim": 128, "sliding_window": 129, "hidden_act": "silu", "tie_word_embeddings": False,
}
ROPE = {FULL_ATTENTION: 5_000_000.0, SLIDING_ATTENTION: 10_000.0}


class MiMoSpec(RoutedMoESpec):
    v_head_dim: int
    rope_dims: tuple[tuple[str, int], ...]  # layer type -> rotated dims, one table each


@register
class MiMoV2Flash(RoutedMoEStyle):
    """mimo_v2_flash: every quirk is in the module docstring."""

    name = "mimo_v2_flash"
    model_types = ("mimo_v2_flash",)

    def spec(self, data: dict[str, Any], name: str = "") -> MiMoSpec:
        full = {**DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
        f = Fields(full, "mimo_v2_flash")
        common = decoder_fields(f, self.name, name)
        layers, kv = common["num_layers"], common["num_kv_heads"]
        types = f.layer_types(layers) or tuple(FULL_ATTENTION if i == 0 or not (i + 1) % 6 else SLIDING_ATTENTION
                                               for i in range(layers))
        mlp = f.layer_types(layers, allowed=("dense", "sparse"), name="mlp_layer_types") or (
            ("dense",) + ("sparse",) * (layers - 1))
        window = (f.int("sliding_window_size", minimum=1) + 1 if f.has("sliding_window_size")
                  else f.int("sliding_window", minimum=2))
        rope = full.get("rope_parameters") or {t: {"rope_type": "default", "partial_rotary_factor": 0.334}
                                               for t in ROPE}
        dims = []
        for kind in sorted(set(types)):
            params = rope.get(kind) or {}
            if params.get("rope_type", "default") != "default":
                raise ConfigError(f"mimo_v2_flash config field 'rope_parameters' ({kind}): rope_type "
                                  f"{params['rope_type']!r} is not supported; supported: default")
            dim = int(common["head_dim"] * float(params.get("partial_rotary_factor", 0.334)))
            if dim % 2 or dim <= 0:
                raise ConfigError(f"mimo_v2_flash config: {kind} rotates int(head_dim * partial_rotary_factor) = "
                                  f"{dim} dims; it must be even and positive")
            dims.append((kind, dim))
        notes = self._legacy_notes(full, types, mlp, kv)
        experts, groups = f.int("n_routed_experts", "num_local_experts"), f.int("n_group")
        f.divisible(experts, groups, "n_routed_experts must be a multiple of n_group")
        norm = f.bool("norm_topk_prob")
        return MiMoSpec(
            **{**common, "rotary_dim": dims[0][1]}, qkv_bias=f.bool("attention_bias", default=False),
            sliding_window=window, layer_types=types, num_experts=experts,
            experts_per_token=f.int("num_experts_per_tok"), moe_intermediate_size=f.int("moe_intermediate_size"),
            norm_topk_prob=norm, dense_layers=tuple(i for i, t in enumerate(mlp) if t == "dense"),
            router=Router(scoring="sigmoid", correction_bias=True, grouped=True, n_group=groups,
                          topk_group=f.int("topk_group"), normalize=norm, norm_eps=True, scaling=True),
            v_head_dim=f.int("v_head_dim"), rope_dims=tuple(dims), notes=tuple(notes),
        )

    @staticmethod
    def _legacy_notes(data: dict[str, Any], types: tuple[str, ...], mlp: tuple[str, ...], kv: int) -> list[str]:
        """The hub's own spelling, which transformers does not read: a note where it disagrees."""
        notes = []
        pattern = data.get("hybrid_layer_pattern")
        if isinstance(pattern, list) and [SLIDING_ATTENTION if p else FULL_ATTENTION for p in pattern] != list(types):
            notes.append("hybrid_layer_pattern is not read by transformers; layer_types (or its default) decides")
        freq = data.get("moe_layer_freq")
        if isinstance(freq, list) and ["sparse" if x else "dense" for x in freq] != list(mlp):
            notes.append("moe_layer_freq is not read by transformers; mlp_layer_types (or its default) decides")
        swa_kv = data.get("swa_num_key_value_heads")
        if swa_kv is not None and swa_kv != 2 * kv:
            notes.append(f"swa_num_key_value_heads ({swa_kv}) is not read: transformers gives sliding layers "
                         f"2 x num_key_value_heads = {2 * kv} KV heads")
        return notes

    # --- graph ------------------------------------------------------------------------------------
    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, MiMoSpec)
        tables = Counts()
        for _, dim in spec.rope_dims:
            tables = tables + blk.rotary_table(dim)
        return [p for p in super().head_of_model_parts(spec) if p.kind != NodeKind.ROTARY] + [
            part(f"{self.base}.rotary_emb", NodeKind.ROTARY, tables)]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, MiMoSpec)
        h, H, D, Dv, t, bias = spec.hidden_size, spec.num_heads, spec.head_dim, spec.v_head_dim, blk.TOKENS, spec.qkv_bias
        KV = spec.num_kv_heads * (2 if layer.sliding else 1)
        r = dict(spec.rope_dims)[SLIDING_ATTENTION if layer.sliding else FULL_ATTENTION]
        keys, a = self.keys(spec, layer), ".self_attn"
        rows = blk.B * H * blk.S
        if layer.sliding:  # the sink column joined, the row max over keys + 1 subtracted; softmax over keys + 1
            row_max, softmax = av.sinks(H, keys), av.sink_softmax(H, keys)
        else:
            row_max = ops.topk(rows, keys, 1) + ops.elementwise("sub", rows * keys)
            softmax = blk.attn_softmax(H, keys)
        return [
            part(f"{a}.q_proj", NodeKind.LINEAR, blk.linear(t, h, H * D, bias), ATTN),
            part(f"{a}.k_proj", NodeKind.LINEAR, blk.linear(t, h, KV * D, bias), ATTN),
            part(f"{a}.v_proj", NodeKind.LINEAR, blk.linear(t, h, KV * Dv, bias), ATTN),
            part(f"{a}:v_scale", NodeKind.ELEMENTWISE, ops.elementwise("mul", t * KV * Dv), ATTN),
            part(f"{a}:rope", NodeKind.ROPE, blk.apply_rope(H, r) + blk.apply_rope(KV, r), ATTN),
            part(f"{a}:kv_cache", NodeKind.KV_CACHE, blk.kv_cache(KV, D, self.cached(spec, layer), v_head_dim=Dv), ATTN),
            part(f"{a}:scores", NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=KV), ATTN),
            part(f"{a}:row_max", NodeKind.ATTN_SOFTMAX, row_max, ATTN, label="row max (sinks)"),
            part(f"{a}:softmax", NodeKind.ATTN_SOFTMAX, softmax, ATTN),
            part(f"{a}:context", NodeKind.ATTN_CONTEXT, blk.attn_context(H, Dv, keys, kv_heads=KV), ATTN),
            part(f"{a}.o_proj", NodeKind.LINEAR, blk.linear(t, H * Dv, h, False), ATTN),
        ]

    # --- validation -------------------------------------------------------------------------------
    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(data)
        full = {**DEFAULTS, **data, "layer_types": list(spec.layer_types), "sliding_window": spec.sliding_window,
                "mlp_layer_types": ["dense" if i in spec.dense_layers else "sparse" for i in range(spec.num_layers)]}
        full.pop("sliding_window_size", None)
        out = tiny_dims(full, v_head_dim=16, moe_intermediate_size=24, n_routed_experts=8,
                        num_experts_per_tok=min(2, spec.experts_per_token))
        out["mlp_layer_types"] = full["mlp_layer_types"][:out["num_hidden_layers"]]
        if spec.router.n_group > 1:
            out["n_group"], out["topk_group"] = 4, min(2, spec.router.topk_group)
        out.pop("num_local_experts", None)
        return out
