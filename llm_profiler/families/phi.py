"""The Phi families: phi (phi-1 / phi-1.5 / phi-2) and phi3 (Phi-3 / Phi-3.5 / Phi-4 text models).

phi: one LayerNorm feeds attention and MLP in parallel, partial rotary, biased dense / fc1 / fc2,
gelu_new, final_layernorm and an lm_head with bias. phi3: a Llama with fused qkv_proj and gate_up_proj.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, MLP
from ..ops import Counts
from ..spec import SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate as LlamaStyle


def rope_parameters(f: Fields) -> dict[str, Any]:
    """``rope_parameters`` (transformers 5) or the legacy ``rope_scaling``, as transformers reads them."""
    for key in ("rope_parameters", "rope_scaling"):
        value = f.raw(key)
        if value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{f.model_type} config field {key!r} must be an object, got {value!r}")
            return value
    return {}


def rotary_dim(f: Fields, head_dim: int, default_factor: float) -> int:
    """int(head_dim * partial_rotary_factor), the factor read where transformers reads it first:
    inside rope_parameters, then at the top level."""
    rope = rope_parameters(f)
    factor = rope.get("partial_rotary_factor")
    if factor is None:
        factor = f.float("partial_rotary_factor", default=default_factor)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ConfigError(f"{f.model_type} config field 'partial_rotary_factor' must be in (0, 1], got {factor!r}")
    dim = int(head_dim * factor)
    if dim % 2:
        raise ConfigError(f"{f.model_type} config: rotary dimension int({head_dim} * {factor}) = {dim} must be even")
    return dim


@register
class Phi(LlamaStyle):
    """phi. Quirks, all from transformers' PhiConfig / modeling_phi:

    - one ``input_layernorm`` (LayerNorm with bias) feeds attention and MLP in parallel:
      out = attn(ln(x)) + mlp(ln(x)) + x (two additions).
    - partial rotary: int(head_dim * ``partial_rotary_factor``) dims (default 0.5; phi-2 0.4 -> 32 of 80).
    - q / k / v / dense / fc1 / fc2 all have biases; ``hidden_act`` gelu_new is eight Python ops.
    - optional ``qk_layernorm``: LayerNorms over each head of q and k.
    - ``model.final_layernorm``; the lm_head has a bias (kept when the weight is tied).
    """

    name = "phi"
    model_types = ("phi",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "phi")
        hidden = f.int("hidden_size")
        heads, kv_heads, head_dim = f.attention_heads(hidden)
        qk_norm = f.bool("qk_layernorm", default=False)
        if qk_norm and head_dim != hidden // heads:
            raise ConfigError("phi config: qk_layernorm needs head_dim == hidden_size // num_attention_heads")
        return ArchSpec(
            model_type="phi",
            family=self.name,
            name=name,
            hidden_size=hidden,
            num_layers=f.int("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=f.int("intermediate_size"),
            vocab_size=f.int("vocab_size"),
            norm="layernorm",
            activation=read_activation(f, "hidden_act", default="gelu_new"),
            gated_mlp=False,
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=False),
            rotary_dim=rotary_dim(f, head_dim, 0.5),
            qk_norm=qk_norm,
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        # Llama's parts with phi's names: dense for o_proj, q_layernorm / k_layernorm (LayerNorm per head).
        names = {".self_attn.o_proj": ".self_attn.dense", ".self_attn.q_norm": ".self_attn.q_layernorm",
                 ".self_attn.k_norm": ".self_attn.k_layernorm"}
        out = []
        for p in super().attention_parts(spec, layer):
            if p.suffix in names:
                p = Part(names[p.suffix], names[p.module_suffix], p.kind, p.counts, p.block)
            out.append(p)
        return out

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, inter, t = spec.hidden_size, spec.intermediate_size, blk.TOKENS
        m = ".mlp"
        return [
            Part(f"{m}.fc1", f"{m}.fc1", NodeKind.LINEAR, blk.linear(t, h, inter, True), MLP),
            Part(f"{m}.activation_fn", f"{m}.activation_fn", NodeKind.ACTIVATION,
                 blk.activation(spec.activation, t * inter), MLP),
            Part(f"{m}.fc2", f"{m}.fc2", NodeKind.LINEAR, blk.linear(t, inter, h, True), MLP),
        ]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, t = spec.hidden_size, blk.TOKENS
        return [
            Part(".input_layernorm", ".input_layernorm", NodeKind.NORM, self.norm(spec, t, h)),
            *self.attention_parts(spec, layer),
            *self.ffn_parts(spec, layer),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(h)),  # attn + mlp + x
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        v, h = spec.vocab_size, spec.hidden_size
        # tied: the weight is the embedding's (counted there); the bias is the head's
        head = blk.lm_head(blk.TOKENS, h, v, tied=spec.tie_word_embeddings, bias=True)
        return [
            Part(f"{self.base}.final_layernorm", f"{self.base}.final_layernorm", NodeKind.NORM,
                 self.norm(spec, blk.TOKENS, h)),
            Part("lm_head", "lm_head", NodeKind.LM_HEAD, head),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        heads = data.get("num_attention_heads", 4)
        kv = data.get("num_key_value_heads") or heads
        out = {**data, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 4 if kv == heads else 2, "vocab_size": 128}
        # head_dim 16 keeps phi-2's partial rotary factor 0.4 binding: int(16 * 0.4) = 6 of 16 dims rotate
        if data.get("head_dim") is not None:
            out["head_dim"] = 24
        return out


class Phi3Spec(ArchSpec):
    rope_type: str = "default"  # "longrope" adds the per-forward frequency choice in rotary_emb


@register
class Phi3(LlamaStyle):
    """phi3. Quirks, all from transformers' Phi3Config / modeling_phi3:

    - fused ``qkv_proj`` (heads + 2 kv_heads) * head_dim wide and ``gate_up_proj`` (2 * intermediate), no
      biases; the MLP computes up * act(gate) after a chunk (a view).
    - ``sliding_window`` (null = none; phi-3-mini-4k: 2047) applies to every layer (mask and cache).
    - ``partial_rotary_factor`` (default 1; Phi-4-mini 0.75) rotates the first dims only.
    - RoPE scaling (``rope_scaling`` / ``rope_parameters``: longrope, the legacy su / yarn) changes no count
      of the layers; longrope's per-forward choice between the short and long frequencies is counted in
      ``model.rotary_emb``.
    """

    name = "phi3"
    model_types = ("phi3",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "phi3")
        hidden = f.int("hidden_size")
        heads, kv_heads, head_dim = f.attention_heads(hidden)
        layers = f.int("num_hidden_layers")
        window = f.int("sliding_window", default=None, minimum=2)
        return Phi3Spec(
            model_type="phi3",
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
            tie_word_embeddings=f.bool("tie_word_embeddings", default=False),
            rotary_dim=rotary_dim(f, head_dim, 1.0),
            sliding_window=window,
            layer_types=(SLIDING_ATTENTION,) * layers if window is not None else (),
            rope_type=_rope_type(f),
        )

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        parts = super().head_of_model_parts(spec)
        if isinstance(spec, Phi3Spec) and spec.rope_type == "longrope":
            parts.append(Part(f"{self.base}.rotary_emb:longrope", f"{self.base}.rotary_emb", NodeKind.ROTARY,
                              longrope_update(spec.rotary_dim)))
        return parts

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        H, KV, D, t = spec.num_heads, spec.num_kv_heads, spec.head_dim, blk.TOKENS
        a = ".self_attn"
        qkv = Part(f"{a}.qkv_proj", f"{a}.qkv_proj", NodeKind.LINEAR,
                   blk.linear(t, spec.hidden_size, (H + 2 * KV) * D, False), ATTN)
        rest = [p for p in super().attention_parts(spec, layer)
                if p.suffix not in (f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj")]
        return [qkv, *rest]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, inter, t = spec.hidden_size, spec.intermediate_size, blk.TOKENS
        m = ".mlp"
        return [
            Part(f"{m}.gate_up_proj", f"{m}.gate_up_proj", NodeKind.LINEAR, blk.linear(t, h, 2 * inter, False), MLP),
            Part(f"{m}.activation_fn", f"{m}.activation_fn", NodeKind.ACTIVATION,
                 blk.activation(spec.activation, t * inter), MLP),
            Part(f"{m}:gate_mul", m, NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
            Part(f"{m}.down_proj", f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        heads = data.get("num_attention_heads", 4)
        kv = data.get("num_key_value_heads") or heads
        out = {**data, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 4 if kv == heads else 2, "vocab_size": 128}
        if data.get("head_dim") is not None:
            out["head_dim"] = 24  # keep an explicit head_dim that differs from hidden/heads (64/4 = 16)
        if data.get("sliding_window") is not None:
            out["sliding_window"] = 4
        # longrope's short / long factor lists hold one entry per rotary frequency: resize them
        f = Fields(out, "phi3")
        half = rotary_dim(f, f.attention_heads(64)[2], 1.0) // 2
        for key in ("rope_parameters", "rope_scaling"):
            rope = out.get(key)
            if isinstance(rope, dict):
                out[key] = {k: v[:1] * half if k in ("short_factor", "long_factor") and isinstance(v, list) else v
                            for k, v in rope.items()}
        return out


def _rope_type(f: Fields) -> str:
    rope = rope_parameters(f)
    kind = rope.get("rope_type", rope.get("type", "default"))
    return "longrope" if kind in ("longrope", "su", "yarn") else str(kind)


def longrope_update(rotary: int) -> Counts:
    """transformers' longrope_frequency_update, every forward (modeling_rope_utils.dynamic_rope_update):
    seq_len = max(position_ids) + 1: S-1 CMP and 1 ADD; seq_len > original_max: 1 CMP;
    where(that, long_inv_freq, inv_freq): rotary/2 elements (a select); the copy into the buffer is a move."""
    return (ops.reduce_max(1, blk.S) + ops.elementwise("add", 1) + ops.elementwise("cmp", 1)
            + ops.elementwise("select", rotary // 2))
