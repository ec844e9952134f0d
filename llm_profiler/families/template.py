"""The decoder template every family builds on: head of model, one layer loop, tail.

``DecoderTemplate.graph`` walks ``spec.layers`` (one ``LayerSpec`` per layer), builds one set of parts per
distinct layer key (by default the LayerSpec itself: equal layers share their parts, so a 126-layer model
costs a handful of templates) and stamps it on each layer's module path. A family overrides only the
pieces that differ: ``attention_parts``, ``mlp_parts`` / ``moe_parts``, ``layer_parts`` (the order of norms
and residuals), ``head_of_model_parts``, ``tail_parts``, ``norm``, or ``layer_key`` when something outside
the LayerSpec makes layers differ (GPT-2's per-layer attention scaling).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import Formula
from ..graph import Graph, Node, NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, EMBED_GROUP, MLP
from ..ops import Counts
from ..spec import SLIDING_ATTENTION, ArchSpec, LayerSpec, Mixer
from .base import Family
from .fields import Fields


def decoder_fields(f: Fields, family: str, name: str, *, head_dim_default: int | None = None,
                   activation_default: str = "silu", tie_default: bool = False,
                   kv_default: int | None = None, intermediate_default: int | None = None) -> dict[str, Any]:
    """The ArchSpec fields every Llama-style config spells the same way: sizes, heads (``Fields.
    attention_heads``), ``hidden_act``, ``tie_word_embeddings`` and the rotary width (head_dim x
    ``partial_rotary_factor``). A family adds or overrides its own quirks: ``ArchSpec(**decoder_fields(...),
    qk_norm=True)``. ``kv_default``: the KV heads when the config omits them (default: the heads);
    ``intermediate_default``: the ``intermediate_size`` when omitted (default: required)."""
    hidden = f.int("hidden_size")
    heads, kv_heads, head_dim = f.attention_heads(hidden, kv_default=kv_default, head_dim_default=head_dim_default)
    inter: dict[str, int] = {} if intermediate_default is None else {"default": intermediate_default}
    factor = f.float("partial_rotary_factor", default=1.0)
    if not 0 < factor <= 1:
        raise ConfigError(f"{f.model_type} config field 'partial_rotary_factor' must be in (0, 1], got {factor}")
    return {
        "model_type": f.model_type, "family": family, "name": name, "hidden_size": hidden,
        "num_layers": f.int("num_hidden_layers"), "num_heads": heads, "num_kv_heads": kv_heads,
        "head_dim": head_dim, "intermediate_size": f.int("intermediate_size", **inter),
        "vocab_size": f.int("vocab_size"),
        "activation": read_activation(f, "hidden_act", default=activation_default),
        "tie_word_embeddings": f.bool("tie_word_embeddings", default=tie_default),
        "rotary_dim": int(head_dim * factor),
    }


def every_layer_window(f: Fields, layers: int) -> dict[str, Any]:
    """``sliding_window`` (absent or null = none) on every layer (mask and cache), as Mistral: the ArchSpec's
    ``sliding_window`` and ``layer_types``."""
    window = f.int("sliding_window", default=None, minimum=2)
    return {"sliding_window": window, "layer_types": (SLIDING_ATTENTION,) * layers if window is not None else ()}


def tiny_dims(data: dict[str, Any], *, layers: int = 2, **extra: Any) -> dict[str, Any]:
    """The one tiny-dims rule for real CPU runs: hidden 64, intermediate 96, 4 heads (KV heads 4, 2 or 1 as
    the real model has MHA, GQA or MQA), vocabulary 128, ``layers`` layers; an explicit head_dim becomes 24
    (not 64/4, so the two readings of head_dim stay apart); a sliding window 4 and a chunk 4 (they bind at
    the test shapes). ``extra`` overrides or adds fields."""
    heads = data.get("num_attention_heads") or 4
    kv = data.get("num_key_value_heads") or heads
    out = {**data, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": layers,
           "num_attention_heads": 4, "num_key_value_heads": 4 if kv == heads else (1 if kv == 1 else 2),
           "vocab_size": 128}
    if data.get("head_dim") is not None:
        out["head_dim"] = 24
    for window in ("sliding_window", "attention_chunk_size"):
        if data.get(window):
            out[window] = 4
    if isinstance(data.get("layer_types"), list):
        out["layer_types"] = _first_of_each(data["layer_types"], layers)
        out["num_hidden_layers"] = len(out["layer_types"])
    out.update(extra)
    return out


def part(suffix: str, kind: str, counts: Counts, block: str | None = None, **tags: str) -> Part:
    """A Part whose module is its path up to the ``:`` (``.self_attn:scores`` runs in ``.self_attn``; a
    plain ``.mlp.fc1`` is its own module): the naming rule of every family."""
    return Part(suffix, suffix.partition(":")[0], kind, counts, block, **tags)


def renamed(parts: list[Part], names: dict[str, str]) -> list[Part]:
    """``parts`` with the suffixes in ``names`` renamed (the module follows the path: ``part``'s rule)."""
    return [replace(p, suffix=names[p.suffix], module_suffix=names[p.suffix].partition(":")[0])
            if p.suffix in names else p for p in parts]


def embed_add_part(base: str, hidden: int) -> Part:
    """Token embeddings + learned position embeddings in the base model ``base``: B*S*hidden ADD."""
    return part(f"{base}:embed_add", NodeKind.ELEMENTWISE, ops.elementwise("add", blk.TOKENS * hidden),
                group=EMBED_GROUP, label="embed")


def attention_core(a: str, heads: int, head_dim: int, keys: Formula, cached: Formula, *,
                   kv_heads: int | None = None, scores: Counts | None = None) -> list[Part]:
    """The eager attention of module ``a`` after its projections: the KV cache (``kv_heads``, default
    ``heads``, heads of ``cached`` tokens), the scores (``scores`` replaces the scaled, masked q @ k^T),
    the softmax and probs @ v."""
    kv = heads if kv_heads is None else kv_heads
    if scores is None:
        scores = blk.attn_scores(heads, head_dim, keys, kv_heads=kv)
    return [
        part(f"{a}:kv_cache", NodeKind.KV_CACHE, blk.kv_cache(kv, head_dim, cached), ATTN),
        part(f"{a}:scores", NodeKind.ATTN_SCORES, scores, ATTN),
        part(f"{a}:softmax", NodeKind.ATTN_SOFTMAX, blk.attn_softmax(heads, keys), ATTN),
        part(f"{a}:context", NodeKind.ATTN_CONTEXT, blk.attn_context(heads, head_dim, keys, kv_heads=kv), ATTN),
    ]


def gated_mlp(spec: ArchSpec, m: str = ".mlp", intermediate: int | None = None) -> list[Part]:
    """The gated MLP of module ``m``: down(act(gate(x)) * up(x)), ``intermediate`` wide (default the spec's),
    every projection with ``spec.mlp_bias``."""
    h, t, bias = spec.hidden_size, blk.TOKENS, spec.mlp_bias
    inter = spec.intermediate_size if intermediate is None else intermediate
    return [
        part(f"{m}.gate_proj", NodeKind.LINEAR, blk.linear(t, h, inter, bias), MLP),
        part(f"{m}.act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
        part(f"{m}.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, bias), MLP),
        part(f"{m}:gate_mul", NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
        part(f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, bias), MLP),
    ]


def plain_mlp(spec: ArchSpec, up: str, act: str, down: str, linear: Any = blk.linear) -> list[Part]:
    """A non-gated MLP: ``up`` (hidden -> intermediate), the activation module ``act``, ``down`` back; both
    projections carry ``spec.mlp_bias``; ``linear`` builds them (a family's own linear)."""
    h, inter, t, bias = spec.hidden_size, spec.intermediate_size, blk.TOKENS, spec.mlp_bias
    return [
        part(up, NodeKind.LINEAR, linear(t, h, inter, bias), MLP),
        part(act, NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
        part(down, NodeKind.LINEAR, linear(t, inter, h, bias), MLP),
    ]


def _first_of_each(types: list[Any], minimum: int) -> list[Any]:
    """The shortest prefix of a per-layer list holding every kind it has (at least ``minimum`` entries)."""
    kinds, count = set(types), len(types)
    seen: set[Any] = set()
    for i, t in enumerate(types):
        seen.add(t)
        if seen == kinds:
            count = i + 1
            break
    return list(types[:max(minimum, count)])


class DecoderTemplate(Family):
    """Graph template for pre-norm decoders with RoPE: override the ``*_parts`` methods to vary it."""

    base = "model"  # the base model's module path
    layer_prefix = "model.layers."
    embed_name = "embed_tokens"  # the token embedding under ``base``
    final_norm_name = "norm"  # the final norm under ``base``

    # --- graph ------------------------------------------------------------------------------------
    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data)

    def graph(self, spec: ArchSpec) -> Graph:
        nodes: list[Node] = [part.at("") for part in self.head_of_model_parts(spec)]
        templates: dict[Hashable, list[Part]] = {}
        for index, layer in enumerate(spec.layers):
            key = self.layer_key(spec, index, layer)
            parts = templates.get(key)
            if parts is None:  # built once per distinct layer, stamped on each layer that has it
                parts = templates[key] = self.layer_parts(spec, layer) if key is layer else self.keyed_layer_parts(spec, key)
            prefix = f"{self.layer_prefix}{index}"
            nodes.extend(part.at(prefix, index) for part in parts)
        nodes.extend(part.at("") for part in self.tail_parts(spec))
        return Graph(spec=spec, nodes=tuple(nodes), layer_prefix=self.layer_prefix)

    def layer_key(self, spec: ArchSpec, index: int, layer: LayerSpec) -> Hashable:
        """What makes layers share parts: the LayerSpec (override with ``keyed_layer_parts`` for more)."""
        return layer

    def keyed_layer_parts(self, spec: ArchSpec, key: Any) -> list[Part]:
        raise NotImplementedError(f"{type(self).__name__} overrides layer_key but not keyed_layer_parts")

    def keys(self, spec: ArchSpec, layer: LayerSpec) -> Formula:
        """Keys each query attends to: the window's keys on a sliding layer, else all."""
        if layer.mixer.window is not None:
            return blk.keys_sliding(layer.mixer.window)
        return blk.keys_full()

    def cached(self, spec: ArchSpec, layer: LayerSpec) -> Formula:
        """Tokens the layer's cache holds after the forward."""
        if layer.mixer.window is not None:
            return blk.cached_sliding(layer.mixer.window)
        return blk.cached_full()

    def mask_counts(self, spec: ArchSpec) -> Counts:
        """position ids, then one mask per attention type the base model builds (full, then sliding)."""
        windows = sorted({layer.mixer.window or 0 for layer in spec.layers})
        out = blk.position_ids()
        for window in windows:
            layer = LayerSpec(mixer=Mixer(kind="sliding_attention", window=window) if window else Mixer())
            out = out + blk.causal_mask(self.keys(spec, layer), window or None)
        return out

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        b = self.base
        parts = [
            Part(f"{b}.{self.embed_name}", f"{b}.{self.embed_name}", NodeKind.EMBEDDING,
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

    def norm_part(self, spec: ArchSpec, suffix: str, **tags: str) -> Part:
        """The norm module ``suffix`` (``self.norm``) over the hidden states of every token."""
        return part(suffix, NodeKind.NORM, self.norm(spec, blk.TOKENS, spec.hidden_size), **tags)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, KV, D = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
        t = blk.TOKENS
        keys = self.keys(spec, layer)
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
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(KV, D, self.cached(spec, layer)), ATTN),
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=KV), ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=KV), ATTN),
            Part(f"{a}.o_proj", f"{a}.o_proj", NodeKind.LINEAR, blk.linear(t, H * D, h, spec.o_bias), ATTN),
        ]
        return parts

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return gated_mlp(spec)

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, t = spec.hidden_size, blk.TOKENS
        return [
            Part(".input_layernorm", ".input_layernorm", NodeKind.NORM, self.norm(spec, t, h)),
            *self.attention_parts(spec, layer),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(h)),
            Part(".post_attention_layernorm", ".post_attention_layernorm", NodeKind.NORM, self.norm(spec, t, h)),
            *self.ffn_parts(spec, layer),
        ]

    def ffn_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        """The layer's FFN: ``moe_parts`` on a MoE layer, else ``mlp_parts``."""
        return self.moe_parts(spec, layer) if layer.moe else self.mlp_parts(spec, layer)

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        raise NotImplementedError(f"{type(self).__name__} has MoE layers but no moe_parts")

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        head = blk.lm_head(blk.TOKENS, spec.hidden_size, spec.vocab_size, tied=spec.tie_word_embeddings,
                           bias=spec.lm_head_bias)
        return [
            part(f"{self.base}.{self.final_norm_name}", NodeKind.NORM, self.norm(spec, blk.TOKENS, spec.hidden_size)),
            Part("lm_head", "lm_head", NodeKind.LM_HEAD, head),
        ]


LlamaStyle = DecoderTemplate  # the name the families knew it by
