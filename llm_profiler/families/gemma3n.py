"""Gemma 3n's language model (``gemma3n_text``, or a multimodal ``gemma3n`` config's ``text_config``), op by op as
transformers 5.23 runs it (``modeling_gemma3n.py``):

- AltUp: the residual is ``altup_num_inputs`` = A streams; the model projects the embeddings into A - 1 more
  (``altup_projections``, each rescaled to the embeddings' RMS magnitude) and averages them back at the end
  (``altup_unembed_projections``, rescaled the same way). Each layer predicts the streams from a router over
  the active one (``altup.router_norm`` / ``modality_router`` / ``prediction_coefs``, tanh, a t x (h x A)(A x A)
  mix), runs the block on the active stream, and corrects all of them (the router again, ``correction_coefs``);
  ``altup_correct_scale`` scales the corrected active stream (``altup`` forward). predict / correct are
  methods, not forwards: their own ops are the decoder layer's.
- Laurel: a low-rank residual (``laurel_rank``) beside attention; (attn + laurel) / sqrt(2).
- Per-layer embeddings: a second table (``vocab_size_per_layer_input`` x layers * ``hidden_size_per_layer_input``,
  scaled by sqrt(Hp)) plus a projection of the embeddings (``per_layer_model_projection``, scaled, RMS-normed),
  summed and scaled by 1/sqrt(2); each layer gates its slice (``per_layer_input_gate``, gelu, * slice,
  ``per_layer_projection``, norm) into the A - 1 inactive streams.
- Attention: q / k norms with a weight, v norm without one, full rotary, scaling 1; sliding / full layers by
  ``layer_types`` (default: every 5th full); both masks every forward. KV sharing: the last
  ``num_kv_shared_layers`` layers have no k / v projections and reuse the keys and values of the last earlier
  layer of their type; their cache layer holds nothing (those tensors are counted once, at their owner).
- MLP: gated, gelu tanh, ``intermediate_size`` per layer; layers with ``activation_sparsity_pattern`` > 0 keep
  the gate's values above mean + std * Normal(0, 1).icdf(sparsity) (relu of the difference).
- Gemma scaling (embeddings * sqrt(h), a weight-only RMSNorm) and final logit soft-capping.
Missing fields take Gemma3nTextConfig's defaults (Gemma 3n E4B's text model).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, MLP
from ..ops import Counts
from ..spec import FFN, FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .gemma import softcap
from .template import DecoderTemplate, part

DEFAULTS: dict[str, Any] = {
    "vocab_size": 262400, "vocab_size_per_layer_input": 262144, "hidden_size": 2048,
    "hidden_size_per_layer_input": 256, "intermediate_size": 16384, "num_hidden_layers": 35,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "sliding_window": 512, "final_logit_softcapping": 30.0, "altup_num_inputs": 4, "altup_correct_scale": True,
    "num_kv_shared_layers": 15, "laurel_rank": 64, "tie_word_embeddings": True}


class Gemma3nSpec(ArchSpec):
    per_layer_vocab: int
    per_layer_hidden: int
    altup_inputs: int
    altup_correct_scale: bool
    laurel_rank: int
    final_softcap: float | None
    kv_modes: tuple[str | None, ...]  # per layer: None, "store" (its K / V are reused) or "reuse"
    sparsity: tuple[float, ...]


@register
class Gemma3n(DecoderTemplate):
    name = "gemma3n"
    model_types = ("gemma3n_text", "gemma3n")

    def spec(self, data: dict[str, Any], name: str = "") -> Gemma3nSpec:
        multimodal = ("multimodal 'gemma3n' config: profiling its language model (text_config, as Gemma3nForCausalLM) "
                      "only; the vision and audio towers are not counted",) if data.get("model_type") == "gemma3n" else ()
        data = self.hf_config(data)
        filled = sorted(k for k in DEFAULTS if k not in data)
        f = Fields({**DEFAULTS, **data}, "gemma3n_text")
        n, h, heads = f.int("num_hidden_layers"), f.int("hidden_size"), f.int("num_attention_heads")
        f.divisible(h, heads, "hidden_size must be a multiple of num_attention_heads")
        inter = f.raw("intermediate_size")
        inters = tuple(inter) if isinstance(inter, list) else (f.int("intermediate_size"),) * n
        types = f.layer_types(n) or tuple(FULL_ATTENTION if (i + 1) % 5 == 0 else SLIDING_ATTENTION for i in range(n))
        sparsity = f.raw("activation_sparsity_pattern")
        if sparsity is None:
            sparsity = [0.95] * (10 if n > 10 else 0) + [0.0] * (n - (10 if n > 10 else 0))
        elif isinstance(sparsity, (int, float)):
            sparsity = [float(sparsity)] * n
        if len(inters) != n or len(sparsity) != n:
            raise ConfigError(f"gemma3n_text config fields 'intermediate_size' and 'activation_sparsity_pattern' "
                              f"must have one entry per layer ({n})")
        window = f.int("sliding_window", minimum=2)
        ffns = [FFN(kind="gated", intermediate=i) for i in inters]
        mixers = {SLIDING_ATTENTION: Mixer(kind="sliding_attention", window=window), FULL_ATTENTION: Mixer()}
        cap = f.raw("final_logit_softcapping")
        notes = multimodal + (("gemma3n_text: fields absent from the config take Gemma3nTextConfig's defaults: "
                               + ", ".join(f"{k}={DEFAULTS[k]}" for k in filled),) if filled else ())
        return Gemma3nSpec(
            model_type="gemma3n_text", family=self.name, name=name, hidden_size=h, num_layers=n, num_heads=heads,
            num_kv_heads=f.int("num_key_value_heads"), head_dim=f.int("head_dim"), intermediate_size=inters[0],
            vocab_size=f.int("vocab_size"), activation=read_activation(f, "hidden_activation", default="gelu"),
            tie_word_embeddings=f.bool("tie_word_embeddings"), rotary_dim=f.int("head_dim"), sliding_window=window,
            layer_types=types, layers=tuple(LayerSpec(mixer=mixers[t], ffn=ffn) for t, ffn in zip(types, ffns)),
            per_layer_vocab=f.int("vocab_size_per_layer_input"), per_layer_hidden=f.int("hidden_size_per_layer_input"),
            altup_inputs=f.int("altup_num_inputs", minimum=2), altup_correct_scale=f.bool("altup_correct_scale"),
            laurel_rank=f.int("laurel_rank"), final_softcap=None if cap is None else float(cap),
            kv_modes=self.kv_modes(types, f.int("num_kv_shared_layers", minimum=0)),
            sparsity=tuple(float(s) for s in sparsity), notes=notes)

    @staticmethod
    def kv_modes(types: tuple[str, ...], shared: int) -> tuple[str | None, ...]:
        """Gemma3nTextConfig.kv_sharing_modes: the last ``shared`` layers reuse the K / V of the last earlier
        layer of their type ("store")."""
        first = len(types) - shared
        if shared == 0:
            return (None,) * len(types)
        if first <= 0 or set(types[:first]) != set(types):
            raise ConfigError("gemma3n_text config field 'num_kv_shared_layers': every layer type must have a layer "
                              "before the shared ones")
        modes: list[str | None] = [None if i < first else "reuse" for i in range(len(types))]
        for t in set(types):
            modes[max(i for i in range(first) if types[i] == t)] = "store"
        return tuple(modes)

    # --- graph ------------------------------------------------------------------------------------
    def layer_key(self, spec: ArchSpec, index: int, layer: LayerSpec) -> Hashable:
        assert isinstance(spec, Gemma3nSpec)
        return layer, spec.kv_modes[index] == "reuse", spec.sparsity[index] > 0

    def keyed_layer_parts(self, spec: ArchSpec, key: Any) -> list[Part]:
        assert isinstance(spec, Gemma3nSpec)
        layer, reuse, sparse = key
        h, A, t, Hp, R = spec.hidden_size, spec.altup_inputs, blk.TOKENS, spec.per_layer_hidden, spec.laurel_rank
        inter = layer.ffn.intermediate
        # predict: router input * 1/h, tanh, streams (t x h x A) @ coefs (A x A), + streams; the block's residuals
        # (+ attn, + laurel, / sqrt 2, + ffw); correct: router input * 1/h, tanh, innovation, coefs + 1,
        # * innovation, + predictions; altup_correct_scale: the active stream * correct_output_scale (altup.forward
        # called as a method: no module hook, the layer's op); the gated per-layer input * its slice; + into the
        # A - 1 inactive streams
        own = (ops.elementwise("mul", 2 * t * h) + ops.elementwise("tanh", t * A) + ops.matmul(h, A, A, batch=t)
               + ops.elementwise("add", A * t * h) + ops.elementwise("add", 2 * t * h) + ops.elementwise("div", t * h)
               + ops.elementwise("add", t * h) + ops.elementwise("tanh", t * A) + ops.elementwise("sub", t * h)
               + ops.elementwise("add", t * A) + ops.elementwise("mul", A * t * h) + ops.elementwise("add", A * t * h)
               + ops.elementwise("mul", t * Hp) + ops.elementwise("add", (A - 1) * t * h))
        if spec.altup_correct_scale:
            own = own + ops.elementwise("mul", t * h)
        return [
            part(".altup.router_norm", NodeKind.NORM, blk.rms_norm(2 * t, h)),  # in predict and in correct
            part(".altup.modality_router", NodeKind.LINEAR, blk.linear(2 * t, h, A, False)),
            part(".altup.prediction_coefs", NodeKind.LINEAR, blk.linear(t, A, A * A, False)),
            self.norm_part(spec, ".input_layernorm"),
            part(".laurel.linear_left", NodeKind.LINEAR, blk.linear(t, h, R, False)),
            part(".laurel.linear_right", NodeKind.LINEAR, blk.linear(t, R, h, False)),
            self.norm_part(spec, ".laurel.post_laurel_norm"),
            part(".laurel", NodeKind.RESIDUAL, ops.elementwise("add", t * h), label="laurel"),
            *self.attention(spec, layer, reuse),
            self.norm_part(spec, ".post_attention_layernorm"),
            self.norm_part(spec, ".pre_feedforward_layernorm"),
            *self.mlp(spec, inter, sparse),
            self.norm_part(spec, ".post_feedforward_layernorm"),
            part(".altup.correction_coefs", NodeKind.LINEAR, blk.linear(t, A, A, False)),
            part(".altup", NodeKind.ELEMENTWISE, blk.with_params(Counts(), h), label="correct_output_scale"),
            part(".per_layer_input_gate", NodeKind.LINEAR, blk.linear(t, h, Hp, False)),
            part(".act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * Hp)),
            part(".per_layer_projection", NodeKind.LINEAR, blk.linear(t, Hp, h, False)),
            self.norm_part(spec, ".post_per_layer_input_norm"),
            part(":residual", NodeKind.RESIDUAL, own, label="altup"),
        ]

    def attention(self, spec: Gemma3nSpec, layer: LayerSpec, reuse: bool) -> list[Part]:
        h, H, KV, D, t, a = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, blk.TOKENS, ".self_attn"
        keys, parts = self.keys(spec, layer), [
            part(f"{a}.q_proj", NodeKind.LINEAR, blk.linear(t, h, H * D, False), ATTN),
            part(f"{a}.q_norm", NodeKind.NORM, blk.rms_norm(t * H, D), ATTN)]
        rope = blk.apply_rope(H, D)
        if not reuse:  # a layer reusing another's K / V has no projections and caches nothing
            v_norm = blk.fusable(ops.rms_norm(t * KV, D, weight=False), t * KV * D, t * KV * D)
            parts += [part(f"{a}.k_proj", NodeKind.LINEAR, blk.linear(t, h, KV * D, False), ATTN),
                      part(f"{a}.k_norm", NodeKind.NORM, blk.rms_norm(t * KV, D), ATTN),
                      part(f"{a}.v_proj", NodeKind.LINEAR, blk.linear(t, h, KV * D, False), ATTN),
                      part(f"{a}.v_norm", NodeKind.NORM, v_norm, ATTN),
                      part(f"{a}:kv_cache", NodeKind.KV_CACHE, blk.kv_cache(KV, D, self.cached(spec, layer)), ATTN)]
            rope = rope + blk.apply_rope(KV, D)
        return [*parts, part(f"{a}:rope", NodeKind.ROPE, rope, ATTN),
                part(f"{a}:scores", NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=KV), ATTN),
                part(f"{a}:softmax", NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
                part(f"{a}:context", NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=KV), ATTN),
                part(f"{a}.o_proj", NodeKind.LINEAR, blk.linear(t, H * D, h, False), ATTN)]

    def mlp(self, spec: Gemma3nSpec, inter: int, sparse: bool) -> list[Part]:
        h, t, m = spec.hidden_size, blk.TOKENS, ".mlp"
        own = blk.gate_product(inter)
        if sparse:  # mean + std * icdf(sparsity) over the gate, relu(gate - cutoff); Normal(0, 1): loc == loc and
            # 0 < scale (2 CMP, each then all()), icdf = loc + scale * erfinv(2 p - 1) * sqrt(2) (3 MULT, 2 ADD)
            scalars = (ops.elementwise("cmp", 2) + ops.reduce_max(2, 1) + ops.elementwise("mul", 3)
                       + ops.elementwise("add", 2) + ops.elementwise("erfinv", 1))
            own = (own + scalars + ops.reduce_mean(t, inter) + ops.std(t, inter) + ops.elementwise("mul", t)
                   + ops.elementwise("add", t) + ops.elementwise("sub", t * inter) + ops.elementwise("relu", t * inter))
        return [
            part(f"{m}.gate_proj", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            part(f"{m}.act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
            part(f"{m}.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            part(f"{m}:gate_mul", NodeKind.ELEMENTWISE, own, MLP),
            part(f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, Gemma3nSpec) and spec.sliding_window is not None
        b, h, t, A, W = self.base, spec.hidden_size, blk.TOKENS, spec.altup_inputs, spec.sliding_window
        per = spec.num_layers * spec.per_layer_hidden  # every layer's slice of a token's per-layer input
        masks = (blk.position_ids() + blk.causal_mask(blk.keys_full())
                 + blk.causal_mask(blk.keys_sliding(W), W))
        return [
            part(f"{b}.embed_tokens", NodeKind.EMBEDDING,
                 blk.embedding(spec.vocab_size, h) + ops.elementwise("mul", t * h)),
            part(f"{b}.embed_tokens_per_layer", NodeKind.EMBEDDING,
                 blk.embedding(spec.per_layer_vocab, per) + ops.elementwise("mul", t * per)),
            part(f"{b}.per_layer_model_projection", NodeKind.LINEAR, blk.linear(t, h, per, False)),
            part(f"{b}.per_layer_projection_norm", NodeKind.NORM, blk.rms_norm(t * spec.num_layers,
                                                                                spec.per_layer_hidden)),
            part(f"{b}:positions", NodeKind.POSITIONS, masks),
            *[part(f"{b}.altup_projections.{i}", NodeKind.LINEAR, blk.linear(t, h, h, False)) for i in range(A - 1)],
            # one table per layer type (both, whatever the layers)
            part(f"{b}.rotary_emb", NodeKind.ROTARY, blk.rotary_table(spec.rotary_dim) * len(set(spec.layer_types))),
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, Gemma3nSpec)
        b, h, t, A, n = self.base, spec.hidden_size, blk.TOKENS, spec.altup_inputs, spec.num_layers
        per = n * spec.per_layer_hidden
        # the base model's own ops: the per-layer ids in the table (ids >= 0, ids < V, and, where), the projection
        # * 1/sqrt(h), + the per-layer embeddings, * 1/sqrt(2); the embeddings' RMS magnitude (square, mean,
        # sqrt) and each of the A - 1 projected streams rescaled to it (square, mean, clamp, sqrt, *, /), at
        # the start and at the end, and the mean of the A streams
        magnitude = ops.elementwise("square", t * h) + ops.reduce_mean(t, h) + ops.elementwise("sqrt", t)
        rescale = (magnitude + ops.clamp(t, 1) + ops.elementwise("mul", t * h) + ops.elementwise("div", t * h))
        own = (ops.elementwise("cmp", 2 * t) + ops.elementwise("logic", t) + ops.elementwise("select", t)
               + ops.elementwise("mul", t * per) + ops.elementwise("add", t * per) + ops.elementwise("mul", t * per)
               + (magnitude + rescale * (A - 1)) * 2 + ops.reduce_mean(t * h, A))
        parts = [
            *[part(f"{b}.altup_unembed_projections.{i}", NodeKind.LINEAR, blk.linear(t, h, h, False))
              for i in range(A - 1)],
            part(b, NodeKind.ELEMENTWISE, own, label="altup / per-layer inputs"),
            *super().tail_parts(spec),
        ]
        if spec.final_softcap is not None:
            parts.append(part(":final_softcap", NodeKind.LM_HEAD, softcap(blk.TOKENS * spec.vocab_size)))
        return parts

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """A multimodal ``gemma3n`` config validates as Gemma3nForCausalLM built from its text_config."""
        if data.get("model_type") != "gemma3n":
            return dict(data)
        text = data.get("text_config") or {}
        if not isinstance(text, dict):
            raise ConfigError("gemma3n config field 'text_config' must be an object")
        return {**text, "model_type": "gemma3n_text"}

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        """Five layers (sliding, sliding, full, then a sliding and a full one reusing K / V), the first two sparse."""
        drop = ("intermediate_size", "activation_sparsity_pattern", "layer_types")
        return {k: v for k, v in self.hf_config(data).items() if k not in drop} | {
            "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 5, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 24, "vocab_size": 128, "vocab_size_per_layer_input": 64,
            "hidden_size_per_layer_input": 8, "laurel_rank": 8, "sliding_window": 4, "num_kv_shared_layers": 2,
            "layer_types": [SLIDING_ATTENTION, SLIDING_ATTENTION, FULL_ATTENTION, SLIDING_ATTENTION, FULL_ATTENTION],
            "activation_sparsity_pattern": [0.95, 0.95, 0.0, 0.0, 0.0]}


__all__ = ["Gemma3n", "Gemma3nSpec"]
