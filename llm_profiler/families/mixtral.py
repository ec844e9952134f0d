"""The Mixtral family, and ``SparseMoEStyle``: the Llama template with a sparse MoE block as the MLP.

Mixtral is a Mistral decoder whose MLP is a softmax top-k MoE (``MixtralSparseMoeBlock``): router
``mlp.gate`` (a bias-free linear to the experts, softmax, top-k, the top-k renormalised), routed experts
``mlp.experts`` (gated SiLU, run as batched matmuls by the validation module). Blocks: graph/moe.py.
"""

from __future__ import annotations

from typing import Any

from ..graph.blocks import Part
from ..graph.moe import MoESpec, sparse_moe_parts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, every_layer_window, tiny_dims


class SparseMoEStyle(DecoderTemplate):
    """The template whose MoE layers (``LayerSpec.ffn``) run ``sparse_moe_parts``; dense layers keep the
    gated MLP of ``intermediate_size``."""

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, MoESpec)
        return sparse_moe_parts(spec)


@register
class Mixtral(SparseMoEStyle):
    """mixtral. Quirks (transformers MixtralConfig / modeling_mixtral):

    - ``num_local_experts`` (alias ``num_experts``) experts of ``intermediate_size``, ``num_experts_per_tok``
      of them per token; the top-k probabilities are always renormalised; every layer is MoE.
    - head_dim: explicit when given, else hidden / heads. No biases anywhere.
    - ``sliding_window``: null (the default, and the released checkpoints) = full attention; a number makes
      every layer sliding (as Mistral).
    """

    name = "mixtral"
    model_types = ("mixtral",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "mixtral")
        common = decoder_fields(f, self.name, name)
        return MoESpec(
            **{**common, "rotary_dim": common["head_dim"]}, **every_layer_window(f, common["num_layers"]),
            num_experts=f.int("num_local_experts", "num_experts"), experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=common["intermediate_size"], norm_topk_prob=True,
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in data.items() if k != "num_experts"}
        return tiny_dims(rest, num_local_experts=4, num_experts_per_tok=2)
