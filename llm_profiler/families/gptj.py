"""The GPT-J family: gptj and codegen (CodeGen-1 / CodeGen-2 mono / multi): one LayerNorm feeds attention and
MLP in parallel, rotary over the first ``rotary_dim`` dims of each head from a sin/cos buffer, biased MLP and
lm_head."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import B, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import plain_mlp


@register
class GPTJ(DenseTemplate):
    """gptj, codegen. Quirks, all from transformers' GPTJConfig / CodeGenConfig and their modeling code:

    - legacy names ``n_embd`` / ``n_layer`` / ``n_head`` / ``n_inner`` (null: 4 * n_embd); multi-head attention.
    - ``ln_1`` (LayerNorm with bias) feeds attention and MLP in parallel: out = attn + mlp + x (two ADDs).
    - no rotary_emb module: each attention reads sin / cos rows for its positions from a precomputed buffer
      (gptj: torch.gather of S*rotary_dim elements, position_ids being 1 x S; codegen: an indexing copy, no count) and rotates the
      first ``rotary_dim`` dims of q and k (interleaved pairs: Llama's counts over those dims).
    - scores: q @ k^T, then / sqrt(head_dim) (a DIV per score, not a MULT) and + mask.
    - gptj: separate q/k/v/out projections without bias; codegen: one fused ``qkv_proj`` (hidden -> 3 hidden,
      no bias; heads must split in 4 groups: mp_num = 4).
    - MLP fc_in -> ``activation_function`` (gelu_new) -> fc_out, biased; ``transformer.ln_f``; the lm_head has a
      bias; untied by default.
    """

    name = "gptj"
    model_types = ("gptj", "codegen")
    base = "transformer"
    layer_prefix = "transformer.h."
    final_norm_name = "ln_f"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        model_type = data["model_type"]
        f = Fields(data, model_type)
        hidden = f.int("n_embd", "hidden_size")
        heads = f.int("n_head", "num_attention_heads")
        f.divisible(hidden, heads, "n_embd must be a multiple of n_head")
        if model_type == "codegen":
            f.divisible(heads, 4, "codegen splits the heads in mp_num = 4 groups: n_head must be a multiple of 4")
        head_dim = hidden // heads
        rotary = f.int("rotary_dim", default=64)
        if rotary > head_dim or rotary % 2:
            raise ConfigError(f"{model_type} config field 'rotary_dim' must be even and <= head_dim ({head_dim}), "
                              f"got {rotary}")
        return DenseSpec(
            model_type=model_type, family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("n_layer", "num_hidden_layers"), num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            intermediate_size=f.int("n_inner", default=4 * hidden), vocab_size=f.int("vocab_size"),
            norm="layernorm", activation=read_activation(f, "activation_function", default="gelu_new"),
            gated_mlp=False, mlp_bias=True, tie_word_embeddings=f.bool("tie_word_embeddings", default=False),
            rotary_dim=rotary, lm_head_bias=True,
        )

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        b = self.base
        return [Part(f"{b}.wte", f"{b}.wte", NodeKind.EMBEDDING, blk.embedding(spec.vocab_size, spec.hidden_size)),
                Part(f"{b}:positions", b, NodeKind.POSITIONS, self.mask_counts(spec))]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, D, rd, t, a = spec.hidden_size, spec.num_heads, spec.head_dim, spec.rotary_dim, blk.TOKENS, ".attn"
        keys = blk.keys_full()
        if spec.model_type == "codegen":
            proj = [Part(f"{a}.qkv_proj", f"{a}.qkv_proj", NodeKind.LINEAR, blk.linear(t, h, 3 * h, False), ATTN)]
            table = ops.Counts()  # embed_positions[position_ids]: an indexing copy
        else:
            proj = [Part(f"{a}.{x}_proj", f"{a}.{x}_proj", NodeKind.LINEAR, blk.linear(t, h, h, False), ATTN)
                    for x in ("q", "k", "v")]
            table = ops.elementwise("gather", S * rd)  # torch.gather(embed_positions, 1, ids): ids are 1 x S
        scores = blk.attn_scores(H, D, keys, scale=False, kv_heads=H) + ops.elementwise("div", B * H * S * keys)
        return [
            *proj,
            Part(f"{a}:sincos", a, NodeKind.ROTARY, table, ATTN),  # the table rows, whatever the batch
            Part(f"{a}:rope", a, NodeKind.ROPE, blk.apply_rope(H, rd) * 2, ATTN),
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(H, D, blk.cached_full()), ATTN),
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, scores, ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}.out_proj", f"{a}.out_proj", NodeKind.LINEAR, blk.linear(t, h, h, False), ATTN),
        ]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".mlp.fc_in", ".mlp.act", ".mlp.fc_out")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return [
            Part(".ln_1", ".ln_1", NodeKind.NORM, self.norm(spec, blk.TOKENS, spec.hidden_size)),
            *self.attention_parts(spec, layer),
            *self.ffn_parts(spec, layer),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(spec.hidden_size)),  # attn + mlp + x
        ]


    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "rotary_dim": 8}  # 8 of 16 dims
        if data.get("n_inner") is not None:
            out["n_inner"] = 96
        return out
