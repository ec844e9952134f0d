"""The Mixtral family, and ``SparseMoEStyle``: the Llama template with a sparse MoE block as the MLP.

Mixtral is a Mistral decoder whose MLP is a softmax top-k MoE (``MixtralSparseMoeBlock``): router
``mlp.gate`` (a bias-free linear to the experts, softmax, top-k, the top-k renormalised), routed experts
``mlp.experts`` (gated SiLU, run as batched matmuls by the validation module). Blocks: graph/moe.py.
"""

from __future__ import annotations

from typing import Any

from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.moe import MoESpec, sparse_moe_parts
from ..spec import SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate as LlamaStyle


class SparseMoEStyle(LlamaStyle):
    """The template whose MoE layers (``LayerSpec.ffn``) run ``sparse_moe_parts``; dense layers keep the
    gated MLP of ``intermediate_size``."""

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, MoESpec)
        return sparse_moe_parts(spec)


def moe_tiny_dims(data: dict[str, Any]) -> dict[str, Any]:
    """Tiny attention dims shared by the MoE families (GQA kept when the real model has it)."""
    heads = data.get("num_attention_heads", 4)
    kv = data.get("num_key_value_heads") or heads
    tiny_kv = 4 if kv == heads else (1 if kv == 1 else 2)
    return {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": tiny_kv,
            "vocab_size": 128}


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
        hidden = f.int("hidden_size")
        heads, kv_heads, head_dim = f.attention_heads(hidden)
        layers = f.int("num_hidden_layers")
        window = f.int("sliding_window", default=None, minimum=2)
        inter = f.int("intermediate_size")
        return MoESpec(
            model_type="mixtral", family=self.name, name=name,
            hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
            intermediate_size=inter, vocab_size=f.int("vocab_size"), activation=read_activation(f, "hidden_act", default="silu"),
            tie_word_embeddings=f.bool("tie_word_embeddings", default=False), rotary_dim=head_dim,
            sliding_window=window, layer_types=(SLIDING_ATTENTION,) * layers if window is not None else (),
            num_experts=f.int("num_local_experts", "num_experts"), experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=inter, norm_topk_prob=True,
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, **moe_tiny_dims(data), "intermediate_size": 96, "num_local_experts": 4,
               "num_experts_per_tok": 2}
        out.pop("num_experts", None)
        if data.get("head_dim") is not None:
            out["head_dim"] = 24  # keep an explicit head_dim that differs from hidden/heads
        if data.get("sliding_window") is not None:
            out["sliding_window"] = 4
        return out
