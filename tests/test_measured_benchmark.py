"""benchmarks/measured_vs_predicted.py pins the process's allocator: the script re-executes itself under
glibc's tunables so that its runs' eager outputs land in pages already mapped. Checked on glibc itself: where
a fresh 64 MiB block comes from (the heap, or a mapping of its own)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "measured_vs_predicted.py"

PROBE = f"""
import ctypes, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("measured_vs_predicted", {str(BENCH)!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
bench.pin_allocator(sys.argv[1])
from llm_profiler.hardware.cpu_bench import process_allocator
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(64 << 20)  # above glibc's 32 MiB mmap cap: its own mapping unless mmap is off
heap = [line.split()[0].split("-") for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
in_heap = any(int(lo, 16) <= block < int(hi, 16) for lo, hi in heap)
print(process_allocator(), os.environ.get("GLIBC_TUNABLES", "-"), "heap" if in_heap else "mapped")
"""


def _probe(tmp_path: Path, allocator: str, env: dict[str, str]) -> list[str]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = subprocess.run([sys.executable, str(script), allocator], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/maps"),
                    reason="glibc's tunables and /proc: Linux with glibc")
def test_benchmark_pins_the_allocator(tmp_path: Path) -> None:
    from llm_profiler.hardware.cpu_bench import RETAINING_GLIBC_TUNABLES

    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    base["PYTHONPATH"] = str(BENCH.parent.parent)
    # from glibc's default: re-executed with the tunables, and a 64 MiB block then comes from the heap
    assert _probe(tmp_path, "retaining", base) == ["retaining", RETAINING_GLIBC_TUNABLES, "heap"]
    # and back: the tunables dropped, the block mapped afresh as glibc's default does above 32 MiB
    retained = {**base, "GLIBC_TUNABLES": RETAINING_GLIBC_TUNABLES}
    assert _probe(tmp_path, "glibc", retained) == ["glibc", "-", "mapped"]
    # already the allocator asked for: not re-executed
    assert _probe(tmp_path, "glibc", base) == ["glibc", "-", "mapped"]


def test_decode_step_profile_prints_measured_and_predicted(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.hardware import cpu_bench
    from llm_profiler.hardware.roofline import DeviceModel, RateCurve

    # a device model in the cache the script reads (1 thread): 10 GFLOP/s, 10 GB/s everywhere, no per-op cost
    curve = RateCurve(m=(1,), flops_per_s=(1e10,))
    dm = DeviceModel(gemm={"fp32": curve}, gemv_bandwidth={"fp32": 1e10}, elementwise_bandwidth={"fp32": 1e10})
    (tmp_path / f"device-model-{cpu_bench.machine_fingerprint(1)}.json").write_text(dm.model_dump_json())
    env = {**os.environ, "LLM_PROFILER_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(BENCH.parent.parent)}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, str(BENCH.parent / "decode_step_profile.py"), "llama-3.2-1b", "--tiny",
                          "--past", "16", "--steps", "2", "--top", "3"], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("llama-3.2-1b fp32, 1 thread(s), one token after 16; allocator glibc")
    assert lines[1].startswith("measured step: median") and "of 2 (" in lines[1]
    assert lines[2].startswith("aten ops (one profiled step, self time): ") and lines[2].count(" ms x") == 3
    # the prediction at the cached model's rates, per node kind (the linears are the largest)
    assert lines[3].startswith("predicted step: ") and "(device model, allocator glibc)" in lines[3]
    assert "linear" in lines[3]
