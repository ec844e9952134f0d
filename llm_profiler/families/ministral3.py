"""The Ministral-3 family (ministral3: the text model of the mistral3 Ministral-3 / Magistral checkpoints).

A Mistral decoder (pre-RMSNorm, GQA with an explicit head_dim, default 128; no biases; gated SiLU MLP;
``sliding_window`` null = full attention, a number = every layer sliding) with the Llama-4-style attention
scaling of the query, in ``Ministral3Attention.forward`` after the rotation and before the cache:

    scale = 1 + llama_4_scaling_beta * log(1 + floor(position_ids / original_max_position_embeddings))
    q = q * scale[:, None, :, None]

over the S positions (S DIV, S floor, S ADD, S log, S MULT, S ADD), then B*S*H*D MULT. Both values come
from ``rope_parameters`` (yarn by default: its factors change the tables, not their count).
Missing fields take Ministral3Config's defaults (34 layers, hidden 4096, 8,489,553,920 parameters; the
default ``rope_parameters`` are yarn with factor 16 over 16384 positions and ``llama_4_scaling_beta`` 0.1).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .. import ops
from ..errors import ConfigError
from ..formula import S
from ..graph import NodeKind
from ..graph import attention_variants as av
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, every_layer_window, tiny_dims

DEFAULT_ROPE = {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0, "original_max_position_embeddings": 16384,
                "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1}


class Ministral3Spec(ArchSpec):
    scaling_beta: float  # rope_parameters.llama_4_scaling_beta
    scaling_positions: int = Field(gt=0)  # rope_parameters.original_max_position_embeddings


@register
class Ministral3(DecoderTemplate):
    name = "ministral3"
    model_types = ("ministral3",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "ministral3")
        common = decoder_fields(f, self.name, name, head_dim_default=128)
        rope = data.get("rope_parameters") or DEFAULT_ROPE
        if not isinstance(rope, dict):
            raise ConfigError("ministral3 config field 'rope_parameters' must be an object")
        r = Fields(rope, "ministral3 rope_parameters")
        if rope.get("llama_4_scaling_beta") is None or rope.get("original_max_position_embeddings") is None:
            raise ConfigError("ministral3 config field 'rope_parameters' needs 'llama_4_scaling_beta' and "
                              "'original_max_position_embeddings': transformers scales the queries with both")
        return Ministral3Spec(
            **{**common, "rotary_dim": common["head_dim"]}, **every_layer_window(f, common["num_layers"]),
            scaling_beta=r.float("llama_4_scaling_beta"),
            scaling_positions=r.int("original_max_position_embeddings", minimum=1),
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        H, D, a = spec.num_heads, spec.head_dim, ".self_attn"
        # positions / original_max, floor, 1 +, log, beta *, 1 + (S each); q * scale (B*S*H*D)
        scale = (ops.elementwise("div", S) + av.floor(S) + ops.elementwise("add", S) + ops.elementwise("log", S)
                 + ops.elementwise("mul", S) + ops.elementwise("add", S) + ops.elementwise("mul", blk.TOKENS * H * D))
        out: list[Part] = []
        for p in super().attention_parts(spec, layer):
            out.append(p)
            if p.suffix == f"{a}:rope":
                out.append(Part(f"{a}:temperature", a, NodeKind.ELEMENTWISE, scale, ATTN))
        return out

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        rope = data.get("rope_parameters") or DEFAULT_ROPE
        # original_max_position_embeddings 4: the floor steps within the test shapes
        return tiny_dims(data, rope_parameters={**rope, "original_max_position_embeddings": 4})
