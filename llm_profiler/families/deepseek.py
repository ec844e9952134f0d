"""DeepSeek-V2 / V3: multi-head latent attention (MLA) and a DeepSeek MoE with shared experts.

Everything follows the transformers 5.23 eager code (modeling_deepseek_v2.py / modeling_deepseek_v3.py):

- Attention (MLA). q: ``q_proj`` (hidden -> H*(qk_nope+qk_rope)) when ``q_lora_rank`` is null (V2-Lite),
  else ``q_a_proj`` (hidden -> q_lora_rank, bias with ``attention_bias``), ``q_a_layernorm`` (RMSNorm over
  q_lora_rank) and ``q_b_proj`` (q_lora_rank -> H*(qk_nope+qk_rope)). kv: ``kv_a_proj_with_mqa`` (hidden ->
  kv_lora_rank + qk_rope, bias with ``attention_bias``) split into the latent (``kv_a_layernorm`` over
  kv_lora_rank) and ONE shared rope key of qk_rope dims. The rotary embedding touches only the qk_rope dims
  of q (H heads) and of the shared key (1 head): V3 as interleaved pairs (``rope_interleave``, default true:
  q1*cos - q2*sin, q2*cos + q1*sin on the even / odd halves), else rotate_half; V2 as complex products
  (``torch.polar`` tables, ``view_as_complex(x) * freqs_cis``: 4 MULT + 2 ADD per pair).
- KV cache: transformers 5.23 caches the COMPRESSED latent: per layer and token, kv_lora_rank (normed latent)
  + qk_rope (rotated shared key) elements, ``B * (kv_lora_rank + qk_rope) * (P + S)`` -- that is the ``cache``
  metric (what validation measures). Every forward then re-expands ALL cached tokens through ``kv_b_proj``
  (kv_lora_rank -> H*(qk_nope + v_head)), so kv_b_proj runs on B*(P+S) rows, not B*S. For comparison, a
  cache of decompressed K and V per head would hold ``B * H * (qk_nope + qk_rope + v_head) * (P + S)``
  (DeepSeek-V3: 576 vs 128*320 = 40,960 elements per token and layer); see ``decompressed_cache_per_token``.
- Scores use head dim qk_nope + qk_rope, the context v_head; scaling = qk_head_dim**-0.5 (times the yarn
  mscale**2; a value, not a count). ``num_key_value_heads`` must equal the heads (MLA has no GQA).
- MLP: layers < ``first_k_dense_replace`` are dense gated MLPs (``intermediate_size``); the others are MoE
  (transformers ignores ``moe_layer_freq``; a value other than 1 gets a note). MoE = router ``mlp.gate``
  (E x hidden weight), routed ``mlp.experts`` (E experts of 3 * moe_intermediate * hidden, run as
  ``batched_mm``: tokens x top-k x one expert's cost), ``mlp.shared_experts`` (one gated MLP of
  moe_intermediate * n_shared_experts) and the sum routed + shared.
- Routers. V3 (any ``topk_method`` / ``scoring_func``): sigmoid scores, + e_score_correction_bias (a
  buffer, not a parameter), group-limited choice (top-2 sum per group of E/n_group, top ``topk_group``
  groups, mask), top-k, gather, ``norm_topk_prob`` renormalisation, * routed_scaling_factor.
  V2: softmax scores; ``topk_method`` greedy (top-k) or group_limited_greedy (max per group, top groups,
  mask, top-k); * routed_scaling_factor; V2 ignores ``norm_topk_prob`` in transformers 5.23.
- ``active_params`` (what one token uses): routed experts count top-k of E, everything else in full
  (router, shared experts, dense layers, attention, embedding, head).
- DeepSeek-V3's multi-token-prediction layer (``num_nextn_predict_layers``) is not part of the
  transformers model and is not counted.
"""

from __future__ import annotations

from typing import Any, Literal

from .. import ops
from ..errors import ConfigError
from ..facts import State, StateKind
from ..formula import ZERO, B
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.moe import routed_experts
from ..graph.node import ATTN, MLP, NodeKind
from ..ops import Counts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, gated_mlp, part


class DeepseekSpec(ArchSpec):
    q_lora_rank: int = 0  # 0: no low-rank q (a plain q_proj)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    rope_style: Literal["interleave", "rotate_half", "complex"]
    n_routed_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    moe_intermediate_size: int
    first_k_dense_replace: int
    router: Literal["sigmoid_group", "softmax_greedy", "softmax_group"]
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = False

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        """Every layer's mixer is MLA; layers below ``first_k_dense_replace`` are dense, the others MoE (routed
        + shared experts)."""
        moe = FFN(kind="moe", intermediate=self.moe_intermediate_size, experts=self.n_routed_experts,
                  top_k=self.num_experts_per_tok, shared_intermediate=self.moe_intermediate_size * self.n_shared_experts)
        mla = Mixer(kind="mla")
        return tuple(layer.model_copy(update={"mixer": mla} if i < self.first_k_dense_replace
                                      else {"mixer": mla, "ffn": moe})
                     for i, layer in enumerate(super().derive_layers()))


def decompressed_cache_per_token(spec: DeepseekSpec) -> int:
    """Elements per token and layer if K and V were cached per head after kv_b_proj (not what transformers does)."""
    return spec.num_heads * (spec.qk_nope_head_dim + spec.qk_rope_head_dim + spec.v_head_dim)


def latent_cache_per_token(spec: DeepseekSpec) -> int:
    """Elements per token and layer of the MLA latent cache transformers holds: kv_lora_rank + qk_rope."""
    return spec.kv_lora_rank + spec.qk_rope_head_dim


@register
class Deepseek(DecoderTemplate):
    """deepseek_v2, deepseek_v3: MLA + DeepSeek MoE (every quirk is in the module docstring)."""

    name = "deepseek"
    model_types = ("deepseek_v2", "deepseek_v3")

    # --- spec -------------------------------------------------------------------------------------
    def spec(self, data: dict[str, Any], name: str = "") -> DeepseekSpec:
        model_type = data["model_type"]
        v3 = model_type == "deepseek_v3"
        f = Fields(data, model_type)
        hidden = f.int("hidden_size")
        heads = f.int("num_attention_heads")
        kv_heads = f.int("num_key_value_heads", default=heads)
        if kv_heads != heads:
            raise ConfigError(
                f"{model_type} config: num_key_value_heads ({kv_heads}) must equal num_attention_heads ({heads}); "
                "multi-head latent attention expands the latent to every head (no grouped-query attention)"
            )
        layers = f.int("num_hidden_layers")
        nope = f.int("qk_nope_head_dim", default=128)
        rope = f.int("qk_rope_head_dim", default=64)
        if rope % 2:
            raise ConfigError(f"{model_type} config field 'qk_rope_head_dim' must be even, got {rope}")
        v_head = f.int("v_head_dim", default=128)
        q_lora = f.int("q_lora_rank", default=0) if "q_lora_rank" in data else 1536
        experts = f.int("n_routed_experts", "num_local_experts", "num_experts", default=256 if v3 else 64)
        top_k = f.int("num_experts_per_tok", default=8 if v3 else None)
        if top_k is None:
            raise ConfigError(f"{model_type} config is missing the field 'num_experts_per_tok'; add it")
        if top_k > experts:
            raise ConfigError(f"{model_type} config: num_experts_per_tok ({top_k}) exceeds n_routed_experts ({experts})")
        notes: list[str] = []
        router: Literal["sigmoid_group", "softmax_greedy", "softmax_group"]
        style: Literal["interleave", "rotate_half", "complex"]
        if f.int("moe_layer_freq", default=1) != 1:
            notes.append("moe_layer_freq is ignored: transformers makes every layer >= first_k_dense_replace MoE")
        if v3:
            router = "sigmoid_group"
            n_group, topk_group = f.int("n_group", default=8), f.int("topk_group", default=4)
            style = "interleave" if f.bool("rope_interleave", default=True) else "rotate_half"
        else:
            method = f.str("topk_method", default="greedy")
            if method not in ("greedy", "group_limited_greedy"):
                raise ConfigError(
                    f"deepseek_v2 config field 'topk_method' = {method!r} is not supported by transformers' "
                    "DeepseekV2 router; use 'greedy' or 'group_limited_greedy'"
                )
            router = "softmax_greedy" if method == "greedy" else "softmax_group"
            n_group = f.int("n_group", default=1) if router == "softmax_group" else 1
            topk_group = f.int("topk_group", default=1) if router == "softmax_group" else 1
            style = "complex"
        if router != "softmax_greedy":
            f.divisible(experts, n_group, "n_routed_experts must be a multiple of n_group")
            if topk_group > n_group:
                raise ConfigError(f"{model_type} config: topk_group ({topk_group}) exceeds n_group ({n_group})")
        attention_bias = f.bool("attention_bias", default=False)
        notes.append(
            f"KV cache = the MLA latent transformers holds: kv_lora_rank + qk_rope_head_dim = "
            f"{f.int('kv_lora_rank', default=512) + rope} elements per token and layer (decompressed per-head "
            f"K and V would be {heads * (nope + rope + v_head):,})"
        )
        return DeepseekSpec(
            model_type=model_type, family=self.name, name=name, hidden_size=hidden, num_layers=layers,
            num_heads=heads, num_kv_heads=heads, head_dim=nope + rope,
            intermediate_size=f.int("intermediate_size", default=18432 if v3 else 11008),
            vocab_size=f.int("vocab_size", default=129280 if v3 else 102400),
            activation=read_activation(f, "hidden_act", default="silu"),
            qkv_bias=attention_bias,  # on q_a_proj and kv_a_proj_with_mqa (never on q_proj / q_b_proj / kv_b_proj)
            o_bias=attention_bias, mlp_bias=False if v3 else f.bool("mlp_bias", default=False),
            tie_word_embeddings=f.bool("tie_word_embeddings", default=False), rotary_dim=rope,
            q_lora_rank=q_lora, kv_lora_rank=f.int("kv_lora_rank", default=512), qk_nope_head_dim=nope,
            qk_rope_head_dim=rope, v_head_dim=v_head, rope_style=style, n_routed_experts=experts,
            num_experts_per_tok=top_k, n_shared_experts=f.int("n_shared_experts", default=1 if v3 else 2, minimum=0),
            moe_intermediate_size=f.int("moe_intermediate_size", default=2048 if v3 else 1407),
            first_k_dense_replace=f.int("first_k_dense_replace", default=3 if v3 else 0, minimum=0),
            router=router, n_group=n_group, topk_group=topk_group,
            norm_topk_prob=f.bool("norm_topk_prob", default=True) if v3 else False, notes=tuple(notes),
        )

    # --- graph ------------------------------------------------------------------------------------
    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, DeepseekSpec)
        parts = super().head_of_model_parts(spec)
        if spec.rope_style != "complex":
            return parts
        # V2: freqs = positions * inv_freq (S * r/2 MULT); freqs_cis = polar(ones, freqs); * attention_scaling
        # (a complex times a real: 2 MULT per element).
        half = blk.S * (spec.qk_rope_head_dim // 2)
        table = ops.elementwise("mul", half) + ops.polar(half) + ops.complex_mul(half, complex_factor=False)
        b = self.base
        return [p for p in parts if p.kind != NodeKind.ROTARY] + [
            part(f"{b}.rotary_emb", NodeKind.ROTARY, table)
        ]

    def rope(self, spec: DeepseekSpec, heads: int) -> Counts:
        """The rotary embedding on the qk_rope dims of ``heads`` heads (q: H, the shared key: 1)."""
        r, t = spec.qk_rope_head_dim, blk.TOKENS
        pairs = t * heads * (r // 2)
        if spec.rope_style == "interleave":
            # q1*cos, q2*sin, q1*sin, q2*cos: 4 MULT per pair; q1*cos - q2*sin, q2*cos + q1*sin: 2 ADD per pair
            return ops.elementwise("mul", 4 * pairs) + ops.elementwise("sub", pairs) + ops.elementwise("add", pairs)
        if spec.rope_style == "complex":
            return ops.complex_mul(pairs)  # view_as_complex(x) * freqs_cis: one complex product per pair
        return blk.apply_rope(heads, r)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, DeepseekSpec)
        h, H, t = spec.hidden_size, spec.num_heads, blk.TOKENS
        qk, kvr, dr, dn, dv = spec.head_dim, spec.kv_lora_rank, spec.qk_rope_head_dim, spec.qk_nope_head_dim, spec.v_head_dim
        keys = blk.keys_full()
        a = ".self_attn"
        if spec.q_lora_rank:
            qr = spec.q_lora_rank
            parts = [
                part(f"{a}.q_a_proj", NodeKind.LINEAR, blk.linear(t, h, qr, spec.qkv_bias), ATTN),
                part(f"{a}.q_a_layernorm", NodeKind.NORM, blk.rms_norm(t, qr), ATTN),
                part(f"{a}.q_b_proj", NodeKind.LINEAR, blk.linear(t, qr, H * qk, False), ATTN),
            ]
        else:
            parts = [part(f"{a}.q_proj", NodeKind.LINEAR, blk.linear(t, h, H * qk, False), ATTN)]
        cached = blk.cached_full()
        parts += [
            part(f"{a}.kv_a_proj_with_mqa", NodeKind.LINEAR,
                 blk.linear(t, h, kvr + dr, spec.qkv_bias), ATTN),
            part(f"{a}.kv_a_layernorm", NodeKind.NORM, blk.rms_norm(t, kvr), ATTN),
            part(f"{a}:rope", NodeKind.ROPE, self.rope(spec, H) + self.rope(spec, 1), ATTN),
            # the latent and the rotated shared key, for every token held
            part(f"{a}:kv_cache", NodeKind.KV_CACHE,
                 blk.kv_cache(1, kvr, cached, v_head_dim=dr, kind=StateKind.LATENT), ATTN),
            # re-expands every cached token's latent on each forward: B*(P+S) rows read from the cache
            part(f"{a}.kv_b_proj", NodeKind.LINEAR,
                 blk.linear(B * cached, kvr, H * (dn + dv), False).with_facts(
                     reads=ZERO, states=(State(StateKind.LATENT, read=B * cached * kvr),)), ATTN),
            # the decompressed keys are activations; the shared rope key comes from the cache
            part(f"{a}:scores", NodeKind.ATTN_SCORES,
                 blk.attn_scores(H, qk, keys) + blk.state_read(StateKind.LATENT, B * cached * dr), ATTN),
            part(f"{a}:softmax", NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            part(f"{a}:context", NodeKind.ATTN_CONTEXT, blk.attn_context(H, dv, keys), ATTN),
            part(f"{a}.o_proj", NodeKind.LINEAR, blk.linear(t, H * dv, h, spec.o_bias), ATTN),
        ]
        return parts

    def router(self, spec: DeepseekSpec) -> Counts:
        """The router's forward (``mlp.gate``) on every token, op by op."""
        E, k, G, tg, t = spec.n_routed_experts, spec.num_experts_per_tok, spec.n_group, spec.topk_group, blk.TOKENS
        out = blk.with_params(ops.matmul(t, E, spec.hidden_size), E * spec.hidden_size)  # logits (fp32 mm)
        group_mask = ops.topk(t, G, tg) + ops.elementwise("logic", t * E)  # top groups; ~mask before masked_fill
        if spec.router == "sigmoid_group":
            out = out + ops.elementwise("sigmoid", t * E) + ops.elementwise("add", t * E)  # + correction bias
            out = out + ops.topk(t * G, E // G, 2) + ops.reduce_sum(t * G, 2)  # group score: sum of its top 2
            out = out + group_mask + ops.topk(t, E, k) + ops.elementwise("gather", t * k)  # weights of the chosen
            if spec.norm_topk_prob:  # w / (sum(w) + 1e-20)
                out = out + ops.reduce_sum(t, k) + ops.elementwise("add", t) + ops.elementwise("div", t * k)
        else:
            out = out + ops.softmax(t, E)
            if spec.router == "softmax_group":  # group score: its max (a top-1)
                out = out + ops.topk(t * G, E // G, 1) + group_mask
            out = out + ops.topk(t, E, k)
        return out + ops.elementwise("mul", t * k)  # * routed_scaling_factor

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, DeepseekSpec)
        h, t = spec.hidden_size, blk.TOKENS
        E, k, inter = spec.n_routed_experts, spec.num_experts_per_tok, spec.moe_intermediate_size
        pairs = t * k  # token-expert pairs: batched_mm runs one expert's MLP per pair
        # gate_up, act(gate) * up, down and the routing weight per pair, the top-k sum per token; the pairs
        # read min(E, pairs) experts' weights (graph.moe.routed_experts, the same blocks as Mixtral's)
        experts = routed_experts(h, inter, E, k)
        m = ".mlp"
        return [
            part(f"{m}.gate", NodeKind.ROUTER, self.router(spec), MLP),
            part(f"{m}.experts", NodeKind.EXPERTS, experts, MLP),
            part(f"{m}.experts.act_fn", NodeKind.ACTIVATION,
                 blk.activation(spec.activation, pairs * inter), MLP),
            *gated_mlp(spec, f"{m}.shared_experts", inter * spec.n_shared_experts),
            part(f"{m}:combine", NodeKind.ELEMENTWISE, ops.elementwise("add", t * h), MLP),  # routed + shared
        ]

    # --- validation -------------------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        out.pop("quantization_config", None)  # fp8 checkpoint format: irrelevant to the float32 reference
        out.pop("auto_map", None)
        return out

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        v3 = data.get("model_type") == "deepseek_v3"
        experts, top_k = 8, min(2, int(data.get("num_experts_per_tok") or 2))
        out = {
            **self.hf_config(data), "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 128, "kv_lora_rank": 32,
            "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 12, "moe_intermediate_size": 24,
            "n_routed_experts": experts, "num_experts_per_tok": top_k,
            "n_shared_experts": min(2, int(data.get("n_shared_experts", 1 if v3 else 2))),
            "first_k_dense_replace": min(1, int(data.get("first_k_dense_replace", 3 if v3 else 0))),
        }
        if data.get("q_lora_rank", 1536) is not None:
            out["q_lora_rank"] = 48
        if v3 or data.get("topk_method") == "group_limited_greedy":
            out["n_group"], out["topk_group"] = 4, 2  # 4 groups of 2 experts, 2 of them kept
        for key in ("num_local_experts", "num_experts"):
            out.pop(key, None)
        return out
