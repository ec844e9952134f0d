"""Gemma 4 text models: gemma4_text, and the multimodal gemma4 through its ``text_config`` (as transformers 5.23's
Gemma4ForCausalLM computes it, modeling_gemma4.py).

- Sliding and full layers (``layer_types``; default every 6th full, the last layer forced full). Sliding layers
  have ``head_dim`` and ``num_key_value_heads``; full layers ``global_head_dim`` (default 512) and, when
  ``attention_k_eq_v``, ``num_global_key_value_heads``; with ``attention_k_eq_v`` a full layer has no v_proj:
  its values are the raw k_proj output (before k_norm and RoPE), normed by v_norm. The base model builds the
  full and the sliding mask every forward.
- Attention: q_norm / k_norm (RMSNorm with a weight, ``x * w``: no ``1 + w``), v_norm without weight, scaling
  1.0 (still one multiply), no logit softcap; RoPE on the whole head of q and k.
- RoPE: one table per distinct layer type, each as wide as that type's head: sliding "default"; full
  "proportional" (its partial_rotary_factor zeroes frequencies but the table still spans global_head_dim).
- The layer: input norm, attention, post-attention norm, residual; pre-feedforward norm and the dense gated MLP
  (gelu tanh); with ``enable_moe_block`` a MoE beside it on the same residual input: the MLP output gets
  post_feedforward_layernorm_1; the router (weightless RMSNorm, * scale * hidden**-0.5, proj, softmax over the
  experts, top ``top_k_experts``, renormalised, * per_expert_scale of the chosen), pre_feedforward_layernorm_2,
  the experts (``moe_intermediate_size``, batched), post_feedforward_layernorm_2, the sum of the two; then
  post_feedforward_layernorm, the residual, and the output times ``layer_scalar`` (a buffer).
- Embeddings scaled by sqrt(hidden) in the embedding module; tied head; final logit softcapping.
- Per-layer embeddings (``hidden_size_per_layer_input`` d > 0; the config class default is 256): the base model
  looks every token up in ``embed_tokens_per_layer`` (``vocab_size_per_layer_input`` x L*d, * sqrt(d)), projects
  the embeddings (``per_layer_model_projection``, hidden -> L*d, * hidden**-0.5), norms each layer's d-slice
  (``per_layer_projection_norm``) and averages the two ((a + b) * 2**-0.5); each layer then adds
  ``per_layer_projection(act(per_layer_input_gate(x)) * its slice)``, normed, to the residual.
- KV sharing (``num_kv_shared_layers`` n): the last n layers have no k/v projections, norms or cache (a dummy
  cache layer); each attends to the keys and values the last earlier layer of its type stored this forward
  (as many keys as that type's cache layer returns); with ``use_double_wide_mlp`` their MLP is twice as wide.
- Not supported (a ConfigError says so): bidirectional attention "all", RoPE types other than default /
  proportional.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import Formula
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.moe import expert_activation, routed_experts
from ..graph.node import ATTN, EMBED_GROUP, MLP
from ..ops import Counts
from ..spec import FFN, FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, gated_mlp, part, tiny_dims

# Gemma4TextConfig defaults (transformers 5.23) for the fields a config omits
DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_144, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 30,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "tie_word_embeddings": True, "attention_bias": False, "sliding_window": 512, "final_logit_softcapping": None,
    "hidden_size_per_layer_input": 256, "attention_k_eq_v": False, "num_kv_shared_layers": 0,
    "enable_moe_block": False, "global_head_dim": 512, "use_double_wide_mlp": False,
    "vocab_size_per_layer_input": 262_144,
}
_ROPE_TYPES = ("default", "proportional")


class Gemma4Spec(ArchSpec):
    global_head_dim: int
    global_kv_heads: int
    k_eq_v: bool  # full layers: values = the k_proj output (no v_proj)
    final_softcap: float | None = None
    rope_tables: tuple[int, ...] = ()  # the width of each layer type's rotary table
    experts: int = 0
    top_k: int = 0
    moe_intermediate: int = 0
    per_layer_dim: int = 0  # hidden_size_per_layer_input (0: no per-layer embeddings)
    per_layer_vocab: int = 0
    kv_shared_layers: tuple[int, ...] = ()  # layers that reuse an earlier layer's keys and values
    double_wide_mlp: bool = False  # the KV-shared layers' MLP is 2 * intermediate_size wide

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        out = []
        for i, layer in enumerate(super().derive_layers()):
            inter = self.intermediate_size * (2 if self.double_wide_mlp and i in self.kv_shared_layers else 1)
            ffn = FFN(kind="gated", intermediate=inter) if not self.experts else FFN(
                kind="moe", intermediate=self.moe_intermediate, experts=self.experts, top_k=self.top_k,
                shared_intermediate=inter)  # the dense MLP runs beside the experts
            out.append(layer.model_copy(update={"ffn": ffn}))
        return tuple(out)


@register
class Gemma4(DecoderTemplate):
    """gemma4_text, gemma4 (its text_config): every quirk is in the module docstring."""

    name = "gemma4"
    model_types = ("gemma4_text", "gemma4")

    # --- config -----------------------------------------------------------------------------------
    @staticmethod
    def _text(data: dict[str, Any]) -> dict[str, Any]:
        if data.get("model_type") != "gemma4":
            return data
        text = data.get("text_config") or {}
        if not isinstance(text, dict):
            raise ConfigError("gemma4 config field 'text_config' must be an object")
        return {**text, "model_type": "gemma4_text"}

    def spec(self, data: dict[str, Any], name: str = "") -> Gemma4Spec:
        notes = ["multimodal 'gemma4' config: profiling its language model (text_config, as Gemma4ForCausalLM); "
                 "the vision and audio towers are not counted"] if data.get("model_type") == "gemma4" else []
        full = {**DEFAULTS, **{k: v for k, v in self._text(data).items() if v is not None}}
        f = Fields(full, "gemma4_text")
        if full.get("use_bidirectional_attention") == "all":
            raise ConfigError("gemma4_text config field 'use_bidirectional_attention' = 'all' (bidirectional "
                              "attention) is not supported: its masks differ from the causal decoder's")
        layers, heads = f.int("num_hidden_layers"), f.int("num_attention_heads")
        types = list(f.layer_types(layers) or (SLIDING_ATTENTION if (i + 1) % 6 else FULL_ATTENTION
                                               for i in range(layers)))
        types[-1] = FULL_ATTENTION  # Gemma4TextConfig forces the last layer full
        head_dim, global_dim = f.int("head_dim"), f.int("global_head_dim")
        k_eq_v = f.bool("attention_k_eq_v")
        kv = f.int("num_key_value_heads")
        global_kv = f.int("num_global_key_value_heads", default=None) if k_eq_v else None
        rope = full.get("rope_parameters") or {}
        tables = []
        for kind, width in ((FULL_ATTENTION, global_dim), (SLIDING_ATTENTION, head_dim)):
            rope_type = (rope.get(kind) or {}).get("rope_type", "default" if kind == SLIDING_ATTENTION else "proportional")
            if rope_type not in _ROPE_TYPES:
                raise ConfigError(f"gemma4_text config field 'rope_parameters' ({kind}): rope_type {rope_type!r} is "
                                  f"not supported; supported: {', '.join(_ROPE_TYPES)}")
            if kind in types:
                tables.append(width)
        moe = f.bool("enable_moe_block")
        shared = f.int("num_kv_shared_layers", minimum=0)
        if shared >= layers or shared and set(types[:layers - shared]) != set(types):
            raise ConfigError(f"gemma4_text config field 'num_kv_shared_layers' = {shared}: the layers before the "
                              "shared ones must include a layer of every type in layer_types (they store the keys "
                              "and values the shared layers reuse)")
        ple = f.int("hidden_size_per_layer_input", minimum=0)
        cap = full.get("final_logit_softcapping")
        bias = f.bool("attention_bias")
        return Gemma4Spec(
            model_type="gemma4_text", family=self.name, name=name, hidden_size=f.int("hidden_size"),
            num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
            intermediate_size=f.int("intermediate_size"), vocab_size=f.int("vocab_size"),
            activation=read_activation(f, "hidden_activation", default="gelu_pytorch_tanh"),
            qkv_bias=bias, o_bias=bias, tie_word_embeddings=f.bool("tie_word_embeddings"), rotary_dim=head_dim,
            sliding_window=f.int("sliding_window", minimum=2), layer_types=tuple(types), qk_norm=True,
            global_head_dim=global_dim, global_kv_heads=global_kv or kv, k_eq_v=k_eq_v,
            final_softcap=None if cap is None else f.float("final_logit_softcapping"), rope_tables=tuple(tables),
            experts=f.int("num_experts") if moe else 0, top_k=f.int("top_k_experts") if moe else 0,
            moe_intermediate=f.int("moe_intermediate_size") if moe else 0, per_layer_dim=ple,
            per_layer_vocab=f.int("vocab_size_per_layer_input") if ple else 0,
            kv_shared_layers=tuple(range(layers - shared, layers)),
            double_wide_mlp=f.bool("use_double_wide_mlp"), notes=tuple(notes),
        )

    # --- graph ------------------------------------------------------------------------------------
    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        return blk.rms_norm(rows, n)  # x * rsqrt(mean(x^2) + eps) * w

    def mask_counts(self, spec: ArchSpec) -> Counts:
        assert spec.sliding_window is not None  # the base model builds both masks
        window = spec.sliding_window
        return (blk.position_ids() + blk.causal_mask(blk.keys_full())
                + blk.causal_mask(blk.keys_sliding(window), window))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, Gemma4Spec)
        b, h = self.base, spec.hidden_size
        embed = blk.embedding(spec.vocab_size, h) + ops.elementwise("mul", blk.TOKENS * h)  # * sqrt(hidden)
        tables = Counts()
        for width in spec.rope_tables:
            tables = tables + blk.rotary_table(width)
        parts = [part(f"{b}.embed_tokens", NodeKind.EMBEDDING, embed)]
        if spec.per_layer_dim:  # per-layer embeddings: n = T * L * d elements
            n, t, d = blk.TOKENS * spec.num_layers * spec.per_layer_dim, blk.TOKENS, spec.per_layer_dim
            ple = blk.embedding(spec.per_layer_vocab, spec.num_layers * d) + ops.elementwise("mul", n)  # * sqrt(d)
            # projection * hidden**-0.5; (projection + embeddings) * 2**-0.5
            mix = ops.elementwise("mul", n) + ops.elementwise("add", n) + ops.elementwise("mul", n)
            parts += [
                part(f"{b}.embed_tokens_per_layer", NodeKind.EMBEDDING, ple),
                part(f"{b}.per_layer_model_projection", NodeKind.LINEAR, blk.linear(t, h, spec.num_layers * d, False),
                     group=EMBED_GROUP),
                part(f"{b}.per_layer_projection_norm", NodeKind.NORM, blk.rms_norm(t * spec.num_layers, d),
                     group=EMBED_GROUP),
                part(f"{b}:per_layer_inputs", NodeKind.ELEMENTWISE, mix, group=EMBED_GROUP, label="per-layer inputs"),
            ]
        return parts + [
            part(f"{b}:positions", NodeKind.POSITIONS, self.mask_counts(spec)),
            part(f"{b}.rotary_emb", NodeKind.ROTARY, tables),
        ]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec, shared: bool = False) -> list[Part]:
        """The attention of a layer; ``shared``: a KV-shared layer (q only; keys and values of an earlier layer)."""
        assert isinstance(spec, Gemma4Spec)
        h, H, t, bias = spec.hidden_size, spec.num_heads, blk.TOKENS, spec.qkv_bias
        full = not layer.sliding
        D = spec.global_head_dim if full else spec.head_dim
        KV = spec.global_kv_heads if full else spec.num_kv_heads
        keys, a = self.keys(spec, layer), ".self_attn"
        parts = [
            part(f"{a}.q_proj", NodeKind.LINEAR, blk.linear(t, h, H * D, bias), ATTN),
            part(f"{a}.q_norm", NodeKind.NORM, blk.rms_norm(t * H, D), ATTN),
        ]
        if shared:
            parts.append(part(f"{a}:rope", NodeKind.ROPE, blk.apply_rope(H, D), ATTN))
        else:
            parts.append(part(f"{a}.k_proj", NodeKind.LINEAR, blk.linear(t, h, KV * D, bias), ATTN))
            if not (full and spec.k_eq_v):
                parts.append(part(f"{a}.v_proj", NodeKind.LINEAR, blk.linear(t, h, KV * D, bias), ATTN))
            parts += [
                part(f"{a}.k_norm", NodeKind.NORM, blk.rms_norm(t * KV, D), ATTN),
                part(f"{a}:rope", NodeKind.ROPE, blk.apply_rope(H, D) + blk.apply_rope(KV, D), ATTN),
                part(f"{a}.v_norm", NodeKind.NORM, ops.rms_norm(t * KV, D, weight=False), ATTN),
                part(f"{a}:kv_cache", NodeKind.KV_CACHE, blk.kv_cache(KV, D, self.cached(spec, layer)), ATTN),
            ]
        parts += [
            part(f"{a}:scores", NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=KV), ATTN),
            part(f"{a}:softmax", NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            part(f"{a}:context", NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=KV), ATTN),
            part(f"{a}.o_proj", NodeKind.LINEAR, blk.linear(t, H * D, h, spec.o_bias), ATTN),
        ]
        return parts

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, Gemma4Spec)
        h, t, E, k, inter = spec.hidden_size, blk.TOKENS, spec.experts, spec.top_k, spec.moe_intermediate
        # * scale * hidden**-0.5; softmax, top-k, w / sum(w), * per_expert_scale[chosen]
        router = (ops.elementwise("mul", 2 * t * h) + ops.softmax(t, E) + ops.topk(t, E, k)
                  + ops.reduce_sum(t, k) + ops.elementwise("div", t * k) + ops.elementwise("mul", t * k))
        return [
            *gated_mlp(spec, intermediate=layer.ffn.shared_intermediate),
            self.norm_part(spec, ".post_feedforward_layernorm_1"),
            part(".router.norm", NodeKind.NORM, ops.rms_norm(t, h, weight=False), MLP),
            part(".router", NodeKind.ROUTER, blk.with_params(router, h + E), MLP),
            part(".router.proj", NodeKind.LINEAR, blk.linear(t, h, E, False), MLP),
            self.norm_part(spec, ".pre_feedforward_layernorm_2"),
            part(".experts", NodeKind.EXPERTS, routed_experts(h, inter, E, k), MLP),
            part(".experts.act_fn", NodeKind.ACTIVATION, expert_activation(spec.activation, inter, k), MLP),
            self.norm_part(spec, ".post_feedforward_layernorm_2"),
            part(":combine", NodeKind.ELEMENTWISE, ops.elementwise("add", t * h), MLP),  # MLP + experts
        ]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return gated_mlp(spec, intermediate=layer.ffn.intermediate)

    def layer_key(self, spec: ArchSpec, index: int, layer: LayerSpec) -> Hashable:
        assert isinstance(spec, Gemma4Spec)
        return (layer, index in spec.kv_shared_layers)

    def keyed_layer_parts(self, spec: ArchSpec, key: Any) -> list[Part]:
        assert isinstance(spec, Gemma4Spec)
        layer, shared = key
        h, t, d = spec.hidden_size, blk.TOKENS, spec.per_layer_dim
        parts = [
            self.norm_part(spec, ".input_layernorm"),
            *self.attention_parts(spec, layer, shared),
            self.norm_part(spec, ".post_attention_layernorm"),
            part(":residual", NodeKind.RESIDUAL, blk.residual(h, 3 if d else 2)),
            self.norm_part(spec, ".pre_feedforward_layernorm"),
            *self.ffn_parts(spec, layer),
            self.norm_part(spec, ".post_feedforward_layernorm"),
        ]
        if d:  # per-layer input: projection(act(gate(x)) * this layer's slice), normed, + residual
            parts += [
                part(".per_layer_input_gate", NodeKind.LINEAR, blk.linear(t, h, d, False)),
                part(".act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * d)),
                part(":per_layer_input", NodeKind.ELEMENTWISE, ops.elementwise("mul", t * d)),
                part(".per_layer_projection", NodeKind.LINEAR, blk.linear(t, d, h, False)),
                self.norm_part(spec, ".post_per_layer_input_norm"),
            ]
        return parts + [part(":layer_scalar", NodeKind.ELEMENTWISE, ops.elementwise("mul", t * h))]  # *= scalar

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, Gemma4Spec)
        parts = super().tail_parts(spec)
        if spec.final_softcap is not None:  # logits / cap, tanh, * cap in Gemma4ForCausalLM.forward
            n = blk.TOKENS * spec.vocab_size
            capped = ops.elementwise("div", n) + ops.elementwise("tanh", n) + ops.elementwise("mul", n)
            parts.append(part(":final_softcap", NodeKind.LM_HEAD, capped))
        return parts

    # --- validation -------------------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._text(dict(data))

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(data)
        text = {**DEFAULTS, **self._text(data), "layer_types": list(spec.layer_types)}
        extra: dict[str, Any] = {}
        if spec.kv_shared_layers:  # each type stored before the shared layers, and each shared
            kinds = sorted(set(spec.layer_types), reverse=True)  # sliding first, the last layer full
            extra = {"layer_types": kinds * 2, "num_hidden_layers": 2 * len(kinds), "num_kv_shared_layers": len(kinds)}
        out = tiny_dims(text, head_dim=24, global_head_dim=32, sliding_window=4, vocab_size_per_layer_input=128,
                        **extra)
        if spec.per_layer_dim:
            out["hidden_size_per_layer_input"] = 8
        if spec.k_eq_v:
            out["num_global_key_value_heads"] = 1
        if spec.experts:
            out.update(num_experts=4, top_k_experts=min(2, spec.top_k), moe_intermediate_size=16)
        return out
