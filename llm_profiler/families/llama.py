"""The Llama family: llama, mistral, qwen2, qwen3 (decoder-only, pre-RMSNorm, RoPE, gated SiLU MLP).

``LlamaStyle`` is also the template other Llama-like families subclass: it builds the graph from
overridable pieces (embedding, layer parts, final norm, head), so a family states only what differs.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..formula import Formula
from ..graph import Graph, Node, NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, MLP
from ..ops import Counts
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec
from . import register
from .base import Family
from .fields import Fields


class LlamaStyle(Family):
    """Graph template for pre-norm decoders with RoPE: override the ``*_parts`` methods to vary it."""

    base = "model"  # the base model's module path
    layer_prefix = "model.layers."

    # --- graph ------------------------------------------------------------------------------------
    def graph(self, spec: ArchSpec) -> Graph:
        nodes: list[Node] = [part.at("") for part in self.head_of_model_parts(spec)]
        templates: dict[str, list[Part]] = {}
        for layer in range(spec.num_layers):
            layer_type = spec.layer_type(layer)
            if layer_type not in templates:  # one template per layer type: built once, stamped on each layer
                templates[layer_type] = self.layer_parts(spec, layer_type)
            prefix = f"{self.layer_prefix}{layer}"
            nodes.extend(part.at(prefix, layer) for part in templates[layer_type])
        nodes.extend(part.at("") for part in self.tail_parts(spec))
        return Graph(spec=spec, nodes=tuple(nodes), layer_prefix=self.layer_prefix)

    def keys(self, spec: ArchSpec, layer_type: str) -> Formula:
        if layer_type == SLIDING_ATTENTION:
            assert spec.sliding_window is not None
            return blk.keys_sliding(spec.sliding_window)
        return blk.keys_full()

    def cached(self, spec: ArchSpec, layer_type: str) -> Formula:
        if layer_type == SLIDING_ATTENTION:
            assert spec.sliding_window is not None
            return blk.cached_sliding(spec.sliding_window)
        return blk.cached_full()

    def mask_counts(self, spec: ArchSpec) -> Counts:
        """position ids, then one mask per attention type the base model builds."""
        types = set(spec.layer_types) or {FULL_ATTENTION}
        out = blk.position_ids()
        if FULL_ATTENTION in types:
            out = out + blk.causal_mask(self.keys(spec, FULL_ATTENTION))
        if SLIDING_ATTENTION in types:
            out = out + blk.causal_mask(self.keys(spec, SLIDING_ATTENTION), spec.sliding_window)
        return out

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        b = self.base
        parts = [
            Part(f"{b}.embed_tokens", f"{b}.embed_tokens", NodeKind.EMBEDDING,
                 blk.embedding(spec.vocab_size, spec.hidden_size)),
            Part(f"{b}:positions", b, NodeKind.POSITIONS, self.mask_counts(spec)),
        ]
        if spec.rotary_dim:
            parts.append(Part(f"{b}.rotary_emb", f"{b}.rotary_emb", NodeKind.ROTARY, blk.rotary_table(spec.rotary_dim)))
        return parts

    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        if spec.norm == "layernorm":
            return blk.layer_norm(rows, n)
        return blk.rms_norm(rows, n)

    def attention_parts(self, spec: ArchSpec, layer_type: str) -> list[Part]:
        h, H, KV, D = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
        t = blk.TOKENS
        keys = self.keys(spec, layer_type)
        a = ".self_attn"
        parts = [Part(f"{a}.q_proj", f"{a}.q_proj", NodeKind.LINEAR, blk.linear(t, h, H * D, spec.qkv_bias), ATTN)]
        if spec.qk_norm:
            parts.append(Part(f"{a}.q_norm", f"{a}.q_norm", NodeKind.NORM, self.norm(spec, t * H, D), ATTN))
        parts.append(Part(f"{a}.k_proj", f"{a}.k_proj", NodeKind.LINEAR, blk.linear(t, h, KV * D, spec.qkv_bias), ATTN))
        if spec.qk_norm:
            parts.append(Part(f"{a}.k_norm", f"{a}.k_norm", NodeKind.NORM, self.norm(spec, t * KV, D), ATTN))
        parts.append(Part(f"{a}.v_proj", f"{a}.v_proj", NodeKind.LINEAR, blk.linear(t, h, KV * D, spec.qkv_bias), ATTN))
        if spec.rotary_dim:
            rope = blk.apply_rope(H, spec.rotary_dim) + blk.apply_rope(KV, spec.rotary_dim)
            parts.append(Part(f"{a}:rope", a, NodeKind.ROPE, rope, ATTN))
        parts += [
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(KV, D, self.cached(spec, layer_type)), ATTN),
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=KV), ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=KV), ATTN),
            Part(f"{a}.o_proj", f"{a}.o_proj", NodeKind.LINEAR, blk.linear(t, H * D, h, spec.o_bias), ATTN),
        ]
        return parts

    def mlp_parts(self, spec: ArchSpec, layer_type: str) -> list[Part]:
        h, inter, t = spec.hidden_size, spec.intermediate_size, blk.TOKENS
        m = ".mlp"
        return [
            Part(f"{m}.gate_proj", f"{m}.gate_proj", NodeKind.LINEAR, blk.linear(t, h, inter, spec.mlp_bias), MLP),
            Part(f"{m}.act_fn", f"{m}.act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
            Part(f"{m}.up_proj", f"{m}.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, spec.mlp_bias), MLP),
            Part(f"{m}:gate_mul", m, NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
            Part(f"{m}.down_proj", f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, spec.mlp_bias), MLP),
        ]

    def layer_parts(self, spec: ArchSpec, layer_type: str) -> list[Part]:
        h, t = spec.hidden_size, blk.TOKENS
        return [
            Part(".input_layernorm", ".input_layernorm", NodeKind.NORM, self.norm(spec, t, h)),
            *self.attention_parts(spec, layer_type),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(h)),
            Part(".post_attention_layernorm", ".post_attention_layernorm", NodeKind.NORM, self.norm(spec, t, h)),
            *self.mlp_parts(spec, layer_type),
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        head = blk.lm_head(blk.TOKENS, spec.hidden_size, spec.vocab_size, tied=spec.tie_word_embeddings)
        return [
            Part(f"{self.base}.norm", f"{self.base}.norm", NodeKind.NORM, self.norm(spec, blk.TOKENS, spec.hidden_size)),
            Part("lm_head", "lm_head", NodeKind.LM_HEAD, head),
        ]


@register
class Llama(LlamaStyle):
    """llama, mistral, qwen2, qwen3. Quirks, all from the transformers config classes:

    - head_dim: explicit when given; else hidden/heads (llama, mistral, qwen2) but 128 for qwen3.
    - biases: llama/qwen3 ``attention_bias`` on q, k, v and o; qwen2 always has q/k/v bias, never o;
      llama's ``mlp_bias`` on the three MLP projections.
    - qwen3 normalises q and k per head (q_norm / k_norm over head_dim).
    - sliding windows: mistral's ``sliding_window`` (null = none) applies to every layer; qwen2/qwen3 use
      one only with ``use_sliding_window``, on layers >= ``max_window_layers`` (or per ``layer_types``).
    - RoPE scaling types (linear, dynamic at short context, yarn, llama3) change no count here.
    """

    name = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        model_type = data["model_type"]
        f = Fields(data, model_type)
        hidden = f.int("hidden_size")
        heads, kv_heads, head_dim = f.attention_heads(hidden, head_dim_default=128 if model_type == "qwen3" else None)
        layers = f.int("num_hidden_layers")

        qkv_bias = o_bias = False
        if model_type == "qwen2":
            qkv_bias = True
        elif model_type in ("llama", "qwen3"):
            qkv_bias = o_bias = f.bool("attention_bias", default=False)

        window: int | None = None
        layer_types: tuple[str, ...] = ()
        if model_type == "mistral":
            window = f.int("sliding_window", default=None, minimum=2) if "sliding_window" in data else 4096
            if window is not None:
                layer_types = (SLIDING_ATTENTION,) * layers
        elif model_type in ("qwen2", "qwen3") and f.bool("use_sliding_window", default=False):
            window = f.int("sliding_window", default=4096, minimum=2)
            given = f.raw("layer_types")
            if given is not None:
                layer_types = self._layer_types(given, layers, model_type)
            else:
                first = f.int("max_window_layers", default=28, minimum=0)
                layer_types = tuple(SLIDING_ATTENTION if i >= first else FULL_ATTENTION for i in range(layers))
            if SLIDING_ATTENTION not in layer_types:
                window, layer_types = None, ()

        return ArchSpec(
            model_type=model_type,
            family=self.name,
            name=name,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=f.int("intermediate_size"),
            vocab_size=f.int("vocab_size"),
            activation=read_activation(f, "hidden_act", default="silu"),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            mlp_bias=f.bool("mlp_bias", default=False) if model_type == "llama" else False,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=False),
            rotary_dim=head_dim,
            sliding_window=window,
            layer_types=layer_types,
            qk_norm=model_type == "qwen3",
        )

    @staticmethod
    def _layer_types(given: Any, layers: int, model_type: str) -> tuple[str, ...]:
        if not isinstance(given, list) or len(given) != layers or any(
            t not in (FULL_ATTENTION, SLIDING_ATTENTION) for t in given
        ):
            raise ConfigError(
                f"{model_type} config field 'layer_types' must list {layers} entries of "
                f"'{FULL_ATTENTION}' / '{SLIDING_ATTENTION}'"
            )
        return tuple(given)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        heads = data.get("num_attention_heads", 4)
        kv = data.get("num_key_value_heads") or heads
        tiny_kv = 4 if kv == heads else (1 if kv == 1 else 2)
        out = {**data, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": tiny_kv, "vocab_size": 128}
        if data.get("head_dim") is not None:
            out["head_dim"] = 24  # keep an explicit head_dim that differs from hidden/heads (64/4 = 16)
        if data.get("sliding_window") is not None:
            out["sliding_window"] = 4
        if data.get("use_sliding_window"):
            out["max_window_layers"] = 1
        out.pop("layer_types", None)
        return out
