"""The DBRX family (databricks/dbrx-base and -instruct, 132B total / 36B active): a fused-qkv GQA attention
with clipped q / k / v, bias-free LayerNorms around it, and a fine-grained MoE whose experts loop over the
tokens routed to them (graph/scatter_experts.py)."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import Formula
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.moe import MoESpec
from ..graph.node import ATTN, MLP, NodeKind
from ..graph.scatter_experts import grouped_experts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, attention_core, decoder_fields, part, tiny_dims


class DbrxSpec(MoESpec):
    clip_qkv: float | None = None  # Wqkv's output clamped to [-clip, clip]
    norm_p: float | None = 1.0  # the top-k weights divided by their p-norm (moe_normalize_expert_weights)


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"dbrx config field {key!r} must be an object (a dict of its fields), got {value!r}")
    return value


@register
class Dbrx(DecoderTemplate):
    """dbrx. Quirks (transformers DbrxConfig / modeling_dbrx; missing fields take its defaults):

    - field names: ``d_model``, ``n_heads``, ``n_layers``; ``attn_config`` holds ``kv_n_heads`` and ``clip_qkv``,
      ``ffn_config`` holds ``ffn_hidden_size``, ``moe_num_experts``, ``moe_top_k``, ``ffn_act_fn`` ({"name": ...})
      and ``moe_normalize_expert_weights``. head_dim is d_model / n_heads.
    - attention ``norm_attn_norm.attn``: one ``Wqkv`` projection, clamped to +-``clip_qkv`` (2 CMP per element;
      transformers 5.23 fails on a null clip_qkv, which DBRX checkpoints never have), RoPE, ``out_proj``; the
      norms ``norm_1`` / ``norm_2`` and ``norm_f`` are LayerNorms without bias; the attention's residual add
      is in ``norm_attn_norm``, the FFN's in the block.
    - FFN: ``ffn.router.layer`` logits, softmax over all experts, top-k, the k weights divided by their
      ``moe_normalize_expert_weights``-norm (torch.norm: p = 1 in DBRX; null skips it); ``ffn.experts`` loops
      over the experts hit: gated ``ffn.experts.mlp`` (w1 gate, v1 up, w2 down) on the tokens routed there,
      times their weight, index_add back. The expert mask is a one_hot of E + 1 classes.
    - lm_head never tied (transformers refuses ``tie_word_embeddings``); jitter only in training.
    """

    name = "dbrx"
    model_types = ("dbrx",)
    base = "transformer"
    layer_prefix = "transformer.blocks."
    embed_name = "wte"
    final_norm_name = "norm_f"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f, attn, ffn = Fields(data, "dbrx"), _section(data, "attn_config"), _section(data, "ffn_config")
        fa, ff = Fields(attn, "dbrx attn_config"), Fields(ffn, "dbrx ffn_config")
        act = _section(ffn, "ffn_act_fn").get("name", "silu")
        flat = {"hidden_size": f.int("d_model", "hidden_size", default=2048),
                "num_hidden_layers": f.int("n_layers", "num_hidden_layers", default=24),
                "num_attention_heads": f.int("n_heads", "num_attention_heads", default=16),
                "num_key_value_heads": fa.int("kv_n_heads", default=1), "vocab_size": f.int("vocab_size", default=32000),
                "intermediate_size": ff.int("ffn_hidden_size", default=3584), "hidden_act": act,
                "tie_word_embeddings": f.bool("tie_word_embeddings", default=False)}
        common = decoder_fields(Fields(flat, "dbrx"), self.name, name)
        norm_p = ffn.get("moe_normalize_expert_weights", 1.0)
        return DbrxSpec(**{**common, "rotary_dim": common["head_dim"]}, norm="layernorm",
                        num_experts=ff.int("moe_num_experts", default=4), experts_per_token=ff.int("moe_top_k", default=1),
                        moe_intermediate_size=common["intermediate_size"], norm_topk_prob=norm_p is not None,
                        clip_qkv=fa.float("clip_qkv", default=None), norm_p=None if norm_p is None else ff.float(
                            "moe_normalize_expert_weights"))

    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> ops.Counts:
        return blk.layer_norm(rows, n, bias=False)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, DbrxSpec)
        h, H, KV, D, t = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, blk.TOKENS
        a, width = ".norm_attn_norm.attn", h + 2 * KV * D
        parts = [part(f"{a}.Wqkv", NodeKind.LINEAR, blk.linear(t, h, width, False), ATTN)]
        if spec.clip_qkv is not None:
            parts.append(part(f"{a}:clip_qkv", NodeKind.ELEMENTWISE, ops.clamp(t * width, 2), ATTN))
        parts.append(part(f"{a}:rope", NodeKind.ROPE, blk.apply_rope(H, D) + blk.apply_rope(KV, D), ATTN))
        parts += attention_core(a, H, D, self.keys(spec, layer), self.cached(spec, layer), kv_heads=KV)
        return [*parts, part(f"{a}.out_proj", NodeKind.LINEAR, blk.linear(t, h, h, False), ATTN)]

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, DbrxSpec)
        h, F, E, k, t = spec.hidden_size, spec.moe_intermediate_size, spec.num_experts, spec.experts_per_token, blk.TOKENS
        pairs = t * k
        route = ops.softmax(t, E) + ops.topk(t, E, k)
        if spec.norm_p is not None:  # top / torch.norm(top, p, dim=-1, keepdim=True)
            route = route + ops.vector_norm(t, k, spec.norm_p) + ops.elementwise("div", pairs)
        # one_hot(index, E + 1): its range check (aminmax over the pairs); the mask summed per class over the
        # pairs and compared with 0; per pair, the expert output times its weight, index_add into token order
        mask = ops.aminmax(1, pairs) + ops.reduce_sum(E + 1, pairs) + ops.elementwise("cmp", Formula.const(E + 1))
        scatter = ops.elementwise("mul", pairs * h) + ops.index_add(pairs * h)
        glu = (grouped_experts(pairs, h, F, E, k, "w1") + grouped_experts(pairs, h, F, E, k, "v1")
               + ops.elementwise("mul", pairs * F) + grouped_experts(pairs, F, h, E, k, "w2"))
        return [
            part(".ffn.router.layer", NodeKind.LINEAR, blk.linear(t, h, E, False), MLP),
            part(".ffn", NodeKind.ROUTER, route, MLP),
            part(".ffn.experts.mlp", NodeKind.EXPERTS, glu, MLP),
            part(".ffn.experts.mlp.activation_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, pairs * F), MLP),
            part(".ffn.experts", NodeKind.ELEMENTWISE, mask + scatter, MLP),
        ]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h = spec.hidden_size
        return [
            self.norm_part(spec, ".norm_attn_norm.norm_1"),
            *self.attention_parts(spec, layer),
            part(".norm_attn_norm:residual", NodeKind.RESIDUAL, blk.residual(h, 1)),
            self.norm_part(spec, ".norm_attn_norm.norm_2"),
            *self.ffn_parts(spec, layer),
            part(":residual", NodeKind.RESIDUAL, blk.residual(h, 1)),
        ]

    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """Two transformers 5.23 strictnesses the published checkpoints trip: DbrxAttention reads
        ``attn_config.rope_theta``, a field DbrxAttentionConfig does not declare (filled with 10000 when absent;
        no count depends on it), and DbrxFFNConfig's ``moe_normalize_expert_weights`` must be a float, while
        databricks' config.json writes the integer 1 (made 1.0)."""
        attn, ffn = _section(data, "attn_config"), dict(_section(data, "ffn_config"))
        p = ffn.get("moe_normalize_expert_weights")
        if isinstance(p, int) and not isinstance(p, bool):
            ffn["moe_normalize_expert_weights"] = float(p)
        return {**data, "attn_config": {"rope_theta": 10000.0, **attn}, "ffn_config": ffn}

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        attn, ffn = _section(data, "attn_config"), _section(data, "ffn_config")
        heads = data.get("n_heads") or data.get("num_attention_heads") or 16
        dims = tiny_dims({"num_attention_heads": heads, "num_key_value_heads": attn.get("kv_n_heads") or 1})
        top_k = min(2, int(ffn.get("moe_top_k") or 1))
        rest = {k: v for k, v in data.items() if k not in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
        return {**rest, "d_model": dims["hidden_size"], "n_heads": dims["num_attention_heads"],
                "n_layers": dims["num_hidden_layers"], "vocab_size": dims["vocab_size"],
                "attn_config": {**attn, "kv_n_heads": dims["num_key_value_heads"]},
                "ffn_config": {**ffn, "ffn_hidden_size": dims["intermediate_size"], "moe_num_experts": 4, "moe_top_k": top_k}}
