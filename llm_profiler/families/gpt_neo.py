"""The GPT-Neo family (GPT-Neo 125M / 1.3B / 2.7B): GPT-2-like with learned positions, unscaled attention and
local (banded) layers that still cache and score every key."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import B, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, EMBED_GROUP
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import plain_mlp, renamed


class GPTNeoSpec(DenseSpec):
    max_positions: int  # rows of the learned position table wpe


@register
class GPTNeo(DenseTemplate):
    """gpt_neo. Quirks, all from transformers' GPTNeoConfig / modeling_gpt_neo:

    - learned positions ``wpe`` (S rows, shared by the batch) added to the token embeddings (B*S*hidden ADD).
    - ``attention_types`` (default [[["global", "local"], 12]]) alternate global and local layers; a local
      layer masks keys further than ``window_size`` back with its own bool buffer, but the cache keeps every
      token and the scores span every key: the counts of both kinds are the same.
    - eager attention without scaling: scores = where(band, q @ k^T, min) (a select per score) + mask.
    - q/k/v without bias, ``out_proj`` with bias (under ``attn.attention``); MLP c_fc -> ``activation_function``
      (gelu_new) -> c_proj, biased; ``intermediate_size`` null means 4 * hidden; tied lm_head by default.
    """

    name = "gpt_neo"
    model_types = ("gpt_neo",)
    base = "transformer"
    final_norm_name = "ln_f"
    layer_prefix = "transformer.h."

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "gpt_neo")
        hidden = f.int("hidden_size")
        heads = f.int("num_heads")
        f.divisible(hidden, heads, "hidden_size must be a multiple of num_heads")
        layers = f.int("num_layers")
        kinds = [kind for spec, repeat in (f.raw("attention_types") or [[["global", "local"], layers // 2]])
                 for _ in range(repeat) for kind in spec]
        if len(kinds) != layers or any(k not in ("global", "local") for k in kinds):
            raise ConfigError(f"gpt_neo config field 'attention_types' must expand to {layers} layers of "
                              "'global' / 'local'")
        return GPTNeoSpec(
            model_type="gpt_neo", family=self.name, name=name, hidden_size=hidden, num_layers=layers,
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
            intermediate_size=f.int("intermediate_size", default=4 * hidden), vocab_size=f.int("vocab_size"),
            norm="layernorm", activation=read_activation(f, "activation_function", default="gelu_new"),
            gated_mlp=False, mlp_bias=True, tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            max_positions=f.int("max_position_embeddings", default=2048),
        )

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, GPTNeoSpec)
        b, h = self.base, spec.hidden_size
        return [
            Part(f"{b}.wte", f"{b}.wte", NodeKind.EMBEDDING, blk.embedding(spec.vocab_size, h)),
            Part(f"{b}:positions", b, NodeKind.POSITIONS, self.mask_counts(spec)),
            Part(f"{b}.wpe", f"{b}.wpe", NodeKind.EMBEDDING, blk.embedding(spec.max_positions, h, rows=S)),
            Part(f"{b}:embed_add", b, NodeKind.ELEMENTWISE, ops.elementwise("add", B * S * h), group=EMBED_GROUP,
                 label="embed"),
        ]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, D, t, a = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS, ".attn.attention"
        keys = blk.keys_full()
        band = ops.elementwise("select", B * H * S * keys)  # where(causal / local band, scores, min)
        return [
            *[Part(f"{a}.{x}_proj", f"{a}.{x}_proj", NodeKind.LINEAR, blk.linear(t, h, h, False), ATTN)
              for x in ("q", "k", "v")],
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(H, D, blk.cached_full()), ATTN),
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, scale=False, kv_heads=H) + band,
                 ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}.out_proj", f"{a}.out_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
        ]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".mlp.c_fc", ".mlp.act", ".mlp.c_proj")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return renamed(super().layer_parts(spec, layer), {".input_layernorm": ".ln_1", ".post_attention_layernorm": ".ln_2"})


    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "vocab_size": 128,
               "max_position_embeddings": 64, "window_size": 4, "attention_types": [[["global", "local"], 1]],
               "attention_layers": ["global", "local"]}
        if data.get("intermediate_size") is not None:
            out["intermediate_size"] = 96
        return out
