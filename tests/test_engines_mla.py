"""Absorbed multi-head latent attention under the ``vllm`` engine (llm_profiler.engines, perf.phase_model).

Source: the DeepSeek-V2 paper (section 2.1.3 "Low-Rank Key-Value Joint Compression" and its appendix on
absorbing W^UK into W^Q and W^UV into W^O), as FlashMLA and vLLM's MLA backend run it for decode. With the
latent c_t = kv_a_layernorm(kv_a_proj(h_t)[:kv_lora]) and the shared rope key k^R_t cached per token:

    q_lat[h]  = q_nope[h] @ W^UK[h]                         (qk_nope -> kv_lora: absorbed into q)
    s[h, t]   = scale * (q_lat[h] . c_t + q_pe[h] . k^R_t)   (kv_lora + qk_rope MACs per pair and head)
    o_lat[h]  = sum_t softmax_t(s[h]) c_t                    (kv_lora MACs per pair and head)
    o[h]      = o_lat[h] @ W^UV[h]                           (kv_lora -> v_head: absorbed into o_proj's input)

and transformers instead re-expands every cached c_t through kv_b_proj (k_nope, v per head) each forward.
A reference module below is written from these equations, proven equal in output to transformers'
DeepseekV3Attention on tiny random weights for a decode step, and its matmul FLOPs are measured with
torch's FlopCounterMode and compared exactly with the rule's MACs.
"""

from __future__ import annotations

from typing import Any

import pytest

from llm_profiler import metrics as M
from llm_profiler import profile_model
from llm_profiler.config import load_config
from llm_profiler.families import get_family
from llm_profiler.perf import phase_model, roofline
from llm_profiler.profile import ModelProfile, profile_from_data


def _attention_macs(model: ModelProfile, layer: int, b: int, s: int, p: int) -> int:
    """MACs of one layer's attention block (every node of its self_attn)."""
    return sum(n.counts[M.MACS](b, s, p) for n in model.graph.nodes
               if n.layer == layer and n.block == "attn" and M.MACS in n.counts)


# --- DeepSeek-V3 at full size: 54 G MACs per decoded token, not 2.14 T ------------------------------------


def test_deepseek_v3_decode_counts_the_absorbed_macs() -> None:
    # DeepSeek-V3: H=128, q_lora 1536, kv_lora 512, qk_nope 128, qk_rope 64, v_head 128, hidden 7168, 61
    # layers (3 dense, 58 MoE); one decode step (B=1, S=1) after P=2048: every query keeps P + 1 = 2049 keys.
    b, s, p = 1, 1, 2048
    eager = profile_model("deepseek-v3")
    decode = phase_model("deepseek-v3", "decode", "vllm")
    prefill = phase_model("deepseek-v3", "prefill", "vllm")
    assert decode.graph.meta.get("mla") == "absorbed" and "mla" not in prefill.graph.meta
    # projections shared by both forms: q_a 7168*1536 + q_b 1536*128*192 + kv_a 7168*576 + o 128*128*7168
    proj = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 128 * 128 * 7168  # 170,328,064
    # absorbed core: q_nope -> latent 128*128*512 + scores 128*2049*(512+64) + context 128*2049*512
    #   + latent -> v_head 128*512*128
    absorbed = 128 * 128 * 512 + 128 * 2049 * (512 + 64) + 128 * 2049 * 512 + 128 * 512 * 128  # 302,129,152
    # transformers: kv_b_proj on all 2049 tokens 2049*512*128*256 + scores 128*2049*192 + context 128*2049*128
    naive = 2049 * 512 * 128 * 256 + 128 * 2049 * 192 + 128 * 2049 * 128  # 34,460,401,664
    assert _attention_macs(decode, 3, b, s, p) == proj + absorbed
    assert _attention_macs(eager, 3, b, s, p) == proj + naive
    # the rest (MLPs, router, experts, lm_head) is the same in both forms
    rest = eager.count(M.MACS, "model", b, s, p) - 61 * (proj + naive)
    assert decode.count(M.MACS, "model", b, s, p) == rest + 61 * (proj + absorbed)
    # 61 * (170,328,064 + 302,129,152) + rest = 54.03 G MACs per token (issue 12: "about 54 G"); the
    # transformers forward keeps its 2.14 T
    assert round(decode.count(M.MACS, "model", b, s, p) / 1e9, 2) == 54.03
    assert round(eager.count(M.MACS, "model", b, s, p) / 1e12, 2) == 2.14
    # the engine's prefill forwards keep the naive form (vLLM decompresses for prefill): for a 2048-token
    # prompt, flash keeps 2048*2049/2 = 2,098,176 pairs per head; naive: kv_b_proj on 2048 tokens
    # + 192 (scores) + 128 (context) MACs per pair and head; absorbed would cost more (576 + 512 per pair):
    pairs = 2048 * 2049 // 2
    naive_prefill = 2048 * 512 * 128 * 256 + 128 * pairs * (192 + 128)  # 120,301,027,328
    absorbed_prefill = 2048 * (128 * 128 * 512 + 128 * 512 * 128) + 128 * pairs * (576 + 512)  # 326,560,120,832
    assert _attention_macs(prefill, 3, 1, 2048, 0) == 2048 * proj + naive_prefill
    assert _attention_macs(decode, 3, 1, 2048, 0) == 2048 * proj + absorbed_prefill


def test_absorbed_mla_reads_the_latent_once_and_kv_b_proj_once() -> None:
    # Layer 3 at B=2, S=1, P=100: the latent cache holds 576 elements per token (512 + 64); absorbed, the
    # scores read it once for all 101 keys (2*101*576), kv_b_proj reads no cache and its weight once.
    decode = phase_model("deepseek-v3", "decode", "vllm")
    eager = profile_model("deepseek-v3")
    scores = decode.graph.node("model.layers.3.self_attn:scores")
    kv_b = decode.graph.node("model.layers.3.self_attn.kv_b_proj")
    assert sum(st.read(2, 1, 100) for st in scores.facts.states) == 2 * 101 * 576
    assert kv_b.facts.states == () and [w.shape for w in kv_b.facts.weights] == [(128 * 256, 512)]
    # transformers: kv_b_proj reads 2*101*512 latent elements, the scores 2*101*64 rope-key elements
    eager_kv_b = eager.graph.node("model.layers.3.self_attn.kv_b_proj")
    assert sum(st.read(2, 1, 100) for st in eager_kv_b.facts.states) == 2 * 101 * 512
    assert kv_b.counts[M.PARAMS](2, 1, 100) == 512 * 128 * 256  # parameters unchanged
    assert decode.count(M.PARAMS, "model", 1, 1, 0) == 671_026_404_352


def test_roofline_decode_uses_the_absorbed_form_and_says_so() -> None:
    vllm = roofline("deepseek-v3", "h200", "decode", past=2048)
    eager = roofline("deepseek-v3", "h200", "decode", past=2048, engine="hf-eager")
    assert any(n.startswith("MLA decode in the absorbed form") for n in vllm.notes)
    assert not any("MLA" in n for n in eager.notes)
    assert vllm.flops.total < eager.flops.total / 30  # 54 G vs 2.14 T MACs
    prefill = roofline("deepseek-v3", "h200", "prefill", seq=512)
    assert any(n.startswith("MLA prefill in the naive form") for n in prefill.notes)
    # a generation: its decode steps absorbed, its prefill naive; TPOT equals a lone decode step's time at
    # the same context when one new token is decoded (prompt 512, 2 new tokens: one decode step at P=512)
    gen = roofline("deepseek-v3", "h200", "generate", seq=512, new_tokens=2)
    step = roofline("deepseek-v3", "h200", "decode", past=512)
    assert gen.decode is not None and gen.prefill is not None
    assert gen.decode.flops.total == step.flops.total
    assert gen.prefill.flops.total == prefill.flops.total
    assert gen.tpot_s == pytest.approx(step.latency_s, rel=1e-12)


def test_models_without_mla_layers_are_unchanged_by_the_decode_variant() -> None:
    assert phase_model("llama-3.2-1b", "decode", "vllm") is phase_model("llama-3.2-1b", "prefill", "vllm")


# --- the reference module from the published equations, against transformers -------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _tiny_v3() -> dict[str, Any]:
    """DeepSeek-V3's config at the family's tiny dims (H=4, hidden 64, q_lora 48, kv_lora 32, qk_nope 16,
    qk_rope 8, v_head 12), yarn rope scaling and interleaved rope kept."""
    return get_family("deepseek_v3").tiny(dict(load_config("deepseek-v3").data))


def _rope_interleave(x: Any, cos: Any, sin: Any) -> Any:
    """RoPE on interleaved pairs (x_2i, x_2i+1), one angle per pair (DeepSeek-V3's layout): the rotated even
    halves, then the rotated odd halves."""
    c, s_ = cos[..., : cos.shape[-1] // 2], sin[..., : sin.shape[-1] // 2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * c - x2 * s_, x2 * c + x1 * s_], dim=-1)


class AbsorbedMLA:
    """MLA from the DeepSeek-V2 equations in the absorbed form, on the weights of a transformers module."""

    def __init__(self, attn: Any) -> None:
        self.a = attn
        cfg = attn.config
        self.h, self.dn, self.dr = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.dv, self.r = cfg.v_head_dim, cfg.kv_lora_rank
        w = attn.kv_b_proj.weight.view(self.h, self.dn + self.dv, self.r)  # per head: rows (k_nope | v) x latent
        self.w_uk, self.w_uv = w[:, : self.dn], w[:, self.dn:]  # (H, qk_nope, r), (H, v_head, r)

    def latent(self, x: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
        """What each token caches: c = norm(W^DKV x) (kv_lora) and the rotated shared key k^R (qk_rope)."""
        kv = self.a.kv_a_proj_with_mqa(x)
        c, k_pe = kv[..., : self.r], kv[..., self.r:]
        return self.a.kv_a_layernorm(c), _rope_interleave(k_pe, cos, sin)

    def queries(self, x: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
        b, s, _ = x.shape
        q = self.a.q_b_proj(self.a.q_a_layernorm(self.a.q_a_proj(x))).view(b, s, self.h, self.dn + self.dr)
        return q[..., : self.dn], _rope_interleave(q[..., self.dn:], cos.unsqueeze(2), sin.unsqueeze(2))

    def core(self, q_nope: Any, q_pe: Any, c: Any, k_pe: Any) -> Any:
        """The absorbed attention of one decode step (every query sees every cached key)."""
        b, s = q_nope.shape[:2]
        q_lat = torch.einsum("bshd,hdr->bshr", q_nope, self.w_uk)  # W^UK absorbed into q
        scores = torch.einsum("bshr,btr->bsht", q_lat, c) + torch.einsum("bshd,btd->bsht", q_pe, k_pe)
        probs = torch.softmax(scores * self.a.scaling, dim=-1)  # scaling: qk_head**-0.5 * yarn mscale**2
        o_lat = torch.einsum("bsht,btr->bshr", probs, c)  # context over the latent
        o = torch.einsum("bshr,hvr->bshv", o_lat, self.w_uv)  # W^UV absorbed into the output
        return self.a.o_proj(o.reshape(b, s, self.h * self.dv))


def _setup(b: int, p: int) -> tuple[Any, Any, Any, Any]:
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        DeepseekV3Attention,
        DeepseekV3RotaryEmbedding,
    )

    torch.manual_seed(0)
    cfg = DeepseekV3Config(**_tiny_v3())
    cfg._attn_implementation = "eager"
    attn = DeepseekV3Attention(cfg, layer_idx=0).double().eval()
    for w in attn.parameters():  # random weights of a visible scale (norm weights too)
        torch.nn.init.normal_(w, std=0.2)
    rotary = DeepseekV3RotaryEmbedding(cfg).double()
    x = torch.randn(b, p + 1, cfg.hidden_size, dtype=torch.float64)
    cos, sin = rotary(x, torch.arange(p + 1).expand(b, -1))
    return cfg, attn, x, (cos, sin)


@pytest.mark.parametrize("b, p", [(1, 9), (2, 5)])
def test_reference_equals_transformers_and_its_macs_equal_the_rule(b: int, p: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import DynamicCache

    cfg, attn, x, (cos, sin) = _setup(b, p)
    past, new = slice(0, p), slice(p, p + 1)
    # transformers: a prefill of P tokens fills the latent cache, then one decode step
    cache = DynamicCache(config=cfg)
    mask = torch.full((p, p), float("-inf"), dtype=torch.float64).triu(1)[None, None]
    with torch.no_grad():
        attn(x[:, past], (cos[:, past], sin[:, past]), mask, past_key_values=cache)
        with FlopCounterMode(display=False) as hf_flops:
            expected, _ = attn(x[:, new], (cos[:, new], sin[:, new]), None, past_key_values=cache)
    # the reference: the same latent cache (c, k^R of the P + 1 tokens), the absorbed decode step
    ref = AbsorbedMLA(attn)
    with torch.no_grad():
        c_past, pe_past = ref.latent(x[:, past], cos[:, past], sin[:, past])
        with FlopCounterMode(display=False) as ref_flops:
            c_new, pe_new = ref.latent(x[:, new], cos[:, new], sin[:, new])
            q_nope, q_pe = ref.queries(x[:, new], cos[:, new], sin[:, new])
            got = ref.core(q_nope, q_pe, torch.cat([c_past, c_new], 1), torch.cat([pe_past, pe_new], 1))
    # float64 weights; transformers takes the softmax in float32 (softmax(..., dtype=torch.float32)), so
    # the two agree to float32 precision (outputs of order 0.1-1, differences of order 1e-8)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7)
    layer: Any = cache.layers[0]  # a full-attention cache layer
    cached = layer.keys  # transformers caches the normed latent as a one-head "key"
    assert cached is not None and torch.equal(torch.cat([c_past, c_new], 1), cached[:, 0])

    # the rule's MACs for layer 0's attention nodes (tiny dims: H=4, hidden 64, q_lora 48, kv_lora 32,
    # qk_nope 16, qk_rope 8, v_head 12; S = 1, keys = P + 1):
    #   q_a 64*48 + q_b 48*4*24 + kv_a 64*40 + o 4*12*64 = 10,240 per token, and absorbed
    #   4*16*32 (q_nope -> latent) + 4*(P+1)*(32+8) (scores) + 4*(P+1)*32 (context) + 4*32*12 (output)
    data = _tiny_v3()
    decode = phase_model(profile_from_data(data), "decode", "vllm")
    per_token = 64 * 48 + 48 * 4 * 24 + 64 * 40 + 4 * 12 * 64
    absorbed = 4 * 16 * 32 + 4 * (p + 1) * 40 + 4 * (p + 1) * 32 + 4 * 32 * 12
    rule = _attention_macs(decode, 0, b, 1, p)
    assert rule == b * (per_token + absorbed)
    assert ref_flops.get_total_flops() == 2 * rule  # FlopCounterMode: 2 FLOPs per multiply-accumulate
    # and transformers' own forward measures as the reference graph says: kv_b_proj on all P + 1 tokens
    # 32*4*28 per token, scores 4*(P+1)*24, context 4*(P+1)*12
    eager = profile_from_data(data)
    naive = (p + 1) * 32 * 4 * 28 + 4 * (p + 1) * 24 + 4 * (p + 1) * 12
    assert _attention_macs(eager, 0, b, 1, p) == b * (per_token + naive)
    assert hf_flops.get_total_flops() == 2 * b * (per_token + naive)
