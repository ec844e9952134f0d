"""DeepSeek-V4 (V4-Flash, V4-Pro), op by op as transformers 5.23 runs it (``modeling_deepseek_v4.py``):

- Residual: ``hc_mult`` = N streams (mHC, ``graph.hyper_connections``): every layer collapses them before
  attention (``attn_hc``) and before the MLP (``ffn_hc``), each with a Sinkhorn projection of
  ``hc_sinkhorn_iters``; the layer mixes block output and streams itself; ``model.hc_head`` collapses them
  before the final norm.
- Attention on every layer: low-rank q (``q_a_proj``, ``q_a_norm``, ``q_b_proj``, a weightless per-head
  ``q_b_norm``), ONE shared key = value head (``kv_proj``, ``kv_norm``: ``num_key_value_heads`` is not read),
  interleaved partial rotary on the trailing ``qk_rope_head_dim`` dims of q, kv and (with -sin) the output,
  gpt-oss-style sinks (the sink column's max and subtraction run before the softmax: counted in
  ``:scores``), the grouped output projection (``o_a_proj``: ``o_groups`` blocks of H*D/g -> ``o_lora_rank``,
  one bmm; ``o_b_proj``). Every layer keeps a sliding window (``sliding_window``) of the shared key.
- ``layer_types`` (or the legacy per-layer ``compress_ratios`` 0 / 4 / 128): ``sliding_attention``;
  ``heavily_compressed_attention`` (HCA: a compressor pools every ``compress_rates[hca]`` tokens into one
  entry that all queries attend to beside the window); ``compressed_sparse_attention`` (CSA: overlapping
  windows of ``compress_rates[csa]`` tokens, and a lightning indexer with its own compressor that keeps the
  ``index_topk`` best entries per query). Sliding layers rotate with ``rope_theta``, compressed ones with
  ``compress_rope_theta`` and yarn (the types change no count). ``graph.compressed_attention`` has the
  counts and the cache states (keys, compressed entries, indexer keys, buffered tokens).
- MoE on every layer: router scores ``scoring_func`` (sqrtsoftplus or sigmoid), renormalised, times
  ``routed_scaling_factor``; the first ``num_hash_layers`` (or ``mlp_layer_types`` ``hash_moe``) choose
  experts by a token-id table (no top-k), the others by top-k of scores + correction bias. Experts
  (batched_mm) and the shared MLP clamp gate / up to ``swiglu_limit``; the shared MLP is ONE expert of
  ``moe_intermediate_size`` (``n_shared_experts`` is not read by transformers).
- ``num_nextn_predict_layers`` (MTP) is not built by transformers (its weights are dropped on load): not
  counted. The fp8 / fp4 ``quantization_config`` changes no count; the reference is built without it.
Missing fields take DeepseekV4Config's defaults, which are V4-Flash's.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..facts import StateKind, TensorClass, Weight
from ..formula import B, P, S, fmin
from ..graph import blocks as blk
from ..graph import compressed_attention as ca
from ..graph import hyper_connections as hc
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.moe import routed_experts
from ..graph.node import ATTN, MLP, NodeKind
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, part

SLIDING, CSA, HCA = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
RATIO_TYPES = {0: SLIDING, 4: CSA, 128: HCA}  # transformers' legacy compress_ratios reading
DEFAULTS: dict[str, Any] = {
    "vocab_size": 129280, "hidden_size": 4096, "moe_intermediate_size": 2048, "num_hidden_layers": 43,
    "num_attention_heads": 64, "head_dim": 512, "q_lora_rank": 1024, "num_experts_per_tok": 6,
    "n_routed_experts": 256, "scoring_func": "sqrtsoftplus", "hc_mult": 4, "hc_sinkhorn_iters": 20,
    "sliding_window": 128, "o_groups": 8, "o_lora_rank": 1024, "index_n_heads": 64, "index_head_dim": 128,
    "index_topk": 512}


class DeepseekV4Spec(ArchSpec):
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    hc_mult: int
    hc_sinkhorn_iters: int
    index_heads: int
    index_head_dim: int
    index_topk: int
    scoring: str
    hash_layers: tuple[int, ...] = ()


@register
class DeepseekV4(DecoderTemplate):
    name = "deepseek_v4"
    model_types = ("deepseek_v4",)

    def spec(self, data: dict[str, Any], name: str = "") -> DeepseekV4Spec:
        filled = sorted(k for k in DEFAULTS if k not in data)
        f = Fields({**DEFAULTS, **data}, self.name)
        n, heads, D = f.int("num_hidden_layers"), f.int("num_attention_heads"), f.int("head_dim")
        # transformers runs one shared K = V head whatever num_key_value_heads says; a value that cannot group
        # the heads is a corrupt config all the same
        f.divisible(heads, f.int("num_key_value_heads", default=1), "num_attention_heads must be a multiple of "
                    "num_key_value_heads")
        window = f.int("sliding_window", minimum=2)
        rates = {CSA: 4, HCA: 128, **(f.raw("compress_rates") or {})}
        rates[CSA] = f.int("compress_rate_csa", default=rates[CSA])
        rates[HCA] = f.int("compress_rate_hca", default=rates[HCA])
        types = self.layer_types(f, n)
        mlp_types = f.layer_types(n, ("hash_moe", "moe"), "mlp_layer_types") or tuple(
            "hash_moe" if i < f.int("num_hash_layers", default=3, minimum=0) else "moe" for i in range(n))
        if f.has("partial_rotary_factor"):
            rotary = int(D * f.float("partial_rotary_factor"))
        else:
            rotary = f.int("qk_rope_head_dim", default=D * 64 // 512)
        scoring = f.str("scoring_func")
        if scoring not in ("sqrtsoftplus", "sigmoid"):
            raise ConfigError(f"deepseek_v4 config field 'scoring_func' must be 'sqrtsoftplus' or 'sigmoid', "
                              f"got {scoring!r}")
        inter = f.int("moe_intermediate_size")
        ffn = FFN(kind="moe", intermediate=inter, experts=f.int("n_routed_experts"),
                  top_k=f.int("num_experts_per_tok"), shared_intermediate=inter)
        mixers = {SLIDING: Mixer(kind="sliding_attention", window=window, sinks=True),
                  CSA: Mixer(kind="sparse_attention", window=window, chunk=rates[CSA], sinks=True),
                  HCA: Mixer(kind="attention", window=window, chunk=rates[HCA], sinks=True)}
        notes = ("deepseek_v4: fields absent from the config take DeepseekV4Config's defaults: "
                 + ", ".join(f"{k}={DEFAULTS[k]}" for k in filled),) if filled else ()
        return DeepseekV4Spec(
            model_type="deepseek_v4", family=self.name, name=name, hidden_size=f.int("hidden_size"),
            num_layers=n, num_heads=heads, num_kv_heads=1, head_dim=D, intermediate_size=inter,
            vocab_size=f.int("vocab_size"), activation=read_activation(f, "hidden_act", default="silu"),
            mlp_bias=f.bool("mlp_bias", default=False), tie_word_embeddings=f.bool("tie_word_embeddings", default=False),
            rotary_dim=rotary, sliding_window=window, notes=notes,
            layers=tuple(LayerSpec(mixer=mixers[t], ffn=ffn) for t in types),
            q_lora_rank=f.int("q_lora_rank"), o_groups=f.int("o_groups"), o_lora_rank=f.int("o_lora_rank"),
            hc_mult=f.int("hc_mult"), hc_sinkhorn_iters=f.int("hc_sinkhorn_iters"),
            index_heads=f.int("index_n_heads"), index_head_dim=f.int("index_head_dim"),
            index_topk=f.int("index_topk"), scoring=scoring,
            hash_layers=tuple(i for i, t in enumerate(mlp_types) if t == "hash_moe"))

    @staticmethod
    def layer_types(f: Fields, n: int) -> tuple[str, ...]:
        """``layer_types``, else the legacy ``compress_ratios`` (0 / 4 / 128 per layer, extra entries for the
        MTP layers dropped), else V4-Pro's default: two HCA layers, then CSA / HCA alternating."""
        if f.has("layer_types"):
            return f.layer_types(n, (SLIDING, CSA, HCA)) or ()
        ratios = f.raw("compress_ratios")
        if ratios is not None:
            if not isinstance(ratios, list) or len(ratios) < n or any(r not in RATIO_TYPES for r in ratios):
                raise ConfigError(f"deepseek_v4 config field 'compress_ratios' must list at least {n} entries, "
                                  "each 0, 4 or 128")
            return tuple(RATIO_TYPES[r] for r in ratios[:n])
        return tuple([HCA] * min(n, 2) + [CSA if i % 2 else HCA for i in range(max(n - 2, 0))])

    # --- graph ------------------------------------------------------------------------------------
    def layer_key(self, spec: ArchSpec, index: int, layer: LayerSpec) -> Hashable:
        assert isinstance(spec, DeepseekV4Spec)
        return layer, index in spec.hash_layers

    def keyed_layer_parts(self, spec: ArchSpec, key: Any) -> list[Part]:
        assert isinstance(spec, DeepseekV4Spec)
        layer, hashed = key
        h, N = spec.hidden_size, spec.hc_mult
        def collapse(name: str) -> list[Part]:
            return [part(f".{name}.input_norm", NodeKind.NORM, hc.stream_norm(N, h), label="hc norm"),
                    part(f".{name}", NodeKind.ELEMENTWISE, hc.hyper_connection(N, h, spec.hc_sinkhorn_iters),
                         label="hyper-connection")]
        return [*collapse("attn_hc"), self.norm_part(spec, ".input_layernorm"), *self.attention(spec, layer),
                part(":residual", NodeKind.RESIDUAL, hc.stream_update(N, h)), *collapse("ffn_hc"),
                self.norm_part(spec, ".post_attention_layernorm"), *self.moe(spec, layer, hashed)]

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        keys = fmin(P, self.window(spec) - 1) + S
        return [*super().head_of_model_parts(spec)[:1],
                part(f"{self.base}:positions", NodeKind.POSITIONS,
                     blk.position_ids() + blk.causal_mask(keys, self.window(spec))),
                # the "main" and the "compress" tables, both on every forward
                part(f"{self.base}.rotary_emb", NodeKind.ROTARY, ca.rotary_rows(2 * S, spec.rotary_dim))]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, DeepseekV4Spec)
        h, N = spec.hidden_size, spec.hc_mult
        return [part(f"{self.base}.hc_head.input_norm", NodeKind.NORM, hc.stream_norm(N, h), label="hc norm"),
                part(f"{self.base}.hc_head", NodeKind.ELEMENTWISE, hc.hyper_head(N, h), label="hyper-head"),
                *super().tail_parts(spec)]

    @staticmethod
    def window(spec: ArchSpec) -> int:
        assert spec.sliding_window is not None
        return spec.sliding_window

    def attention(self, spec: DeepseekV4Spec, layer: LayerSpec) -> list[Part]:
        h, H, D, r, t, a = spec.hidden_size, spec.num_heads, spec.head_dim, spec.rotary_dim, blk.TOKENS, ".self_attn"
        m, W = layer.mixer.chunk, self.window(spec)
        entries = ca.compressed(m) if m else 0
        keys = fmin(P, W - 1) + S + entries
        window_keys = blk.kv_cache(1, D, blk.cached_sliding(W), v_head_dim=None if m is None else 0)
        rows = B * H * S
        # the window's keys and the compressed entries are read from the cache once: K = V, the context's values
        # are the same elements (an unfused eager run reads them twice); then the sink column's max and the
        # subtraction, before the softmax
        read = (blk.state_read(StateKind.KEYS_VALUES, B * D * (keys - entries))
                + blk.state_read(ca.CompressedStateKind.COMPRESSED, B * D * entries))
        scores = (ops.matmul(S, keys, D, batch=B * H) + read + ops.elementwise("mul", rows * keys)
                  + ops.elementwise("add", rows * keys) + ops.topk(rows, keys + 1, 1)
                  + ops.elementwise("sub", rows * (keys + 1)))
        context = ops.matmul(S, D, keys, batch=B * H).with_facts(reads=B * H * S * keys)  # the probabilities
        softmax = blk.with_params(ops.softmax(rows, keys + 1), H).with_facts(
            weights=(Weight("sinks", (H,), TensorClass.VECTOR),))
        g, og = spec.o_groups, spec.o_lora_rank
        grouped = blk.with_params(ops.matmul(t, og, H * D // g, batch=g), og * H * D).with_facts(
            weights=(Weight("weight", (g * og, H * D // g), TensorClass.MATRIX),))
        return [
            part(f"{a}.q_a_proj", NodeKind.LINEAR, blk.linear(t, h, spec.q_lora_rank, False), ATTN),
            part(f"{a}.q_a_norm", NodeKind.NORM, blk.rms_norm(t, spec.q_lora_rank), ATTN),
            part(f"{a}.q_b_proj", NodeKind.LINEAR, blk.linear(t, spec.q_lora_rank, H * D, False), ATTN),
            part(f"{a}.q_b_norm", NodeKind.NORM, blk.fusable(ops.rms_norm(t * H, D, weight=False), t * H * D,
                                                             t * H * D), ATTN),
            part(f"{a}.kv_proj", NodeKind.LINEAR, blk.linear(t, h, D, False), ATTN),
            part(f"{a}.kv_norm", NodeKind.NORM, blk.rms_norm(t, D), ATTN),
            # q, the shared key / value, and the output de-rotated with -sin (its negation: the module's own)
            part(f"{a}:rope", NodeKind.ROPE, blk.apply_rope(H, r) + blk.apply_rope(1, r) + blk.apply_rope(H, r), ATTN),
            part(a, NodeKind.ROTARY, ops.elementwise("neg", S * (r // 2)), ATTN, label="-sin"),
            part(f"{a}:kv_cache", NodeKind.KV_CACHE, window_keys, ATTN),
            *(self.compressor(spec, layer) if m else []),
            part(f"{a}:scores", NodeKind.ATTN_SCORES, scores, ATTN),
            part(f"{a}:softmax", NodeKind.ATTN_SOFTMAX, softmax, ATTN),
            part(f"{a}:context", NodeKind.ATTN_CONTEXT, context, ATTN),
            part(f"{a}.o_a_proj", NodeKind.LINEAR, grouped, ATTN),
            part(f"{a}.o_b_proj", NodeKind.LINEAR, blk.linear(t, g * og, h, False), ATTN),
        ]

    def compressor(self, spec: DeepseekV4Spec, layer: LayerSpec) -> list[Part]:
        """The layer's compressor (CSA with its indexer, or HCA) and the cache states it keeps."""
        h, D, r, t, m = spec.hidden_size, spec.head_dim, spec.rotary_dim, blk.TOKENS, layer.mixer.chunk
        assert m is not None
        sparse = layer.mixer.kind == "sparse_attention"
        c = ".self_attn.compressor"
        out = self.pooled(spec, c, m, D, 2 * D if sparse else D, sparse)
        # the mask over the compressed entries: HCA's causal one (per position), CSA's from the indexer's picks
        if not sparse:
            return [*out, part(c + ":entry_positions", NodeKind.ELEMENTWISE, ca.entry_positions(m, "hca"), ATTN)]
        out[-1] = part(c, NodeKind.ELEMENTWISE, out[-1].counts + ca.csa_block_bias(m, spec.index_topk), ATTN,
                       label="compressor")
        out.append(part(c + ":entry_positions", NodeKind.ELEMENTWISE, ca.entry_positions(m), ATTN))
        Hi, Di, i = spec.index_heads, spec.index_head_dim, c + ".indexer"
        out += self.pooled(spec, i, m, Di, 2 * Di, True, query_rows=S)
        out[-1] = part(i, NodeKind.ELEMENTWISE, out[-1].counts + ca.indexer_selection(m, spec.index_topk), ATTN,
                       label="indexer")
        out[-2] = part(i + ":rope", NodeKind.ROPE, out[-2].counts + blk.apply_rope(Hi, r), ATTN)  # and the queries
        out.append(part(i + ":entry_positions", NodeKind.ELEMENTWISE, ca.entry_positions(m, "indexer"), ATTN))
        return out + [
            part(i + ".q_b_proj", NodeKind.LINEAR, blk.linear(t, spec.q_lora_rank, Hi * Di, False), ATTN),
            part(i + ".scorer", NodeKind.ATTN_SCORES, ca.indexer_scores(Hi, Di, m) + blk.state_read(
                ca.CompressedStateKind.COMPRESSED, B * ca.compressed(m) * Di), ATTN),
            part(i + ".scorer.weights_proj", NodeKind.LINEAR, blk.linear(t, h, Hi, False), ATTN),
        ]

    def pooled(self, spec: DeepseekV4Spec, c: str, m: int, dim: int, width: int, overlap: bool,
               query_rows: Any = 0) -> list[Part]:
        """One compressor ``c`` of ratio m: kv / gate projections to ``width``, its cache states (pooled entries
        of ``dim``; buffered kv and gate; CSA's overlap slices once a window closed), kv_norm, rotary (on its
        entries' positions and ``query_rows`` more), rope, and (last) its own pooling."""
        h, t, r = spec.hidden_size, blk.TOKENS, spec.rotary_dim
        counts = ca.compressor_parts_counts(m, width, dim, r, overlap, m * width)
        entries = blk.state_cache(ca.CompressedStateKind.COMPRESSED, B * ca.compressed(m) * dim,
                                  appended=B * ca.new_windows(m) * dim)
        # kv and gate of the buffered tokens (each forward writes its S tokens' in); CSA keeps the first halves of
        # its last closed window's m slots (written when a window closes)
        pending, written = 2 * B * ca.buffered(m) * width, 2 * B * S * width
        if overlap:
            pending = pending + 2 * B * m * dim * ca.present(ca.compressed(m))
            written = written + 2 * B * m * dim * ca.present(ca.new_windows(m))
        states = entries + blk.state_cache(ca.CompressedStateKind.COMPRESSOR, pending, appended=written)
        return [
            part(c + ".kv_proj", NodeKind.LINEAR, blk.linear(t, h, width, False), ATTN),
            part(c + ".gate_proj", NodeKind.LINEAR, blk.linear(t, h, width, False), ATTN),
            part(c + ":cache", NodeKind.KV_CACHE, states, ATTN),
            part(c + ".kv_norm", NodeKind.NORM, counts["kv_norm"], ATTN),
            part(c + ".rotary_emb", NodeKind.ROTARY, counts["rotary_emb"] + ca.rotary_rows(query_rows, r), ATTN),
            part(c + ":rope", NodeKind.ROPE, counts["rope"], ATTN),
            part(c, NodeKind.ELEMENTWISE, counts["own"], ATTN, label="compressor"),
        ]

    def moe(self, spec: DeepseekV4Spec, layer: LayerSpec, hashed: bool) -> list[Part]:
        h, t, E, k, inter = spec.hidden_size, blk.TOKENS, layer.ffn.experts, layer.ffn.top_k, layer.ffn.intermediate
        router = blk.linear(t, h, E, False)
        if not hashed:  # top-k of scores + e_score_correction_bias (a buffer); hashed: tid2eid[input_ids], a copy
            router = router + ops.elementwise("add", t * E) + ops.topk(t, E, k)
        router = (router + ops.elementwise("gather", t * k) + ops.reduce_sum(t, k) + ops.elementwise("add", t)
                  + ops.elementwise("div", t * k) + ops.elementwise("mul", t * k))
        score = ops.elementwise("sigmoid", t * E)
        if spec.scoring == "sqrtsoftplus":
            score = ops.elementwise("softplus", t * E) + ops.elementwise("sqrt", t * E)
        pairs = t * k * inter  # (token, expert) pairs x intermediate: the experts' clamped gate / up
        experts = routed_experts(h, inter, E, k) + ops.clamp(pairs, 1) + ops.clamp(pairs, 2)
        m, s, bias = ".mlp", ".mlp.shared_experts", spec.mlp_bias
        return [
            part(f"{m}.gate", NodeKind.ROUTER, router, MLP),
            part(f"{m}.gate.score_fn", NodeKind.ACTIVATION, score, MLP),
            part(f"{m}.experts", NodeKind.EXPERTS, experts, MLP),
            part(f"{m}.experts.act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, pairs), MLP),
            part(f"{s}.gate_proj", NodeKind.LINEAR, blk.linear(t, h, inter, bias), MLP),
            part(f"{s}.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, bias), MLP),
            part(f"{s}.act_fn", NodeKind.ACTIVATION, blk.activation(spec.activation, t * inter), MLP),
            part(f"{s}:gate_mul", NodeKind.ELEMENTWISE,
                 ops.clamp(t * inter, 1) + ops.clamp(t * inter, 2) + blk.gate_product(inter), MLP),
            part(f"{s}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, bias), MLP),
            part(f"{m}:shared_mix", NodeKind.ELEMENTWISE, ops.elementwise("add", t * h), MLP),
        ]

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in ("quantization_config", "expert_dtype")}

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        """Three layers (sliding, CSA, HCA), the first hash-routed; the HCA ratio 8 (or the config's
        ``compress_rates`` when all are <= 8) and the window 4 bind at the test shapes, index_topk 2 past 8
        tokens."""
        rates = data.get("compress_rates")
        if not (isinstance(rates, dict) and set(rates) == {CSA, HCA} and all(0 < r <= 8 for r in rates.values())):
            rates = {CSA: 4, HCA: 8}
        drop = ("compress_ratios", "compress_rate_csa", "compress_rate_hca", "num_hash_layers",
                "partial_rotary_factor", "mlp_layer_types")
        return {k: v for k, v in self.hf_config(data).items() if k not in drop} | {
            "hidden_size": 64, "moe_intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
            "head_dim": 32, "qk_rope_head_dim": 8, "q_lora_rank": 16, "o_groups": 2, "o_lora_rank": 16,
            "index_n_heads": 4, "index_head_dim": 16, "index_topk": 2, "sliding_window": 4,
            "layer_types": [SLIDING, CSA, HCA], "compress_rates": rates, "num_hash_layers": 1,
            "n_routed_experts": 4, "num_experts_per_tok": 2, "hc_mult": 3, "hc_sinkhorn_iters": 3,
            "vocab_size": 128}
