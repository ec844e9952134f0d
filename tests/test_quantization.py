"""Weight storage from ``quantization_config`` (llm_profiler.quantization), each figure derived beside it."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest

from llm_profiler import memory, perf
from llm_profiler.config.loader import load_config
from llm_profiler.errors import QueryError
from llm_profiler.facts import TensorClass
from llm_profiler.hardware.dtypes import weight_bytes
from llm_profiler.profile import profile_model
from llm_profiler.quantization import MXFP4, NVFP4, Quantization, bnb_4bit, fp8_block, from_config

# --- Llama-3.1-8B: the dense reference for the per-format byte rules -----------------------------------
# h 4096, 32 layers, 32 heads / 8 KV heads of 128 (q, o: 4096 x 4096; k, v: 1024 x 4096), intermediate
# 14336 (gate, up: 14336 x 4096; down: 4096 x 14336), vocabulary 128256, embedding and lm_head untied.
H, INTER, KV, V, L = 4096, 14336, 1024, 128256, 32
LLAMA_MATRICES = [(H, H), (KV, H), (KV, H), (H, H), (INTER, H), (INTER, H), (H, INTER)]  # (out, in) of one layer
LLAMA_ELEMENTS = sum(o * i for o, i in LLAMA_MATRICES)  # 2*16777216 + 2*4194304 + 3*58720256 = 218103808
LLAMA_BF16_REST = 2 * V * H * 2 + (2 * H * L + H) * 2  # embed + lm_head, 65 norm vectors: bf16


def llama_with(quantization_config: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(load_config("llama-3.1-8b").data)
    data["quantization_config"] = quantization_config
    return data


def test_llama_matrix_elements() -> None:
    assert LLAMA_ELEMENTS == 218_103_808
    # every parameter is a layer matrix, the embedding / lm_head or a norm: the published 8,030,261,248
    assert L * LLAMA_ELEMENTS + 2 * V * H + 2 * H * L + H == 8_030_261_248


def test_no_quantization_config_is_unchanged() -> None:
    # bf16 everywhere: 2 bytes per parameter, 8,030,261,248 * 2
    assert memory.weights_bytes("llama-3.1-8b") == 16_060_522_496
    assert memory.weights_bytes("llama-3.1-8b", quantization="none") == 16_060_522_496
    a = perf.roofline("llama-3.1-8b", "a100-80gb", "decode", batch=4, past=1000)
    b = perf.roofline("llama-3.1-8b", "a100-80gb", "decode", batch=4, past=1000, weight_dtype="bf16")
    assert a.latency_s == b.latency_s and a.bytes_by_category == b.bytes_by_category
    assert a.dtypes == {"weight": "bf16", "act": "bf16", "kv": "bf16"} and a.notes == b.notes


def test_gpt_oss_20b_mxfp4_experts() -> None:
    # quantization_config {"quant_method": "mxfp4", "modules_to_not_convert": [self_attn, router, embed,
    # lm_head]}: only the routed experts at MXFP4 (4-bit E2M1 + an 8-bit E8M0 scale per 32 elements).
    q = from_config(load_config("gpt-oss-20b"))
    assert q is not None and q.method == "mxfp4" and q.experts == MXFP4 and q.matrix is None
    model = profile_model("gpt-oss-20b")
    experts = [w for n in model.nodes for w in n.facts.weights if w.tensor_class == TensorClass.EXPERTS]
    assert len(experts) == 24 and {w.shape for w in experts} == {(32, 24_891_840)}
    # one expert as the facts state it: gate_up 2880 x 5760 + its bias 5760, down 2880 x 2880 + bias 2880
    # (the facts keep the biases in the experts tensor, so they are counted at MXFP4 too: the checkpoint
    # stores them in bf16, 24 * 32 * 8640 * 11.75 / 8 = 9,745,920 bytes more than counted here)
    one = 2880 * 5760 + 5760 + 2880 * 2880 + 2880
    assert one == 24_891_840
    # MXFP4: 24,891,840 / 32 = 777,870 blocks; 4 * 24,891,840 + 8 * 777,870 = 105,790,320 bits = 13,223,790 B
    per_expert = (4 * one + 8 * (one // 32)) // 8
    assert per_expert == 13_223_790
    expert_elements = 24 * 32 * one  # 19,116,933,120
    rest = 20_914_757_184 - expert_elements  # the published 20.91 B params minus the experts: all bf16
    expected = 24 * 32 * per_expert + 2 * rest  # 10,155,870,720 + 3,595,648,128
    assert expected == 13_751_518_848
    assert memory.weights_bytes("gpt-oss-20b") == expected
    # 4.25 bits per expert element exactly (32 divides every expert)
    assert 24 * 32 * per_expert * 8 == expert_elements * 17 // 4
    # without the config (or with an explicit weight dtype): every parameter at 2 bytes
    assert memory.weights_bytes("gpt-oss-20b", quantization="none") == 2 * 20_914_757_184
    assert memory.weights_bytes("gpt-oss-20b", weight_dtype="bf16") == 2 * 20_914_757_184


def test_gpt_oss_roofline_reports_the_format() -> None:
    # hf-eager: the vllm view drops the attention sinks' weight (64 per layer) from the stored bytes
    r = perf.roofline("gpt-oss-20b", "a100-80gb", "decode", batch=1, past=100, engine="hf-eager")
    assert "mxfp4" in r.dtypes["quantization"]
    assert any(n.startswith("weights stored as the config's quantization_config: mxfp4") for n in r.notes)
    assert r.memory is not None and r.memory.weights == 13_751_518_848
    bf16 = perf.roofline("gpt-oss-20b", "a100-80gb", "decode", batch=1, past=100, weight_dtype="bf16",
                         engine="hf-eager")
    assert "weight dtype bf16 overrides the config's quantization_config (mxfp4)" in bf16.notes
    assert "quantization" not in bf16.dtypes and bf16.memory is not None
    assert bf16.memory.weights == 2 * 20_914_757_184
    # decode of one token reads the 4 routed experts of each layer: MXFP4 reads fewer bytes
    assert r.bytes_by_category["weights"] < bf16.bytes_by_category["weights"]
    assert r.bytes_by_category["kv_read"] == bf16.bytes_by_category["kv_read"]


def _fp8(out: int, inp: int) -> int:
    """fp8 matrix: 1 byte per element + one fp32 scale per 128 x 128 block (partial blocks count whole)."""
    return out * inp + 4 * (-(-out // 128)) * (-(-inp // 128))


def test_deepseek_v3_fp8_block_scales() -> None:
    # {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}: every linear layer and the
    # routed / shared experts in fp8 with fp32 128x128 block scales; embedding, lm_head, norms and the
    # router (mlp.gate) bf16.
    q = from_config(load_config("deepseek-v3"))
    assert q is not None and q.matrix == fp8_block(128, 128) and q.experts == q.matrix
    h, V, inter, moe, E = 7168, 129280, 18432, 2048, 256
    attn = (_fp8(1536, h) + _fp8(24576, 1536)  # q_a_proj, q_b_proj (128 heads x 192)
            + _fp8(576, h)  # kv_a_proj_with_mqa: 512 + 64 rows -> ceil(576/128) = 5 row blocks
            + _fp8(32768, 512) + _fp8(h, 16384))  # kv_b_proj (128 x (128 + 128)), o_proj
    norms = (h + 1536 + 512 + h) * 2  # input, q_a, kv_a, post-attention norms, bf16
    dense = 2 * _fp8(inter, h) + _fp8(h, inter)
    # 256 experts of gate_up (4096 x 7168) and down (7168 x 2048): 256 * 3 * 16 * 56 = 688,128 blocks
    experts = E * 3 * moe * h + 4 * E * 3 * (moe // 128) * (h // 128)
    shared = 2 * _fp8(moe, h) + _fp8(h, moe)
    router = E * h * 2  # bf16
    expected = (61 * (attn + norms) + 3 * dense + 58 * (experts + shared + router)
                + 2 * V * h * 2 + h * 2)  # embed_tokens + lm_head (untied) and the final norm, bf16
    assert expected == 673_150_552_416
    assert memory.weights_bytes("deepseek-v3") == expected
    assert memory.weights_bytes("deepseek-v3", quantization="none") == 2 * 671_026_404_352


def test_gptq_int4_g128() -> None:
    # GPTQ int4, group 128: 4 bits + an fp16 scale and a 4-bit zero point per 128 inputs of a row
    # (qweight / scales / qzeros); every layer matrix has 4096 or 14336 inputs (multiples of 128).
    data = llama_with({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True})
    groups = sum(o * (i // 128) for o, i in LLAMA_MATRICES)  # 1,703,936 per layer
    per_layer = (4 * LLAMA_ELEMENTS + 20 * groups) // 8  # (872,415,232 + 34,078,720) / 8 = 113,311,744
    assert per_layer == 113_311_744
    expected = L * per_layer + LLAMA_BF16_REST
    assert expected == 5_727_854_592
    assert memory.weights_bytes(data) == expected
    assert memory.weights_bytes("llama-3.1-8b", weight_dtype="int4") == expected  # the same int4 format


def test_awq_without_zero_point_and_int8_gptq() -> None:
    awq = llama_with({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": False})
    groups = sum(o * (i // 128) for o, i in LLAMA_MATRICES)
    assert memory.weights_bytes(awq) == L * (4 * LLAMA_ELEMENTS + 16 * groups) // 8 + LLAMA_BF16_REST
    gptq8 = llama_with({"quant_method": "gptq", "bits": 8, "group_size": 128})
    assert memory.weights_bytes(gptq8) == L * (8 * LLAMA_ELEMENTS + 24 * groups) // 8 + LLAMA_BF16_REST


def test_nvfp4_modelopt() -> None:
    # NVFP4: 4-bit E2M1 + an fp8 scale per 16 elements + fp32 weight_scale_2 and input_scale per matrix
    data = llama_with({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
                       "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]})
    q = from_config(data)
    assert q is not None and q.matrix == NVFP4 and any("kv_dtype='fp8'" in n for n in q.notes)
    per_layer = (4 * LLAMA_ELEMENTS + 8 * (LLAMA_ELEMENTS // 16) + 7 * 64) // 8  # 122,683,392 + 56
    assert per_layer == 122_683_448
    assert memory.weights_bytes(data) == L * per_layer + LLAMA_BF16_REST
    # hf_quant_config.json's layout: {"quantization": {"quant_algo": ..., "group_size": ...}}
    nested = llama_with({"quant_method": "modelopt", "quantization": {"quant_algo": "NVFP4", "group_size": 16}})
    assert memory.weights_bytes(nested) == L * per_layer + LLAMA_BF16_REST


def test_bitsandbytes_nf4() -> None:
    # nf4, blocksize 64: 4 bits + an fp32 absmax per 64 elements = 4.5 bits per element
    plain = llama_with({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"})
    assert from_config(plain) == Quantization(method="bitsandbytes", matrix=bnb_4bit("nf4"))
    assert memory.weights_bytes(plain) == L * (LLAMA_ELEMENTS * 9 // 16) + LLAMA_BF16_REST  # 122,683,392/layer
    # double quant: 8-bit absmax per 64 + an fp32 scale per 256 absmax blocks (every matrix: 16384 | numel)
    dq = llama_with({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                     "bnb_4bit_use_double_quant": True})
    per_layer = sum((4 * o * i + 8 * (o * i // 64) + 32 * (o * i // 16384)) // 8 for o, i in LLAMA_MATRICES)
    assert per_layer == 4 * LLAMA_ELEMENTS // 8 + LLAMA_ELEMENTS // 64 + 4 * (LLAMA_ELEMENTS // 16384)
    assert memory.weights_bytes(dq) == L * per_layer + LLAMA_BF16_REST
    # LLM.int8(): int8 + an fp32 scale per output row
    int8 = llama_with({"quant_method": "bitsandbytes", "load_in_8bit": True})
    rows = sum(o for o, _ in LLAMA_MATRICES)  # 4096 + 1024 + 1024 + 4096 + 2 * 14336 + 4096 = 43008
    assert memory.weights_bytes(int8) == L * (LLAMA_ELEMENTS + 4 * rows) + LLAMA_BF16_REST


def test_compressed_tensors_w4a16_group() -> None:
    # llm-compressor W4A16: int4, symmetric, group 128: a bf16 scale per group, no zero point
    data = llama_with({"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
                       "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                           "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                           "group_size": 128}}}})
    groups = sum(o * (i // 128) for o, i in LLAMA_MATRICES)
    assert memory.weights_bytes(data) == L * (4 * LLAMA_ELEMENTS + 16 * groups) // 8 + LLAMA_BF16_REST
    # FP8 per channel (FP8_DYNAMIC): fp8 values + a bf16 scale per output row
    ch = llama_with({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"],
                     "weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}}})
    rows = sum(o for o, _ in LLAMA_MATRICES)
    assert memory.weights_bytes(ch) == L * (LLAMA_ELEMENTS + 2 * rows) + LLAMA_BF16_REST


def test_unknown_method_is_a_note() -> None:
    data = llama_with({"quant_method": "hqq", "nbits": 4})
    q = from_config(data)
    assert q is not None and q.matrix is None and q.experts is None
    assert "quant_method 'hqq' is not known" in q.notes[0]
    assert memory.weights_bytes(data) == 16_060_522_496  # bf16, as without a config
    fit = memory.largest_batch(data, "a100-80gb", seq=512)
    assert any("'hqq' is not known" in n for n in fit.notes)
    # malformed settings: a note too, never a crash
    bad = from_config({"quantization_config": {"quant_method": "fp8", "weight_block_size": "big"}})
    assert bad is not None and bad.matrix is None and "weight_block_size" in bad.notes[0]
    assert from_config({"quantization_config": ["not", "a", "dict"]}) is not None


def test_precedence_and_errors() -> None:
    with pytest.raises(QueryError, match="quantization must be one of config, none"):
        memory.weights_bytes("gpt-oss-20b", quantization="mxfp4")
    with pytest.raises(QueryError, match="quantization must be one of"):
        perf.settings("a100-80gb", quantization="fp8")
    # a ModelProfile of a preset finds its config; an explicit weight dtype wins over it
    model = profile_model("gpt-oss-20b")
    assert memory.weights_bytes(model) == 13_751_518_848
    assert memory.weights_bytes(model, weight_dtype="int4") == memory.weights_bytes("gpt-oss-20b", "int4")


def test_module_patterns_follow_transformers() -> None:
    q = Quantization(method="fp8", matrix=fp8_block(128, 128), skip=("gate", "model.layers.1.mlp"))
    assert q.skipped("model.layers.3.mlp.gate")  # a suffix
    assert not q.skipped("model.layers.3.mlp.gate_proj")  # not at a module boundary
    assert q.skipped("model.layers.1.mlp.down_proj") and not q.skipped("model.layers.11.mlp.down_proj")
    oss = from_config(load_config("gpt-oss-20b"))
    assert oss is not None and oss.skipped("model.layers.7.self_attn.q_proj") and oss.skipped("lm_head")
    assert not oss.skipped("model.layers.7.mlp.experts")


def test_block_format_bytes() -> None:
    assert MXFP4.effective_bits == Fraction(17, 4)  # 4 + 8/32
    assert fp8_block(128, 128).effective_bits == 8 + Fraction(32, 128 * 128)
    assert bnb_4bit("nf4", double_quant=True).effective_bits == 4 + Fraction(8, 64) + Fraction(32, 64 * 256)
    # kv_a_proj_with_mqa 576 x 7168: 576 * 7168 bytes + 4 * ceil(576/128) * 56 = 4,128,768 + 1,120
    assert weight_bytes(fp8_block(128, 128), 576, 7168) == 4_129_888
    # MXFP4 of a 2880 x 5760 gate_up: 16,588,800 * 4 bits + 518,400 E8M0 scales = 8,294,400 + 518,400 B
    assert weight_bytes(MXFP4, 2880, 5760) == 8_812_800


def test_headers_name_the_quantized_weight_format() -> None:
    # fit's and roofline's headers name the format quantization_config declares, not the default bf16 alone
    from llm_profiler.traffic import weights_label

    assert weights_label({"weight": "bf16", "act": "bf16", "kv": "bf16"}) == "bf16"
    described = {"weight": "bf16", "act": "bf16", "kv": "bf16",
                 "quantization": "fp8: linear layers fp8-b128x128, routed experts fp8-b128x128; ..."}
    assert weights_label(described) == "fp8 per quantization_config, others bf16"
