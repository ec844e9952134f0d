"""The minicpm3 family (openbmb/MiniCPM3-4B), as transformers 5.23 runs it (modeling_minicpm3.py): a Llama
decoder whose attention is DeepSeek-V2's MLA (families/deepseek.py: the latent cache, kv_b_proj re-expanding
every cached token) with quirks of its own:

- rope: the standard rotate_half on the qk_rope dims (not DeepSeek-V2's complex products);
- every layer's MLP is a dense gated MLP (``intermediate_size``); no MoE;
- ``embed_tokens`` scales its output by ``scale_emb`` (Gemma3's scaled embedding: B*S*hidden MULT, a buffer,
  not a parameter);
- each block's output times ``scale_depth / sqrt(num_hidden_layers)`` before its residual add (2*B*S*hidden
  MULT per layer, granite's ``:residual_multiplier`` node);
- the final hidden states divided by ``hidden_size / dim_model_base`` before the LM head (B*S*hidden DIV);
- ``v_head_dim`` defaults to hidden / heads, ``q_lora_rank`` null means a plain ``q_proj``; tied embeddings.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..spec import ArchSpec, LayerSpec, Mixer
from . import register
from .deepseek import Deepseek, DeepseekSpec
from .fields import Fields
from .template import gated_mlp

DEFAULTS = {"vocab_size": 73448, "hidden_size": 2560, "intermediate_size": 6400, "num_hidden_layers": 62,
            "num_attention_heads": 40, "kv_lora_rank": 256, "q_lora_rank": 768, "qk_nope_head_dim": 64,
            "qk_rope_head_dim": 32, "tie_word_embeddings": True}


class MiniCPM3Spec(DeepseekSpec):
    """DeepseekSpec with every layer MLA + a dense MLP (no expert field is read)."""

    n_routed_experts: int = 0
    num_experts_per_tok: int = 0
    n_shared_experts: int = 0
    moe_intermediate_size: int = 0
    first_k_dense_replace: int = 0
    router: Any = "softmax_greedy"

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(layer.model_copy(update={"mixer": Mixer(kind="mla")})
                     for layer in ArchSpec.derive_layers(self))


@register
class MiniCPM3(Deepseek):
    name = "minicpm3"
    model_types = ("minicpm3",)  # type: ignore[assignment]  # Deepseek's holds two

    def spec(self, data: dict[str, Any], name: str = "") -> MiniCPM3Spec:
        full = {**DEFAULTS, **{k: v for k, v in data.items() if v is not None or k == "q_lora_rank"}}
        f = Fields(full, "minicpm3")
        hidden, heads = f.int("hidden_size"), f.int("num_attention_heads")
        v_head = f.int("v_head_dim", default=hidden // heads)
        for field in ("scale_emb", "scale_depth", "dim_model_base"):
            f.float(field, default=1.0)  # type-checked: each scaling runs whatever its value
        # the DeepSeek reader with MiniCPM3's defaults, one (ignored) expert, then its own layers and rope
        base = super().spec({**full, "model_type": "deepseek_v2", "v_head_dim": v_head, "n_routed_experts": 1,
                             "num_experts_per_tok": 1, "first_k_dense_replace": 0})
        fields = {k: getattr(base, k) for k in DeepseekSpec.model_fields if k not in ("layers", "notes")}
        return MiniCPM3Spec(**{**fields, "model_type": "minicpm3", "family": self.name, "name": name,
                               "rope_style": "rotate_half", "n_routed_experts": 0, "num_experts_per_tok": 0,
                               "n_shared_experts": 0, "moe_intermediate_size": 0, "router": "softmax_greedy",
                               "mlp_bias": f.bool("mlp_bias", default=False)}, notes=base.notes)

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        e = f"{self.base}.{self.embed_name}"
        scale = ops.elementwise("mul", blk.TOKENS * spec.hidden_size)  # the embedding times scale_emb
        return [Part(p.suffix, p.module_suffix, p.kind, p.counts + scale) if p.suffix == e else p
                for p in super().head_of_model_parts(spec)]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return gated_mlp(spec)

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        scale = ops.elementwise("mul", 2 * blk.TOKENS * spec.hidden_size)  # both block outputs * residual_scale
        return [*super().layer_parts(spec, layer), Part(":residual_multiplier", "", NodeKind.ELEMENTWISE, scale)]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        scale = ops.elementwise("div", blk.TOKENS * spec.hidden_size)  # hidden / (hidden_size / dim_model_base)
        norm, head = super().tail_parts(spec)
        return [norm, Part(":logits_scaling", "", NodeKind.LM_HEAD, scale), head]

    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 128, "kv_lora_rank": 32,
               "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 12}
        out.pop("head_dim", None)  # MiniCPM3Config sets it to qk_rope_head_dim
        out.pop("qk_head_dim", None)
        if data.get("q_lora_rank", 768) is not None:
            out["q_lora_rank"] = 48
        return out
