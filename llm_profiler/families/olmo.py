"""The OLMo (1) family: Llama with parameter-free LayerNorms and optional clipping of q, k and v."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..formula import Formula
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..metrics import ACT, CMP
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import decoder_fields, tiny_dims


class OlmoSpec(DenseSpec):
    clip_qkv: float | None = None


@register
class Olmo(DenseTemplate):
    """olmo. Quirks, all from transformers' OlmoConfig / modeling_olmo:

    - every norm (``input_layernorm``, ``post_attention_layernorm``, ``model.norm``) is OlmoLayerNorm:
      F.layer_norm with no weight and no bias (eps 1e-5): no parameters, no scale or shift ops.
    - ``clip_qkv``: q, k and v clamped to [-c, c] in place (two comparisons per element). aten.clamp is not an
      op the validation measures, so a config with ``clip_qkv`` set is profiled (with a note) but not validated.
    - ``attention_bias`` on q/k/v/o; gated MLP without bias; head_dim as given, else hidden / heads; untied by default.
    """

    name = "olmo"
    model_types = ("olmo",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "olmo")
        common = decoder_fields(f, self.name, name)
        bias = f.bool("attention_bias", default=False)
        clip = f.float("clip_qkv", default=None)
        notes = ("olmo clip_qkv: the clamps of q, k and v are counted as 2 CMP per element (not validated)",) \
            if clip is not None else ()
        return OlmoSpec(**{**common, "rotary_dim": common["head_dim"]}, norm="layernorm", qkv_bias=bias, o_bias=bias,
                        clip_qkv=clip, notes=notes)

    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        return blk.with_params(ops.layer_norm(rows, n, weight=False, bias=False), 0)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        parts = super().attention_parts(spec, layer)
        if not isinstance(spec, OlmoSpec) or spec.clip_qkv is None:
            return parts
        n = blk.TOKENS * (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        clamp = Counts({CMP: 2 * n, ACT: n})  # clamp_(min, max) on q, k and v
        at = next(i for i, p in enumerate(parts) if p.suffix == ".self_attn.v_proj") + 1
        parts.insert(at, Part(".self_attn:clip_qkv", ".self_attn", NodeKind.ELEMENTWISE, clamp, ATTN))
        return parts

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data)
