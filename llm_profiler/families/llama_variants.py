"""Llama variants that differ from it by a flag or two: seed_oss, hunyuan_v1_dense, ernie4_5, ministral, helium,
arcee, cwm.

Each is transformers' Llama graph (pre-RMSNorm, RoPE over head_dim, gated MLP, one causal mask) with the
quirks listed on its class; the rotation over interleaved pairs (ernie4_5, helium) costs what Llama's does.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import MLP
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import decoder_fields, tiny_dims


class _Variant(DenseTemplate):
    head_dim_default: int | None = None
    tie_default = False
    null_head_dim_fails = False  # the attention reads config.head_dim even when it is null

    def common(self, data: dict[str, Any], name: str) -> tuple[Fields, dict[str, Any]]:
        if self.null_head_dim_fails and "head_dim" in data and data["head_dim"] is None:
            raise ConfigError(f"{data['model_type']} config field 'head_dim' is null; transformers needs a number "
                              "(hidden_size / num_attention_heads for the released models)")
        f = Fields(data, data["model_type"])
        common = decoder_fields(f, self.name, name, head_dim_default=self.head_dim_default,
                                tie_default=self.tie_default)
        return f, {**common, "rotary_dim": common["head_dim"]}

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data)


@register
class SeedOss(_Variant):
    """seed_oss (Seed-OSS-36B): head_dim default 128; ``attention_bias`` (default true) on q/k/v,
    ``attention_out_bias`` (default false) on o_proj; ``mlp_bias``."""

    name = "seed_oss"
    model_types = ("seed_oss",)
    head_dim_default = 128

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, common = self.common(data, name)
        return DenseSpec(**common, qkv_bias=f.bool("attention_bias", default=True),
                         o_bias=f.bool("attention_out_bias", default=False), mlp_bias=f.bool("mlp_bias", default=False))


@register
class HunYuanDense(_Variant):
    """hunyuan_v1_dense (Hunyuan-7B and the 0.5B-4B dense models): ``attention_bias`` on q/k/v/o, no MLP bias;
    RMSNorms ``query_layernorm`` / ``key_layernorm`` per head, applied after the rotation (always, whatever
    ``use_qk_norm`` says); the dynamic NTK-alpha RoPE (``rope_scaling`` with ``alpha``) is a static base
    change (no count). head_dim must be given or absent (a null one fails in transformers)."""

    name = "hunyuan_v1_dense"
    model_types = ("hunyuan_v1_dense",)
    null_head_dim_fails = True

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, common = self.common(data, name)
        bias = f.bool("attention_bias", default=False)
        return DenseSpec(**common, qkv_bias=bias, o_bias=bias, qk_norm=True)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        names = {".self_attn.q_norm": ".self_attn.query_layernorm", ".self_attn.k_norm": ".self_attn.key_layernorm"}
        return [Part(names[p.suffix], names[p.suffix], p.kind, p.counts, p.block) if p.suffix in names else p
                for p in super().attention_parts(spec, layer)]


@register
class Ernie45(_Variant):
    """ernie4_5 (ERNIE-4.5-0.3B dense): ``use_bias`` on q/k/v/o and the three MLP projections; head_dim default
    128; tied embeddings by default; rotation over interleaved pairs in float32 (the casts are no-ops)."""

    name = "ernie4_5"
    model_types = ("ernie4_5",)
    head_dim_default = 128
    tie_default = True

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, common = self.common(data, name)
        bias = f.bool("use_bias", default=False)
        return DenseSpec(**common, qkv_bias=bias, o_bias=bias, mlp_bias=bias)


@register
class Ministral(_Variant):
    """ministral (Ministral-8B-2410): Mistral with ``layer_types`` (default: every layer sliding when
    ``sliding_window`` is set, default 4096); the base model builds both masks whatever the types; head_dim
    must be given or absent (a null one fails in transformers)."""

    name = "ministral"
    model_types = ("ministral",)
    null_head_dim_fails = True

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, common = self.common(data, name)
        layers = common["num_layers"]
        window = None if data.get("sliding_window", 0) is None else f.int("sliding_window", default=4096, minimum=2)
        types = f.layer_types(layers) or ((SLIDING_ATTENTION if window else FULL_ATTENTION,) * layers)
        if window is None:
            raise ConfigError("ministral config field 'sliding_window' must be a number: transformers builds the "
                              "sliding-window mask whatever the layer types, and fails without one")
        sliding = SLIDING_ATTENTION in types
        return DenseSpec(**common, sliding_window=window, layer_types=types if sliding else (),
                         both_masks=True)


@register
class Helium(_Variant):
    """helium (Helium-1 2B): head_dim default 128; ``attention_bias`` on q/k/v, o_proj (hidden -> hidden) never;
    ``mlp_bias``; rotation over interleaved pairs."""

    name = "helium"
    model_types = ("helium",)
    head_dim_default = 128

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, common = self.common(data, name)
        if common["num_heads"] * common["head_dim"] != common["hidden_size"]:
            raise ConfigError("helium config: num_attention_heads * head_dim must equal hidden_size "
                              "(o_proj maps hidden_size to hidden_size)")
        return DenseSpec(**common, qkv_bias=f.bool("attention_bias", default=False),
                         mlp_bias=f.bool("mlp_bias", default=False))

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data, head_dim=16)  # o_proj needs heads * head_dim == hidden


@register
class Arcee(_Variant):
    """arcee (AFM-4.5B): a non-gated MLP, up_proj -> ``hidden_act`` (default relu2: relu, then square) ->
    down_proj, with ``mlp_bias``; ``attention_bias`` on q/k/v/o."""

    name = "arcee"
    model_types = ("arcee",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, common = self.common(data, name)
        bias = f.bool("attention_bias", default=False)
        return DenseSpec(**{**common, "activation": read_activation(f, "hidden_act", default="relu2")},
                         gated_mlp=False, qkv_bias=bias, o_bias=bias, mlp_bias=f.bool("mlp_bias", default=False))

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, inter, t, m = spec.hidden_size, spec.intermediate_size, blk.TOKENS, ".mlp"
        return [
            Part(f"{m}.up_proj", f"{m}.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, spec.mlp_bias), MLP),
            Part(f"{m}.act_fn", f"{m}.act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
            Part(f"{m}.down_proj", f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, spec.mlp_bias), MLP),
        ]


@register
class Cwm(_Variant):
    """cwm (Meta's Code World Model, CWM-32B): Llama without biases, head_dim default 128, with ``layer_types``
    (default: a full layer every fourth, ``i % 4 == 0``, the others sliding over ``sliding_window``, default
    8192); the base model builds both masks whatever the types (modeling_cwm.CwmModel); the llama3 RoPE
    scaling changes no count."""

    name = "cwm"
    model_types = ("cwm",)
    head_dim_default = 128

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, common = self.common(data, name)
        layers = common["num_layers"]
        window = f.int("sliding_window", default=8192, minimum=2)
        types = f.layer_types(layers) or tuple(
            FULL_ATTENTION if i % 4 == 0 else SLIDING_ATTENTION for i in range(layers))
        return DenseSpec(**common, sliding_window=window, layer_types=types if SLIDING_ATTENTION in types else (),
                         both_masks=True)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        # CwmConfig requires an int bos_token_id: keep one inside the tiny vocabulary
        return {**tiny_dims(data, sliding_window=4), "bos_token_id": 1}


@register
class Jais2(Arcee):
    """jais2 (Jais-2-8B / 70B): arcee's non-gated MLP (up_proj -> ``hidden_act``, default relu2 -> down_proj, as
    NemotronMLP) with ``mlp_bias`` (default true), ``attention_bias`` (default true) on q/k/v/o, and nn.LayerNorm
    (weight and bias, ``layer_norm_eps``) for the input, post-attention and final norms."""

    name = "jais2"
    model_types = ("jais2",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        defaults = {"attention_bias": True, "mlp_bias": True}
        spec = super().spec({**defaults, **{k: v for k, v in data.items() if v is not None}}, name)
        return spec.model_copy(update={"norm": "layernorm"})
