"""The device model (issue 18): rate curves, the per-node time formula, the op counts charged, the cached
CPU measurement and the datasheet model. Structure and formulas only: nothing here is timed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from llm_profiler import profile_model
from llm_profiler.errors import QueryError
from llm_profiler.graph import NodeKind
from llm_profiler.hardware import get_device
from llm_profiler.hardware.devices import CUDA_EAGER_OP_S, datasheet_model
from llm_profiler.hardware.roofline import (
    GLIBC_MMAP_THRESHOLD_MAX,
    BandwidthCurve,
    DeviceModel,
    RateCurve,
    kernel_time,
)
from llm_profiler.kernels import (
    BMM,
    EAGER_OPS,
    captures_graphs,
    copy_bytes,
    eager_ops,
    eager_outputs,
    fresh_output_bytes,
    group_times,
    kernel_class,
    node_ops,
)
from llm_profiler.perf import phase_report, settings
from llm_profiler.phases import Phase

CURVE = RateCurve(m=(1, 4, 16), flops_per_s=(2e9, 10e9, 30e9))


def _model(per_op_s: float = 2e-6, captured_op_s: float = 0.0) -> DeviceModel:
    return DeviceModel(gemm={"fp32": CURVE, "bf16": CURVE}, bmm={"fp32": RateCurve(m=(1,), flops_per_s=(5e9,))},
                       gemv_bandwidth={"fp32": 10e9, "bf16": 10e9},
                       elementwise_bandwidth={"fp32": 20e9, "bf16": 20e9}, vector_flops={"fp32": 4e9, "bf16": 4e9},
                       per_op_s=per_op_s, captured_op_s=captured_op_s)


# ---------------------------------------------------------------- the efficiency curve


def test_curve_interpolates_in_log2_m() -> None:
    assert CURVE.at(4) == 10e9 and CURVE.at(16) == 30e9  # grid points exactly
    # M = 8: log2 8 = 3 lies halfway between log2 4 = 2 and log2 16 = 4 -> (10 + 30) / 2 = 20 GFLOP/s
    assert CURVE.at(8) == pytest.approx(20e9)
    # M = 2: halfway between 1 and 4 in log2 (0, 2) -> (2 + 10) / 2 = 6 GFLOP/s
    assert CURVE.at(2) == pytest.approx(6e9)
    assert CURVE.at(0.5) == 2e9 and CURVE.at(1000) == 30e9  # clamped outside the grid
    np.testing.assert_allclose(CURVE.at_array(np.array([0.5, 2, 8, 16, 1000])), [2e9, 6e9, 20e9, 30e9, 30e9])


@pytest.mark.parametrize(("m", "rates"), [((4, 1), (1.0, 2.0)), ((1, 2), (1.0,)), ((0, 2), (1.0, 2.0)),
                                          ((1, 2), (1.0, -2.0))])
def test_curve_rejects_bad_grids(m: tuple[int, ...], rates: tuple[float, ...]) -> None:
    with pytest.raises(QueryError):
        RateCurve(m=m, flops_per_s=rates)


# ---------------------------------------------------------------- the time formula


def test_kernel_time_is_max_of_compute_and_bytes_plus_ops() -> None:
    dm = _model()
    # a linear at M = 16: 3e9 FLOP / 30e9 = 0.1 s; 0.5e9 B / GEMV 10e9 = 0.05 s; 4 ops x 2 us = 8 us
    t = kernel_time(dm, "linear", "fp32", 3e9, 0, 0.5e9, 16, 4)
    assert (t.compute_time_s, t.memory_time_s, t.op_time_s) == pytest.approx((0.1, 0.05, 8e-6))
    assert t.time_s == pytest.approx(0.100008) and t.bound == "compute"
    # at M = 1 the same work is 3e9 / 2e9 = 1.5 s of compute
    assert kernel_time(dm, "linear", "fp32", 3e9, 0, 0.5e9, 1, 0).time_s == pytest.approx(1.5)
    # elementwise: bytes at the elementwise bandwidth, 2e9 B / 20e9 = 0.1 s > 1e8 FLOP / 4e9 = 0.025 s
    t = kernel_time(dm, "elementwise", "fp32", 0, 1e8, 2e9, 1, 6)
    assert t.time_s == pytest.approx(0.1 + 6 * 2e-6) and t.bound == "memory"
    # a bmm takes the bmm curve: 1e9 / 5e9 = 0.2 s
    assert kernel_time(dm, "bmm", "fp32", 1e9, 0, 0, 1, 0).time_s == pytest.approx(0.2)
    # a captured graph pays captured_op_s per op (here 0)
    assert kernel_time(dm, "linear", "fp32", 0, 0, 1e9, 1, 4, captured=True).time_s == pytest.approx(0.1)


def test_kernel_time_rejects_bad_inputs() -> None:
    with pytest.raises(QueryError, match="kernel class"):
        kernel_time(_model(), "conv", "fp32", 1, 0, 1, 1, 0)
    with pytest.raises(QueryError, match="ops"):
        kernel_time(_model(), "linear", "fp32", 1, 0, 1, 1, -1)
    with pytest.raises(QueryError, match="fp16"):
        kernel_time(_model(), "linear", "fp16", 1, 0, 1, 1, 0)


# ---------------------------------------------------------------- op counts and kernel classes


def test_eager_op_table_totals_for_llama_3_2_1b() -> None:
    m = profile_model("llama-3.2-1b")
    # one layer: 2 norms x 6 + 7 linears x 4 + rope 16 + kv_cache 2 + scores 18 + softmax 1 + context 13
    #            + silu 1 + gate product 1 + residual 2 = 94
    layer = 2 * 6 + 7 * 4 + 16 + 2 + 18 + 1 + 13 + 1 + 1 + 2
    assert layer == 94
    assert sum(eager_ops(n) for n in m.nodes if n.layer == 0) == layer
    # the model: positions 26 + rotary 8 + embedding 1 + 16 layers + final norm 6 + lm_head 6 = 1551 at fp32,
    # the aten ops a decode step dispatches (measured in test_eager_ops_match_the_dispatch)
    assert sum(eager_ops(n) for n in m.nodes) == 26 + 8 + 1 + 16 * 94 + 6 + 6 == 1551
    # bf16: + 2 casts per RMSNorm (33), + 2 per eager softmax (16), + 3 in the rotary tables = 1551 + 101
    assert sum(eager_ops(n, "bf16") for n in m.nodes) == 1551 + 33 * 2 + 16 * 2 + 3 == 1652


def test_kernel_classes_and_profiles() -> None:
    m = profile_model("llama-3.2-1b")
    by_kind = {n.kind: n for n in m.nodes}
    assert kernel_class(by_kind[NodeKind.LINEAR]) == "linear" and kernel_class(by_kind[NodeKind.LM_HEAD]) == "linear"
    assert kernel_class(by_kind[NodeKind.ATTN_SCORES]) == "bmm" == kernel_class(by_kind[NodeKind.ATTN_CONTEXT])
    assert kernel_class(by_kind[NodeKind.NORM]) == "elementwise" == kernel_class(by_kind[NodeKind.ROPE])
    assert node_ops(by_kind[NodeKind.ROPE], "hf-eager") == EAGER_OPS[NodeKind.ROPE] == 16
    assert node_ops(by_kind[NodeKind.ROPE], "vllm") == 1  # one fused kernel
    assert captures_graphs("vllm") and not captures_graphs("hf-eager")


def test_attention_rows_by_profile() -> None:
    from llm_profiler.kernels import kernel_facts
    from llm_profiler.perf import phase_model
    from llm_profiler.traffic import dtypes, model_traffic

    def scores_m(engine: str) -> Any:
        model = phase_model("llama-3.2-1b", "prefill", engine)
        groups = model_traffic(model, dtypes("bf16", "bf16")).groups
        kf = kernel_facts(groups, engine, "bf16", "last")
        g = next(i for i, (nodes, _) in enumerate(groups) if nodes[0].kind == NodeKind.ATTN_SCORES)
        return kf.values(2, 7, 3)[g][1]

    assert scores_m("hf-eager") == 7  # eager: (S x D) @ (D x keys) per sequence and head: M = S
    assert scores_m("vllm") == 2 * 7  # flash records the kept pairs as one row; its kernel tiles B*S query rows


def _decode_time(per_op_s: float, engine: str = "hf-eager", dtype: str = "fp32") -> float:
    st = settings("a100-80gb", weight_dtype=dtype, act_dtype=dtype, compute_dtype=dtype,
                  device_model=_model(per_op_s))
    return phase_report("llama-3.2-1b", Phase.decode(1, 100, 1, "last"), st, engine=engine).latency_s


def test_per_op_cost_charged_is_ops_times_cost() -> None:
    # the same forward with and without a per-op cost differs by exactly ops x cost: 1551 ops x 2 us
    assert _decode_time(2e-6) - _decode_time(0.0) == pytest.approx(1551 * 2e-6, rel=1e-9)
    assert _decode_time(2e-6, dtype="bf16") - _decode_time(0.0, dtype="bf16") == pytest.approx(1652 * 2e-6, rel=1e-9)
    # vllm replays a captured graph: captured_op_s (0 here) per op, whatever per_op_s is
    assert _decode_time(2e-6, "vllm") == pytest.approx(_decode_time(0.0, "vllm"), rel=1e-12)


def test_eager_softmax_casts_charged_below_fp32() -> None:
    from llm_profiler.kernels import SOFTMAX_CAST_BYTES, extra_bytes

    m = profile_model("llama-3.2-1b")
    softmax = next(n for n in m.nodes if n.kind == NodeKind.ATTN_SOFTMAX)
    # a decode step at context 100: 32 heads x 1 query x 101 keys = 3,232 scores; bf16: 16 more bytes each
    assert extra_bytes(softmax, "hf-eager", "bf16")(1, 1, 100) == 32 * 101 * SOFTMAX_CAST_BYTES == 51_712
    assert extra_bytes(softmax, "hf-eager", "fp32")(1, 1, 100) == 0  # no casts at fp32
    assert extra_bytes(softmax, "vllm", "bf16")(1, 1, 100) == 0  # flash keeps the scores on chip
    # and the time charges them: at 20 GB/s elementwise, 16 layers x 16 x 51,712 B / 20e9 = 661.9 us more than
    # without (the vector rate set high, so the softmax's bytes, not its arithmetic, bound it)
    dm = _model(0.0).model_copy(update={"vector_flops": {"fp32": 1e15, "bf16": 1e15}})
    st = settings("a100-80gb", weight_dtype="bf16", act_dtype="bf16", compute_dtype="bf16", device_model=dm)
    base = phase_report("llama-3.2-1b", Phase.decode(1, 100, 1, "last"), st, engine="hf-eager").latency_s
    import llm_profiler.kernels as kernels

    kernels.SOFTMAX_CAST_BYTES = 0
    try:
        from llm_profiler import perf

        perf._EVALUATORS.clear()
        without = phase_report("llama-3.2-1b", Phase.decode(1, 100, 1, "last"), st, engine="hf-eager").latency_s
    finally:
        kernels.SOFTMAX_CAST_BYTES = SOFTMAX_CAST_BYTES
        perf._EVALUATORS.clear()
    assert base - without == pytest.approx(16 * 51_712 / 20e9, rel=1e-6)


def test_gemv_bandwidth_by_weight_size() -> None:
    curve = BandwidthCurve(size_bytes=(2**20, 2**24, 2**28), bytes_per_s=(40e9, 20e9, 10e9))
    assert curve.at(2**22) == pytest.approx(30e9)  # halfway in log2 between 1 MiB and 16 MiB
    assert curve.at(2**10) == 40e9 and curve.at(2**40) == 10e9  # clamped at the ends
    assert list(curve.at(np.array([2**20, 2**26]))) == pytest.approx([40e9, 15e9])
    with pytest.raises(QueryError, match="ascending"):
        BandwidthCurve(size_bytes=(4, 2), bytes_per_s=(1.0, 1.0))
    dm = _model().model_copy(update={"gemv_curve": {"fp32": curve}})
    assert dm.bandwidth("linear", "fp32", 2**24) == pytest.approx(20e9)
    assert dm.bandwidth("linear", "fp32") == 10e9  # no size: the single GEMV figure
    assert dm.bandwidth("linear", "bf16", 2**24) == 10e9  # no curve for bf16


def test_eager_outputs_of_attention_at_a_long_context() -> None:
    m = profile_model("qwen2.5-0.5b")  # 14 heads, 2 KV heads of 64: repeat_kv copies K and V to 14 heads
    scores = next(n for n in m.nodes if n.kind == NodeKind.ATTN_SCORES)
    cache = next(n for n in m.nodes if n.kind == NodeKind.KV_CACHE)
    softmax = next(n for n in m.nodes if n.kind == NodeKind.ATTN_SOFTMAX)
    out = eager_outputs(scores)
    # a decode step after 8192 tokens: 8193 keys; the scores 14 x 1 x 8193, the copy of K 14 x 8193 x 64
    assert out.largest(1, 1, 8192) == 14 * 8193 == 114_702
    assert out.copy(1, 1, 8192) == 14 * 8193 * 64 == 7_340_928
    # the cache's torch.cat of K (and of V): 2 KV heads x 8192 held tokens x 64
    assert eager_outputs(cache).cache_cat(1, 1, 8192) == 2 * 8192 * 64 == 1_048_576
    # below fp32 the eager softmax casts its input up and runs in fp32: 2 fp32 tensors of the scores
    assert eager_outputs(softmax, "bf16").fp32(1, 2048, 0) == 2 * 14 * 2048 * 2048
    assert eager_outputs(softmax, "fp32").fp32(1, 2048, 0) == 0


def test_fresh_outputs_are_those_of_32_mib_or_more() -> None:
    # three groups: (largest, computing, fp32, copy, cache_cat) elements, fp32 activations and cache
    groups = [(1000, 3000, 0, 0, 0), (10, 10, 0, 9_000_000, 0), (100, 100, 0, 0, 2_000_000)]
    fresh = fresh_output_bytes(groups, 4.0, 4.0, GLIBC_MMAP_THRESHOLD_MAX)
    # only the 36 MB copy reaches 32 MiB (33,554,432 B): mapped afresh every call; the cache's two 8 MB cats and
    # the small outputs come back from the heap
    assert [float(f) for f in fresh] == [0.0, 36_000_000.0, 0.0]
    # an S x S chain of 40 MB outputs: every computing output of the group, plus its fp32 intermediates
    chain = fresh_output_bytes([(10_000_000, 30_000_000, 20_000_000, 0, 0)], 4.0, 4.0, GLIBC_MMAP_THRESHOLD_MAX)
    assert float(chain[0]) == 30_000_000 * 4 + 20_000_000 * 4
    # over decode steps (arrays): per step, the copy crosses 32 MiB at the second
    steps = fresh_output_bytes([(1, 1, 0, np.array([1e6, 1e7]), 0)], 4.0, 4.0, GLIBC_MMAP_THRESHOLD_MAX)
    assert list(steps[0]) == [0.0, 4e7]


def test_fresh_output_cost_of_an_8k_decode_step() -> None:
    # Llama-3.2-1B, fp32, one token after 8192: each layer's two repeat_kv copies (32 x 8193 x 64 x 4 B =
    # 67,117,056 B, over 32 MiB) are mapped afresh every step: 16 x 2 copies; Qwen2.5-0.5B's (14 x 8193 x 64
    # x 4 = 29,363,712 B) stay under the cap and add nothing
    dm = _model(0.0)
    faults = dm.model_copy(update={"fresh_output_s_per_byte": 1e-9})
    phase = Phase.decode(1, 8192, 1, "last")

    def latency(name: str, model: DeviceModel, engine: str = "hf-eager") -> float:
        st = settings("a100-80gb", weight_dtype="fp32", act_dtype="fp32", compute_dtype="fp32", device_model=model)
        return phase_report(name, phase, st, engine=engine).latency_s

    assert latency("llama-3.2-1b", faults) - latency("llama-3.2-1b", dm) == pytest.approx(
        16 * 2 * 67_117_056 * 1e-9, rel=1e-9)  # 2.148 s at 1 ns per byte
    assert latency("qwen2.5-0.5b", faults) == latency("qwen2.5-0.5b", dm)
    assert latency("llama-3.2-1b", faults, "vllm") == latency("llama-3.2-1b", dm, "vllm")  # a captured graph


@pytest.mark.parametrize("fresh", [0.0, 1e-9])
def test_generation_steps_use_the_device_model(fresh: float) -> None:
    dm = _model().model_copy(update={"fresh_output_s_per_byte": fresh})  # vectorised steps, fresh pages too
    st = settings("a100-80gb", weight_dtype="fp32", act_dtype="fp32", compute_dtype="fp32", device_model=dm)
    gen = phase_report("llama-3.2-1b", Phase.generate(1, 16, 3, 0, "last"), st, engine="hf-eager")
    steps = [phase_report("llama-3.2-1b", Phase.decode(1, 16 + i, 1, "last"), st, engine="hf-eager").latency_s
             for i in range(2)]
    pre = phase_report("llama-3.2-1b", Phase.prefill(1, 16, 0, "last"), st, engine="hf-eager").latency_s
    # the generation = its prefill + each decode step, each evaluated under the device model
    assert gen.ttft_s == pytest.approx(pre, rel=1e-12)
    assert gen.tpot_s == pytest.approx(sum(steps) / 2, rel=1e-9)


def test_settings_device_model_validation() -> None:
    with pytest.raises(QueryError, match="device_model"):
        settings("a100-80gb", device_model="measured")
    with pytest.raises(QueryError, match="fp16"):
        settings("a100-80gb", act_dtype="fp16", device_model=_model())
    assert settings("a100-80gb").device_model is None  # the plain roofline unless asked


# ---------------------------------------------------------------- datasheet GPUs


def test_datasheet_model_of_h100() -> None:
    dm = datasheet_model("h100")
    peak, bw = get_device("h100").peak("bf16"), get_device("h100").memory_bandwidth
    assert dm.matmul_rate("linear", "bf16", 128) == pytest.approx(0.75 * peak)  # 0.75 x min(1, 128/128)
    assert dm.matmul_rate("linear", "bf16", 4096) == pytest.approx(0.75 * peak)
    assert dm.matmul_rate("linear", "bf16", 64) == pytest.approx(0.75 * 64 / 128 * peak)
    assert dm.matmul_rate("linear", "bf16", 1) == pytest.approx(0.75 / 128 * peak)
    assert dm.bandwidth("linear", "bf16") == pytest.approx(0.85 * bw)  # GEMV
    assert dm.bandwidth("elementwise", "bf16") == pytest.approx(0.80 * bw)
    assert dm.op_cost(False) == CUDA_EAGER_OP_S == 5e-6 and dm.op_cost(True) == 0.0
    # a decode step of Llama-3.2-1B in bf16 on the H100: hf-eager pays 1652 launches of 5 us over vllm's rule
    st = settings("h100", device_model="datasheet")
    eager = phase_report("llama-3.2-1b", Phase.decode(1, 100, 1, "last"), st, engine="hf-eager")
    assert eager.latency_s > 1652 * 5e-6  # 8.26 ms of launches alone


# ---------------------------------------------------------------- the CPU measurement: layout and cache


def test_cpu_model_times_the_linear_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from llm_profiler.hardware import cpu_bench

    monkeypatch.setattr(cpu_bench, "GEMM_K", 32)
    monkeypatch.setattr(cpu_bench, "GEMV_SHAPE", (16, 64))
    monkeypatch.setattr(cpu_bench, "GEMV_K", 64)
    monkeypatch.setattr(cpu_bench, "GEMV_CURVE_BYTES", (1024, 4096))  # 8 and 32 rows of 64 bf16 (2 bytes)
    monkeypatch.setattr(cpu_bench, "GEMV_STREAM_BYTES", 8192)  # 8 and 2 copies cycled through
    monkeypatch.setattr(cpu_bench, "ELEMENTWISE_NUMEL", 1024)
    monkeypatch.setattr(cpu_bench, "ATTENTION_STREAM_BYTES", 16 * 64 * 2 * 8)  # 8 tokens of 16 bf16 heads
    monkeypatch.setattr(cpu_bench, "_MODEL_REPEATS", 1)
    seen: list[tuple[tuple[int, ...], tuple[int, ...], Any, bool]] = []
    real = cpu_bench.linear_matmul_torch

    def spy(x: Any, weight: Any) -> Any:
        seen.append((tuple(x.shape), tuple(weight.shape), weight.dtype, weight.is_contiguous()))
        return real(x, weight)

    monkeypatch.setattr(cpu_bench, "linear_matmul_torch", spy)
    out = cpu_bench._measure_dtype("bf16")
    # every GEMM size, the GEMV and the GEMV curve's sizes go through x @ W.T with W stored (out x in),
    # contiguous, in bf16
    shapes = {(x, w) for x, w, _, _ in seen}
    assert shapes == {*(((m, 32), (32, 32)) for m in cpu_bench.GEMM_M), ((1, 64), (16, 64)),
                      ((1, 64), (8, 64)), ((1, 64), (32, 64))}
    assert all(dt == torch.bfloat16 and contiguous for _, _, dt, contiguous in seen)
    assert len(out["gemm"]) == len(cpu_bench.GEMM_M) and len(out["bmm"]) == len(cpu_bench.BMM_M)
    assert len(out["gemv_curve"]) == 2 and all(r > 0 for r in out["gemv_curve"])
    assert out["attention"] > 0 and out["copy"] > 0


def test_attention_rates_time_eager_attentions_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from llm_profiler.hardware import cpu_bench

    monkeypatch.setattr(cpu_bench, "ATTENTION_STREAM_BYTES", 16 * 64 * 4 * 32)  # 32 tokens of 16 fp32 heads
    monkeypatch.setattr(cpu_bench, "_MODEL_REPEATS", 1)
    calls: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    matmul, cat = torch.matmul, torch.cat

    def spy_matmul(a: Any, b: Any) -> Any:
        calls.append(("matmul", tuple(a.shape), tuple(b.shape)))
        return matmul(a, b)

    def spy_cat(tensors: Any, dim: int = 0, out: Any = None) -> Any:
        calls.append(("cat", tuple(tensors[0].shape), tuple(out.shape)))
        return cat(tensors, dim=dim, out=out)

    monkeypatch.setattr(torch, "matmul", spy_matmul)
    monkeypatch.setattr(torch, "cat", spy_cat)
    attention, copy = cpu_bench.attention_rates(torch.float32)
    # one query row against 32 keys of 16 heads x 64 (the scores, K transposed), the probabilities against
    # the values (the context); the cache's 2 KV heads gain one token; each timed once after a warm-up
    assert set(calls) == {("matmul", (1, 16, 1, 64), (1, 16, 64, 32)), ("matmul", (1, 16, 1, 32), (1, 16, 32, 64)),
                          ("cat", (1, 2, 32, 64), (1, 2, 33, 64))}
    assert attention > 0 and copy > 0


@pytest.mark.parametrize(("env", "allocator"), [
    ({}, "glibc"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "retaining"),
    ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "retaining"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"}, "retaining"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}, "glibc"),  # the top of the heap still trimmed
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1099511627776"}, "glibc"),  # large blocks still mapped
])
def test_process_allocator_from_the_environment(env: dict[str, str], allocator: str) -> None:
    from llm_profiler.hardware import cpu_bench

    assert cpu_bench.process_allocator(env) == allocator
    assert cpu_bench.process_allocator({"GLIBC_TUNABLES": cpu_bench.RETAINING_GLIBC_TUNABLES}) == "retaining"


def test_a_fixed_mmap_threshold_moves_the_fresh_pages() -> None:
    from llm_profiler.hardware import cpu_bench

    assert cpu_bench.process_mmap_threshold({}) == GLIBC_MMAP_THRESHOLD_MAX  # the dynamic threshold's cap
    fixed = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}  # every block of 1 MiB or more mapped
    assert cpu_bench.process_mmap_threshold(fixed) == 1 << 20 and cpu_bench.process_allocator(fixed) == "glibc"
    # Qwen2.5-0.5B fp32 after 8192 tokens: at a 1 MiB threshold each layer's two 29.4 MB repeat_kv copies
    # (14 x 8193 x 64 x 4 B = 29,363,712) and its two cache cats (2 x 8192 x 64 x 4 B = 4,194,304) land in
    # fresh pages too, where the 32 MiB cap maps none of them (the scores, 14 x 8193 x 4 B, stay under 1 MiB)
    dm = _model(0.0).model_copy(update={"fresh_output_s_per_byte": 1e-9})
    low = dm.model_copy(update={"fresh_output_threshold": 1 << 20})
    phase = Phase.decode(1, 8192, 1, "last")

    def latency(model: DeviceModel) -> float:
        st = settings("a100-80gb", weight_dtype="fp32", act_dtype="fp32", compute_dtype="fp32", device_model=model)
        return phase_report("qwen2.5-0.5b", phase, st, engine="hf-eager").latency_s

    assert latency(low) - latency(dm) == pytest.approx(24 * 2 * (29_363_712 + 4_194_304) * 1e-9, rel=1e-9)


def test_a_retaining_allocator_maps_nothing_afresh() -> None:
    # Llama-3.2-1B fp32 after 8192 tokens: glibc's default maps each layer's two 67 MB repeat_kv copies
    # afresh (16 x 2 x 67,117,056 B at 1 ns/B = 2.148 s); an allocator that keeps freed memory does not
    faults = _model(0.0).model_copy(update={"fresh_output_s_per_byte": 1e-9})
    retaining = faults.model_copy(update={"allocator": "retaining"})
    assert faults.fresh_pages() and not retaining.fresh_pages() and not _model().fresh_pages()
    phase = Phase.decode(1, 8192, 1, "last")

    def latency(model: DeviceModel) -> float:
        st = settings("a100-80gb", weight_dtype="fp32", act_dtype="fp32", compute_dtype="fp32", device_model=model)
        return phase_report("llama-3.2-1b", phase, st, engine="hf-eager").latency_s

    assert latency(faults) - latency(retaining) == pytest.approx(16 * 2 * 67_117_056 * 1e-9, rel=1e-9)
    assert latency(retaining) == latency(_model(0.0))
    with pytest.raises(ValueError, match="allocator"):  # pydantic's ValidationError names the field
        DeviceModel(**{**_model().model_dump(), "allocator": "mimalloc"})


def test_copies_and_attention_at_their_own_bandwidths() -> None:
    # a decode step of Qwen2.5-0.5B fp32 after 8192 tokens, per layer: repeat_kv copies K (and V) to 14 heads
    # (14 x 8193 x 64 = 7,340,928 elements written, 4 B each) and DynamicCache re-copies the 8192 held tokens
    # of its 2 KV heads for K and V (2 x 8192 x 64 = 1,048,576 elements each: 2 x 4 B written per element)
    outputs = [(0, 0, 0, 7_340_928, 0), (0, 0, 0, 0, 1_048_576)]
    assert [float(b) for b in copy_bytes(outputs, 4.0, 4.0)] == [7_340_928 * 4, 2 * 1_048_576 * 4]
    assert [float(b) for b in copy_bytes(outputs, 2.0, 1.0)] == [7_340_928 * 2, 2 * 1_048_576 * 1]
    dm = _model(0.0)
    measured = dm.model_copy(update={"attention_bandwidth": {"fp32": 5e9}, "copy_bandwidth": {"fp32": 40e9}})
    assert dm.bandwidth("bmm", "fp32") == 20e9 and measured.bandwidth("bmm", "fp32") == 5e9  # else elementwise
    assert dm.copy_rate("fp32") == 20e9 and measured.copy_rate("fp32") == 40e9
    assert measured.bandwidth("bmm", "bf16") == 20e9 and measured.copy_rate("bf16") == 20e9  # not measured
    # a scores node moving 100 MB of which 60 MB are its copy: 40 MB at the attention bandwidth (8 ms), then
    # the copy at 40 GB/s (1.5 ms); no compute
    time, bound = group_times(measured, BMM, "fp32", 0.0, 0.0, 100e6, 1, 0, False, copied_bytes=60e6)
    assert float(time) == pytest.approx(40e6 / 5e9 + 60e6 / 40e9) and not bool(bound)
    # the whole step: the scores and context now stream at the attention bandwidth, the copies at theirs
    phase = Phase.decode(1, 8192, 1, "last")

    def latency(model: DeviceModel) -> float:
        st = settings("a100-80gb", weight_dtype="fp32", act_dtype="fp32", compute_dtype="fp32", device_model=model)
        return phase_report("qwen2.5-0.5b", phase, st, engine="hf-eager").latency_s

    # per layer the scores and the context each read a 29.4 MB expanded K or V (14 x 8193 x 64 x 4 B) and
    # compute 2 x 14 x 8193 x 64 = 14.7 MFLOP (2.9 ms at the test's 5 GFLOP/s bmm rate): at 2 GB/s their reads
    # (14.7 ms) bound them, not the arithmetic
    slower = dm.model_copy(update={"attention_bandwidth": {"fp32": 2e9}})
    assert latency(slower) - latency(dm) > 24 * 2 * (29_363_712 / 2e9 - 2 * 14 * 8193 * 64 / 5e9)  # > 0.56 s
    assert latency(dm) == latency(dm.model_copy(update={"copy_bandwidth": {"fp32": 20e9}}))


def test_device_model_figures_are_medians_of_passes() -> None:
    from llm_profiler.hardware import cpu_bench

    passes = [{"gemv": 9.6e9, "gemm": [1.0, 8.0]}, {"gemv": 19.1e9, "gemm": [3.0, 4.0]},
              {"gemv": 14.6e9, "gemm": [2.0, 6.0]}]
    # per number, and per entry of a curve: (9.6, 19.1, 14.6) -> 14.6; (1, 3, 2) -> 2; (8, 4, 6) -> 6
    assert cpu_bench.median_figures(passes) == {"gemv": 14.6e9, "gemm": [2.0, 6.0]}


def test_tiny_step_op_counts() -> None:
    pytest.importorskip("torch")
    from llm_profiler.hardware import cpu_bench

    step = cpu_bench.tiny_transformers_step()
    if step is not None:
        # 2 layers x 94 ops (kernels.EAGER_OPS per llama layer at fp32) + positions 26 + rotary 8 + embedding 1
        # + final norm 6 + lm_head 6 = 235, + the crop back: one slice of K and of V per layer (4) = 239, less
        # one aten.zeros the table counts from the meta-device dispatch that real CPU tensors do not create:
        # transformers' tiny Llama at one token after 8 runs the layout the table counts
        assert cpu_bench.dispatched_ops(step) == 2 * 94 + 26 + 8 + 1 + 6 + 6 + 4 - 1

    # the step the per-op cost divides by: counted, not assumed (83 aten ops with torch 2.13: RMSNorm 6 x 2,
    # 7 linears x 4, rope on q and k, two cache cats, scores, softmax, context, silu, products, residuals)
    ops = cpu_bench.dispatched_ops(cpu_bench.tiny_layer_step())
    assert ops == cpu_bench.dispatched_ops(cpu_bench.tiny_layer_step())
    assert 60 <= ops <= 120


def test_cpu_model_is_cached_per_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    from llm_profiler.hardware import cpu_bench

    calls: list[str] = []

    def fake(name: str) -> dict[str, Any]:
        calls.append(name)
        return {"gemm": [1e9 * (i + 1) for i in range(len(cpu_bench.GEMM_M))],
                "bmm": [1e9] * len(cpu_bench.BMM_M), "gemv": 5e9, "elementwise": 6e9, "vector": 7e9,
                "gemv_curve": [4e9] * len(cpu_bench.GEMV_CURVE_BYTES), "attention": 3e9, "copy": 8e9}

    monkeypatch.setenv("LLM_PROFILER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)  # glibc's default allocator, then a retaining one
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(cpu_bench, "_measure_dtype", fake)
    monkeypatch.setattr(cpu_bench, "_median_time", lambda run, repeats=0: 1e-4)
    monkeypatch.setattr(cpu_bench, "fresh_output_cost", lambda: 4e-10)
    first = cpu_bench.measure_cpu_model()
    assert calls == ["fp32", "bf16"] * cpu_bench.MODEL_PASSES  # whole passes, their median kept
    fingerprint = cpu_bench.machine_fingerprint(torch.get_num_threads())
    assert first.fingerprint == fingerprint and (tmp_path / f"device-model-{fingerprint}.json").exists()
    assert first.threads == torch.get_num_threads() and "load average" in first.source
    # 1e-4 s over the tiny step's ops
    step = cpu_bench.tiny_transformers_step() or cpu_bench.tiny_layer_step()
    assert first.per_op_s == pytest.approx(1e-4 / cpu_bench.dispatched_ops(step))
    assert cpu_bench.measure_cpu_model() == first and len(calls) == 2 * cpu_bench.MODEL_PASSES  # read back
    cpu_bench.measure_cpu_model(refresh=True)
    assert len(calls) == 4 * cpu_bench.MODEL_PASSES
    assert cpu_bench.machine_fingerprint(1) != cpu_bench.machine_fingerprint(2)  # threads are in it
    assert first.gemm["fp32"].at(cpu_bench.GEMM_M[-1]) == pytest.approx(len(cpu_bench.GEMM_M) * 1e9)
    assert math.isclose(first.gemv_bandwidth["bf16"], 5e9)
    assert first.bandwidth("linear", "bf16", 2**20) == pytest.approx(4e9)  # the curve, at a weight's size
    assert first.fresh_output_s_per_byte == 4e-10  # the fresh-page cost, measured (patched) once
    assert first.bandwidth("bmm", "fp32") == 3e9 and first.copy_rate("bf16") == 8e9
    # the allocator is this process's, not the cache's: read again when the cached model is loaded
    monkeypatch.setenv("GLIBC_TUNABLES", cpu_bench.RETAINING_GLIBC_TUNABLES)
    assert first.allocator == "glibc" and cpu_bench.measure_cpu_model().allocator == "retaining"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576")
    assert first.fresh_output_threshold == 32 << 20 and cpu_bench.measure_cpu_model().fresh_output_threshold == 1 << 20


# ---------------------------------------------------------------- the table against transformers' dispatch


@pytest.mark.validation
@pytest.mark.parametrize("name", ["llama-3.2-1b", "qwen2.5-0.5b"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_eager_ops_match_the_dispatch(name: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation.measure import build_model
    from llm_profiler.validation.reference import reference
    from llm_profiler.validation.runs import dispatched_ops_by_module

    ref = reference(name)
    model = build_model(ref.data, device="meta").to({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    measured = dispatched_ops_by_module(model, 1, 1, 5)  # a decode step at context 5, full size on meta
    measured["lm_head"] = measured.get("lm_head", 0) + measured.pop("", 0)  # the causal LM's own ops: its head's
    predicted: dict[str, int] = {}
    for node in profile_model(ref.data).nodes:
        predicted[node.module] = predicted.get(node.module, 0) + eager_ops(node, dtype)
    assert {k: v for k, v in predicted.items() if v} == measured


def test_fresh_page_cost_is_measured_on_4k_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import mmap

    from llm_profiler.hardware import cpu_bench

    advised: list[int] = []
    real = mmap.mmap

    class Spy(real):  # type: ignore[misc, valid-type]
        def madvise(self, option: int, *args: Any) -> None:
            advised.append(option)
            super().madvise(option, *args)

    monkeypatch.setattr(mmap, "mmap", Spy)
    monkeypatch.setattr(cpu_bench, "FRESH_OUTPUT_BYTES", 1 << 20)
    cost = cpu_bench.fresh_output_cost(repeats=3)
    # three fresh 1 MiB mappings, each advised to 4 KiB pages before its first write; a cost per byte >= 0
    assert advised == [mmap.MADV_NOHUGEPAGE] * 3
    assert cost >= 0.0 and math.isfinite(cost)
