"""The hardware layer: dtype bytes, the device table, the roofline and the CPU micro-benchmark."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pydantic
import pytest

from llm_profiler.errors import ProfilerError, QueryError
from llm_profiler.hardware import (
    BF16,
    COMPUTE_DTYPES,
    DEVICES,
    INT4,
    DeviceSpec,
    compute_dtype_name,
    cpu_bench,
    custom_device,
    get_device,
    get_dtype,
    int4,
    list_devices,
    measure_local_cpu,
    ridge_point,
    roofline_time,
    tensor_bytes,
    utilization,
    weight_bytes,
)

GiB = 2**30

# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("fp32", "fp32"),
        ("Float32", "fp32"),
        ("torch.float32", "fp32"),
        ("half", "fp16"),
        ("FLOAT16", "fp16"),
        ("bfloat16", "bf16"),
        ("torch.bfloat16", "bf16"),
        ("float8_e4m3fn", "fp8"),
        ("float8_e5m2", "fp8"),
        ("int8", "int8"),
        ("INT4", "int4"),
        ("int4-g128", "int4"),
        ("int4-g64", "int4-g64"),
        ("int4_g32", "int4-g32"),
    ],
)
def test_get_dtype_aliases(name: str, canonical: str) -> None:
    assert get_dtype(name).name == canonical


def test_get_dtype_unknown_lists_valid_names() -> None:
    with pytest.raises(QueryError) as err:
        get_dtype("fp7")
    msg = str(err.value)
    for name in ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "int4-g<N>"):
        assert name in msg
    assert isinstance(err.value, ProfilerError)
    with pytest.raises(QueryError):
        get_dtype("int4-g0")


def test_dtype_is_frozen_and_passes_through() -> None:
    assert get_dtype(BF16) is BF16
    with pytest.raises(pydantic.ValidationError):
        BF16.bits = 8  # type: ignore[misc]


def test_int4_convention() -> None:
    # GPTQ / AWQ style: 4-bit values, one fp16 scale and one 4-bit zero point per 128 input features.
    assert (INT4.bits, INT4.group_size, INT4.scale_bits, INT4.zero_point_bits) == (4, 128, 16, 4)
    # 4 + (16 + 4) / 128 = 4 + 5/32 = 133/32 bits = 4.15625 bits per weight; / 8 -> 133/256 bytes.
    assert INT4.effective_bits == Fraction(133, 32)
    assert INT4.effective_bytes == Fraction(133, 256)
    assert BF16.effective_bytes == 2
    assert int4(64) == get_dtype("int4-g64")


def test_plain_weight_and_tensor_bytes() -> None:
    assert weight_bytes("bf16", 4096, 4096) == 33_554_432  # 4096 * 4096 * 2
    assert weight_bytes("fp32", 3, 5) == 60  # 15 * 4
    assert weight_bytes("fp8", 4096, 11008) == 45_088_768  # 4096 * 11008 * 1
    assert tensor_bytes("fp16", 7) == 14
    assert tensor_bytes("int8", 7) == 7
    assert tensor_bytes("bf16", 0) == 0


def test_int4_weight_bytes_by_hand() -> None:
    # 4096 x 4096 at int4, group 128 along the 4096 input features:
    #   values:   4096 * 4096 * 4 bits                   = 67,108,864 bits
    #   groups:   4096 rows * (4096 / 128 = 32) groups    = 131,072 groups
    #   metadata: 131,072 * (16-bit scale + 4-bit zero)   =  2,621,440 bits
    #   total:    69,730,304 bits / 8                     =  8,716,288 bytes  (vs 33,554,432 in bf16)
    assert weight_bytes("int4", 4096, 4096) == 8_716_288
    # group 64: 4096 * 64 = 262,144 groups * 20 = 5,242,880 bits; + 67,108,864 = 72,351,744 bits / 8
    assert weight_bytes("int4-g64", 4096, 4096) == 9_043_968
    # a partial last group still pays a full scale + zero point: 3 x 200 at g128 -> ceil(200/128) = 2 groups
    # per row: 3 * 200 * 4 = 2,400 bits + 3 * 2 * 20 = 120 bits = 2,520 bits = 315 bytes
    assert weight_bytes("int4", 3, 200) == 315
    # bytes round up once, at the end: 1 x 2 -> 8 + 20 = 28 bits -> 3.5 -> 4 bytes
    assert weight_bytes("int4", 1, 2) == 4
    # a flat tensor groups along its elements: 256 int4 values -> 2 groups: 1,024 + 40 bits = 133 bytes
    assert tensor_bytes("int4", 256) == 133
    # exact with Python ints at sizes a float would round: 2**40 x 2**20 int4 weights
    rows, cols = 2**40, 2**20
    assert weight_bytes("int4", rows, cols) == (rows * cols * 4 + rows * (cols // 128) * 20) // 8


def test_bytes_reject_bad_counts() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(QueryError):
            tensor_bytes("bf16", bad)  # type: ignore[arg-type]
        with pytest.raises(QueryError):
            weight_bytes("bf16", bad, 4)  # type: ignore[arg-type]


def test_compute_dtype_names() -> None:
    assert compute_dtype_name("bfloat16") == "bf16"
    assert compute_dtype_name("float8_e4m3fn") == "fp8"
    assert compute_dtype_name("TF32") == "tf32"
    assert compute_dtype_name(BF16) == "bf16"
    with pytest.raises(QueryError, match="weight-only"):
        compute_dtype_name("int4")
    with pytest.raises(QueryError, match="fp32, tf32, fp16, bf16, fp8, int8"):
        compute_dtype_name("fp64")


# ---------------------------------------------------------------- devices

EXPECTED = {
    "A100-40GB",
    "A100-80GB",
    "H100-SXM",
    "H100-PCIe",
    "H200",
    "L4",
    "L40S",
    "RTX-3090",
    "RTX-4090",
    "MI300X",
}


def test_device_table() -> None:
    assert EXPECTED <= set(list_devices())
    for dev in DEVICES.values():
        assert set(dev.peak_flops) <= set(COMPUTE_DTYPES)
        assert "bf16" in dev.peak_flops  # the default activation dtype has a figure everywhere
        assert dev.memory_bytes > 0 and dev.memory_bandwidth > 0
        assert dev.source  # every entry names its datasheet
        # fp32 (where published) is never faster than bf16; fp8 never slower than bf16
        assert dev.peak_flops.get("fp32", 0) <= dev.peak_flops["bf16"] <= dev.peak_flops.get("fp8", math.inf)


def test_datasheet_figures() -> None:
    a100 = get_device("A100-80GB")
    assert a100.memory_bandwidth == 2039e9
    assert a100.memory_bytes == 80 * GiB
    assert (a100.peak("fp32"), a100.peak("tf32"), a100.peak("bf16"), a100.peak("int8")) == (
        19.5e12,
        156e12,
        312e12,
        624e12,
    )
    assert get_device("A100-40GB").memory_bandwidth == 1555e9
    h100 = get_device("H100-SXM")
    # the datasheet prints 1,979 / 3,958 TFLOPS "with sparsity"; dense is half
    assert (h100.peak("bf16"), h100.peak("fp8"), h100.memory_bandwidth) == (989.5e12, 1979e12, 3.35e12)
    assert get_device("H200").memory_bandwidth == 4.8e12
    assert get_device("H200").memory_bytes == 141 * GiB
    assert get_device("MI300X").peak("bf16") == 1307.4e12
    assert get_device("RTX-4090").peak("fp16") == 165.2e12  # FP32-accumulate rate
    with pytest.raises(QueryError, match="no peak FLOP/s for 'fp8'"):
        a100.peak("fp8")  # Ampere has no fp8


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("a100", "A100-80GB"),
        ("A100 80GB", "A100-80GB"),
        ("a100-40gb", "A100-40GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("h100", "H100-SXM"),
        ("H100 SXM5", "H100-SXM"),
        ("h100_pcie", "H100-PCIe"),
        ("h200", "H200"),
        ("l4", "L4"),
        ("L40s", "L40S"),
        ("3090", "RTX-3090"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("4090", "RTX-4090"),
        ("AMD Instinct MI300X", "MI300X"),
    ],
)
def test_get_device_aliases(alias: str, name: str) -> None:
    assert get_device(alias).name == name


def test_get_device_unknown_lists_valid_names() -> None:
    with pytest.raises(QueryError) as err:
        get_device("tpu-v9")
    for name in EXPECTED:
        assert name in str(err.value)


def test_get_device_cpu_uses_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = custom_device("local-cpu", 16, 20, {"fp32": 1})
    monkeypatch.setattr(cpu_bench, "measure_local_cpu", lambda: fake)
    assert get_device("cpu") is fake


def test_custom_device() -> None:
    dev = custom_device("toy", 16, 100, {"bfloat16": 50, "fp32": 12.5})
    assert dev.memory_bytes == 16 * GiB
    assert dev.memory_bandwidth == 100e9
    assert dev.peak_flops == {"bf16": 50e12, "fp32": 12.5e12}
    assert get_device(dev) is dev
    assert DeviceSpec.model_validate(dev.model_dump()) == dev  # round-trips through JSON-able dicts
    for bad in ({"memory_gb": 0}, {"bandwidth_gbps": -1}, {"tflops": {}}, {"tflops": {"bf16": 0}}):
        kwargs = {"name": "bad", "memory_gb": 1, "bandwidth_gbps": 1, "tflops": {"bf16": 1}, **bad}
        with pytest.raises(QueryError):
            custom_device(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(QueryError):
        custom_device("bad", 1, 1, {"fp64": 1})


# ---------------------------------------------------------------- roofline


def test_ridge_point() -> None:
    # A100-80GB bf16: 312e12 FLOP/s / 2039e9 B/s = 153.016... FLOP per byte
    assert ridge_point("A100-80GB", "bf16") == pytest.approx(153.0161843, rel=1e-9)
    # H100 SXM fp8: 1979e12 / 3.35e12 = 590.746... FLOP per byte
    assert ridge_point("h100", "fp8") == pytest.approx(590.7462687, rel=1e-9)
    # efficiencies move the ridge: 0.5 of the FLOP/s halves it, 0.5 of the bandwidth doubles it
    assert ridge_point("A100-80GB", "bf16", flops_efficiency=0.5) == pytest.approx(76.50809215, rel=1e-9)
    assert ridge_point("A100-80GB", "bf16", bandwidth_efficiency=0.5) == pytest.approx(306.0323688, rel=1e-9)


def test_square_matmul_is_compute_bound() -> None:
    # 4096^3 bf16 GEMM on A100-80GB:
    #   flops = 2 * 4096**3 = 137,438,953,472
    #   bytes = 3 matrices * 4096**2 * 2 B = 100,663,296  -> intensity 1365.33 FLOP/B > ridge 153
    #   time  = 137,438,953,472 / 312e12 = 440.5 us
    flops, moved = 2 * 4096**3, 3 * 4096**2 * 2
    p = roofline_time(flops, moved, get_device("A100-80GB"), "bf16")
    assert p.bound == "compute"
    assert p.time_s == pytest.approx(4.405094662e-4, rel=1e-9)
    assert p.intensity == pytest.approx(1365.333333, rel=1e-9)
    assert p.memory_time_s == pytest.approx(100_663_296 / 2039e9)
    # at 70% of peak FLOP/s the time grows by 1/0.7
    p70 = roofline_time(flops, moved, "A100-80GB", "bf16", flops_efficiency=0.7)
    assert p70.time_s == pytest.approx(4.405094662e-4 / 0.7, rel=1e-9)


def test_decode_gemv_is_memory_bound() -> None:
    # one token through a 4096 x 4096 bf16 projection on A100-80GB:
    #   flops = 2 * 4096 * 4096 = 33,554,432
    #   bytes = weight 33,554,432 + input 8,192 + output 8,192 = 33,570,816  -> intensity ~1 FLOP/B
    #   time  = 33,570,816 / 2039e9 = 16.464 us
    p = roofline_time(2 * 4096 * 4096, 33_570_816, "A100-80GB", "bf16")
    assert p.bound == "memory"
    assert p.time_s == pytest.approx(1.646435311e-5, rel=1e-9)
    # the same weight in int4 (g128) moves 8,716,288 + 16,384 bytes: 4.28 us, still memory-bound
    q = roofline_time(2 * 4096 * 4096, weight_bytes("int4", 4096, 4096) + 16_384, "A100-80GB", "fp16")
    assert q.bound == "memory"
    assert q.time_s == pytest.approx(8_732_672 / 2039e9)


def test_bound_switches_at_the_ridge() -> None:
    # toy device: 1 TFLOP/s bf16, 100 GB/s -> ridge = 1e12 / 1e11 = 10 FLOP/B exactly
    toy = custom_device("toy", 1, 100, {"bf16": 1})
    assert ridge_point(toy, "bf16") == 10
    below = roofline_time(9_999, 1_000, toy, "bf16")
    at = roofline_time(10_000, 1_000, toy, "bf16")
    above = roofline_time(10_001, 1_000, toy, "bf16")
    assert below.bound == "memory" and below.time_s == 1_000 / 100e9  # 10 ns of traffic
    assert at.bound == "compute" and at.time_s == 1e-8  # a tie is reported as compute-bound
    assert at.compute_time_s == at.memory_time_s
    assert above.bound == "compute" and above.time_s == 10_001 / 1e12
    # halving the bandwidth efficiency doubles the ridge to 20: 10,001 FLOP on 1,000 B becomes memory-bound
    assert roofline_time(10_001, 1_000, toy, "bf16", bandwidth_efficiency=0.5).bound == "memory"


def test_roofline_edge_cases() -> None:
    toy = custom_device("toy", 1, 100, {"bf16": 1})
    nothing = roofline_time(0, 0, toy, "bf16")
    assert (nothing.time_s, nothing.bound, nothing.intensity) == (0.0, "memory", 0.0)
    pure = roofline_time(1_000, 0, toy, "bf16")
    assert pure.bound == "compute" and math.isinf(pure.intensity)
    copy = roofline_time(0, 1_000, toy, "bf16")
    assert copy.bound == "memory" and copy.intensity == 0.0


@pytest.mark.parametrize("eff", [0, -0.1, 1.01, 2, True, "0.5"])
def test_efficiency_is_validated(eff: object) -> None:
    with pytest.raises(QueryError, match=r"\(0, 1\]"):
        roofline_time(1, 1, "A100-80GB", "bf16", flops_efficiency=eff)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match=r"\(0, 1\]"):
        roofline_time(1, 1, "A100-80GB", "bf16", bandwidth_efficiency=eff)  # type: ignore[arg-type]
    with pytest.raises(QueryError):
        ridge_point("A100-80GB", "bf16", flops_efficiency=eff)  # type: ignore[arg-type]


def test_roofline_rejects_bad_inputs() -> None:
    with pytest.raises(QueryError):
        roofline_time(-1, 1, "A100-80GB", "bf16")
    with pytest.raises(QueryError):
        roofline_time(1, 1.5, "A100-80GB", "bf16")  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="no peak FLOP/s"):
        roofline_time(1, 1, "A100-80GB", "fp8")
    with pytest.raises(QueryError):
        roofline_time(1, 1, "no-such-gpu", "bf16")


def test_utilization() -> None:
    # 156e12 FLOP and 1,019.5e9 B in one second on A100-80GB: half of 312 TFLOP/s, half of 2,039 GB/s
    mfu, mbu = utilization(1.0, 156 * 10**12, 1_019_500_000_000, "A100-80GB", "bf16")
    assert mfu == pytest.approx(0.5) and mbu == pytest.approx(0.5)
    # a decode step of a 7B bf16 model (~14e9 B, ~14e9 FLOP) taking 10 ms on H100 SXM:
    #   MBU = 14e9 / 0.01 / 3.35e12 = 0.418; MFU = 14e9 / 0.01 / 989.5e12 = 0.00141
    mfu, mbu = utilization(0.01, 14 * 10**9, 14 * 10**9, "H100-SXM", "bf16")
    assert mbu == pytest.approx(0.4179104478, rel=1e-9)
    assert mfu == pytest.approx(0.001414855988, rel=1e-9)
    for bad in (0, -1.0):
        with pytest.raises(QueryError):
            utilization(bad, 1, 1, "A100-80GB", "bf16")


# ---------------------------------------------------------------- CPU micro-benchmark


def test_measure_local_cpu() -> None:
    dev = measure_local_cpu(0.2)
    assert dev.name == "local-cpu"
    assert dev.peak("fp32") > 1e8  # any CPU of this decade does > 0.1 GFLOP/s
    assert dev.memory_bandwidth > 1e8
    assert dev.memory_bytes > 2**28
    assert dev.source and dev.notes
    assert measure_local_cpu(0.2) is dev  # cached per process
    p = roofline_time(2 * 256**3, 3 * 256**2 * 4, dev, "fp32")
    assert p.time_s > 0
    with pytest.raises(QueryError):
        measure_local_cpu(0)


def test_measure_local_cpu_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    dev = measure_local_cpu.__wrapped__(0.1)
    assert set(dev.peak_flops) == {"fp32"} and dev.peak("fp32") > 0
    assert "numpy" in dev.notes


def test_hardware_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import llm_profiler.hardware as h; print(h.INT4.name)"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "int4"


def test_benchmark_times_the_linear_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    # the seam: x (tokens x in) and a weight stored as nn.Linear stores it, (out x in), contiguous
    x, weight = cpu_bench.linear_operands_torch(16, torch.bfloat16)
    assert x.shape == weight.shape == (16, 16) and x.dtype == weight.dtype == torch.bfloat16
    assert weight.is_contiguous()
    torch.testing.assert_close(cpu_bench.linear_matmul_torch(x, weight), torch.nn.functional.linear(x, weight))

    # every matmul the benchmark runs gets the weight as a transposed view (strides (1, n)), for every dtype
    seen: list[tuple[Any, tuple[int, ...], tuple[int, ...]]] = []
    real_mm = torch.mm

    def spy_mm(a: Any, b: Any) -> Any:
        seen.append((a.dtype, a.stride(), b.stride()))
        return real_mm(a, b)

    made: list[tuple[int, Any]] = []
    real_operands = cpu_bench.linear_operands_torch

    def spy_operands(n: int, dtype: Any) -> tuple[Any, Any]:
        made.append((n, dtype))
        return real_operands(n, dtype)

    monkeypatch.setattr(torch, "mm", spy_mm)
    monkeypatch.setattr(cpu_bench, "linear_operands_torch", spy_operands)
    monkeypatch.setattr(cpu_bench, "_COPY_BYTES", 2**20)  # a small copy: this test is about the matmul
    peak, bandwidth, how = cpu_bench._bench_torch(0.01)
    assert set(peak) == {"fp32", "bf16"} and bandwidth > 0
    assert {d for _, d in made} == {torch.float32, torch.bfloat16}
    assert made[0] == (256, torch.float32)  # sizes start at 256 for each dtype
    assert {d for d, _, _ in seen} == {torch.float32, torch.bfloat16}
    sizes = {n for n, _ in made}
    for _, a_stride, b_stride in seen:
        n = a_stride[0]
        assert n in sizes and a_stride == (n, 1)  # x row-major
        assert b_stride == (1, n)  # weight.t(): the (out x in) weight used transposed, as in nn.Linear
    assert f"{torch.get_num_threads()} threads" in how and "x @ W.T" in how


def test_numpy_fallback_uses_the_linear_layout() -> None:
    import numpy as np

    x, weight = cpu_bench.linear_operands_numpy(8)
    assert x.dtype == weight.dtype == np.float32 and weight.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(cpu_bench.linear_matmul_numpy(x, weight), x @ weight.T, rtol=1e-6)


def test_matmul_sizes_grow_until_the_rate_stops_improving(monkeypatch: pytest.MonkeyPatch) -> None:
    # fake timings (no clock): make(n) returns a callable that knows n, and the rate is looked up by n
    rates = {256: 1e9, 512: 4e9, 1024: 4.1e9, 2048: 9e9, 4096: 9.9e9}

    class Sized:
        def __init__(self, n: int) -> None:
            self.n = n

        def __call__(self) -> None:
            raise AssertionError("the fake rate never runs the matmul")

    def fake_rate(run: Sized, work: float, budget_s: float) -> tuple[float, float]:
        assert work == 2.0 * run.n**3
        return rates[run.n], 0.0

    monkeypatch.setattr(cpu_bench, "_median_rate", fake_rate)
    # 512 beats 256 by 4x; 1024 beats 512 by only 2.5% (< 5%): stop there, keep the best (1024, 4.1e9)
    best, n, tried = cpu_bench._matmul_rate(Sized, budget_s=1e6)
    assert (best, n) == (4.1e9, 1024)
    assert [size for size, _ in tried] == [256, 512, 1024]
    # a steadily improving rate grows to the largest size, 4096
    rates.update({1024: 6e9})
    best, n, tried = cpu_bench._matmul_rate(Sized, budget_s=1e6)
    assert (best, n) == (9.9e9, 4096) and [s for s, _ in tried] == [256, 512, 1024, 2048, 4096]
    # the budget: after 256 at 1e9 FLOP/s the next size costs (1 + 3) * 2 * 512**3 / 1e9 = 1.07 s
    best, n, tried = cpu_bench._matmul_rate(Sized, budget_s=1.0)
    assert (best, n, len(tried)) == (1e9, 256, 1)


def test_median_rate_warms_up_then_repeats() -> None:
    calls: list[int] = []
    # no time left: one warm-up call and the minimum of 3 timed calls
    rate, _ = cpu_bench._median_rate(lambda: calls.append(1), 1.0, budget_s=0.0)
    assert len(calls) == 1 + 3 and rate > 0
    calls.clear()
    # plenty of time: one warm-up and at most 5 timed calls
    cpu_bench._median_rate(lambda: calls.append(1), 1.0, budget_s=60.0)
    assert len(calls) == 1 + 5
