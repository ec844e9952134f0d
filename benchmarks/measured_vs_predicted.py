"""Measured vs predicted: real transformers ``generate`` runs on this CPU beside the device-model prediction.

Qwen2.5-0.5B and Llama-3.2-1B at their real sizes with random weights, transformers eager attention, fp32
and bf16, 1 and 2 torch threads. Per (model, dtype, threads), three runs:

- prompt 128, 8 new tokens: TTFT of a 128-token prefill, TPOT at context ~130;
- a long prompt (fp32: 512; bf16: 2048), 2 new tokens: TTFT of the long prefill;
- context 8192, one new token then 3 decode steps (4 new tokens): TPOT at an 8k context; the cache is a
  ``DynamicCache`` filled with random keys and values (``validation.runs.random_cache``), not a prefill.

The prediction is ``perf.phase_report`` under the ``hf-eager`` profile with this CPU's device model
(``hardware.cpu_bench.measure_cpu_model``: GEMM / bmm FLOP/s by M, GEMV and elementwise bandwidth, the
per-op cost; measured per thread count, cached per machine): time per node = max(compute at the shape's
rate, bytes at the kernel class's bandwidth) + ops x per-op cost. Every line records the load average when
the run started: on a busy machine the measured times are not this CPU's.

The allocator is pinned (``--allocator``): by default the script re-executes itself with glibc told to keep
what it frees (``cpu_bench.RETAINING_GLIBC_TUNABLES``, what jemalloc or tcmalloc do), so a run's eager
outputs land in pages already mapped and the measured times repeat; ``--allocator glibc`` keeps glibc's
default dynamic malloc, whose long-context decode steps swing with the heap's history (one Qwen2.5-0.5B fp32
step after 8192 tokens: 396 - 878 ms within one process, ``benchmarks/decode_step_profile.py``), predicted
with 4 KiB faults on outputs of 32 MiB or more.

    python benchmarks/measured_vs_predicted.py            # the full grid, ~13 min on an idle 2-core machine;
                                                          # rewrites the table in docs/phases.md
    python benchmarks/measured_vs_predicted.py --quick    # Qwen2.5-0.5B, 1 thread (~2 min), docs untouched
    python benchmarks/measured_vs_predicted.py --allocator glibc --no-docs   # glibc's default malloc
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MODELS = ("qwen2.5-0.5b", "llama-3.2-1b")
DTYPES = ("fp32", "bf16")
THREADS = (1, 2)
LONG_PROMPT = {"fp32": 512, "bf16": 2048}
CONTEXT = 8192
DOCS = Path(__file__).resolve().parent.parent / "docs" / "phases.md"
START, END = "<!-- measured-vs-predicted:start -->", "<!-- measured-vs-predicted:end -->"


def grid(quick: bool) -> list[tuple[str, str, int]]:
    if quick:
        return [("qwen2.5-0.5b", d, 1) for d in DTYPES]
    return [(m, d, t) for m in MODELS for d in DTYPES for t in THREADS]


def shapes(dtype: str, quick: bool) -> list[tuple[int, int, int]]:
    """(prompt, new tokens, cached context) per run."""
    if quick:
        return [(128, 8, 0), (512, 2, 0), (1, 4, 2048)]
    return [(128, 8, 0), (LONG_PROMPT[dtype], 2, 0), (1, 4, CONTEXT)]


def row(run: Any, threads: int, past: int) -> dict[str, Any]:
    mem = run.memory
    return {"model": run.model, "dtype": run.dtype, "threads": threads, "prompt": run.prompt, "past": past,
            "new": run.new_tokens, "ttft": run.ttft_s, "ttft_pred": run.predicted_ttft_s, "tpot": run.tpot_s,
            "tpot_pred": run.predicted_tpot_s, "growth": mem.growth if mem else None,
            "growth_pred": mem.predicted_growth if mem else None, "load": run.load_average}


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    mib = 2**20
    lines = [header, "",
             "| model | dtype | threads | prompt | context | new | TTFT measured | TTFT predicted | ratio "
             "| TPOT measured | TPOT predicted | ratio | memory growth measured / predicted | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ttft = (f"{r['ttft'] * 1e3:.0f} ms | {r['ttft_pred'] * 1e3:.0f} ms | {r['ttft'] / r['ttft_pred']:.2f}"
                if r["past"] == 0 else "- | - | -")
        mem = (f"{r['growth'] / mib:.0f} / {r['growth_pred'] / mib:.0f} MiB" if r["growth"] is not None else "-")
        lines.append(f"| {r['model']} | {r['dtype']} | {r['threads']} | {r['prompt']} | {r['past']} | {r['new']} "
                     f"| {ttft} | {r['tpot'] * 1e3:.1f} ms | {r['tpot_pred'] * 1e3:.1f} ms "
                     f"| {r['tpot'] / r['tpot_pred']:.2f} | {mem} | {r['load']:.2f} |")
    pairs = [(r["ttft"], r["ttft_pred"]) for r in rows if r["past"] == 0] + [(r["tpot"], r["tpot_pred"]) for r in rows]
    within = sum(abs(p - m) <= 0.25 * m for m, p in pairs)  # the target: within 25% of measured
    lines += ["", f"{within} of {len(pairs)} predictions (TTFT and TPOT) within 25% of measured; the load column is "
              "the load average when each run started."]
    return "\n".join(lines) + "\n"


def write_docs(table: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{DOCS} has no {START} ... {END} section to regenerate")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{START}\n{table}{END}{tail}", encoding="utf-8")


def pin_allocator(allocator: str) -> None:
    """Re-execute this script in a process whose allocator is ``allocator`` (glibc reads its tunables when
    a process starts), unless this one already runs it."""
    from llm_profiler.hardware.cpu_bench import RETAINING_GLIBC_TUNABLES, process_allocator

    if process_allocator() == allocator:
        return
    env = dict(os.environ)
    if allocator == "retaining":
        env["GLIBC_TUNABLES"] = RETAINING_GLIBC_TUNABLES
    else:
        env.pop("GLIBC_TUNABLES", None)
        env["LD_PRELOAD"] = " ".join(p for p in env.get("LD_PRELOAD", "").split() if process_allocator(
            {"LD_PRELOAD": p}) == "glibc")
    if process_allocator(env) != allocator:
        raise SystemExit(f"cannot pin the allocator to {allocator!r} from this environment")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Qwen2.5-0.5B, 1 thread, shorter prompts and context")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per shape, the per-forward median kept (a stall of the host in one run "
                             "does not make the row)")
    parser.add_argument("--refresh-device-model", action="store_true", help="measure the CPU again (no cache)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the table in docs/phases.md")
    parser.add_argument("--allocator", choices=("retaining", "glibc"), default="retaining",
                        help="the process's allocator: glibc keeping freed memory (default), or glibc's default")
    args = parser.parse_args()
    pin_allocator(args.allocator)

    import torch

    from llm_profiler.hardware import measure_local_cpu
    from llm_profiler.hardware.cpu_bench import measure_cpu_model
    from llm_profiler.validation.runs import build_reference, format_run, random_cache, run_generate

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    models: dict[tuple[str, str], Any] = {}
    for name, dtype, threads in grid(args.quick):
        torch.set_num_threads(threads)
        # measured again right before each (model, dtype, threads)' runs: a shared host's memory bandwidth
        # drifts by tens of percent over minutes, and the prediction should see the CPU the runs see
        dm = measure_cpu_model(refresh=args.refresh_device_model)
        cpu = measure_local_cpu(0.3)
        print(f"== {name} {dtype}, {threads} thread{'s' if threads > 1 else ''}; device model: "
              + ", ".join(f"{d}: GEMM {dm.gemm[d].flops_per_s[-1] / 1e9:.0f} GFLOP/s at M={dm.gemm[d].m[-1]}, "
                          f"GEMV {dm.gemv_bandwidth[d] / 1e9:.1f} GB/s, elementwise "
                          f"{dm.elementwise_bandwidth[d] / 1e9:.1f} GB/s" for d in dm.gemm)
              + f", {dm.per_op_s * 1e6:.2f} us per op, fresh pages {dm.fresh_output_s_per_byte * 1e9:.2f} ns/B "
              + f"(allocator {dm.allocator}); attention " + ", ".join(
                  f"{d} {dm.attention_bandwidth[d] / 1e9:.1f}" for d in dm.attention_bandwidth) + " GB/s, copies "
              + ", ".join(f"{d} {dm.copy_bandwidth[d] / 1e9:.1f}" for d in dm.copy_bandwidth) + " GB/s; "
              + "GEMV by weight MiB: " + "; ".join(
                  f"{d} " + " ".join(f"{s / 2**20:g}:{r / 1e9:.1f}" for s, r in zip(c.size_bytes, c.bytes_per_s))
                  for d, c in dm.gemv_curve.items())
              + f"; load {os.getloadavg()[0]:.2f}", flush=True)
        if name not in models:
            models.clear()  # one model in memory at a time, built once (fp32), then cast for bf16
            models[name] = build_reference(name, dtype=dtype)[0]
        model = models[name].to(getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype]))
        for i, (prompt, new, past) in enumerate(shapes(dtype, args.quick)):
            cache = random_cache(model, 1, past) if past else None
            run = run_generate(name, 1, prompt, new, dtype=dtype, device=cpu, model=model, repeats=args.repeats,
                               warmup=(i == 0), device_model=dm, past_cache=cache, name=name)
            del cache
            rows.append(row(run, threads, past))
            print(format_run(run).split("\nnote:")[0] + "\n", flush=True)
    elapsed = time.perf_counter() - started
    header = (f"`{' '.join(['python benchmarks/measured_vs_predicted.py', *sys.argv[1:]])}` "
              f"({elapsed / 60:.1f} min; torch {torch.__version__}; {os.cpu_count()} logical CPUs; "
              f"batch 1, random weights, transformers eager; the per-forward median of {args.repeats} runs; "
              f"allocator {args.allocator}"
              f"{' (' + os.environ['GLIBC_TUNABLES'] + ')' if os.environ.get('GLIBC_TUNABLES') else ''}; "
              "TTFT at context 0, TPOT the mean decode step):")
    table = markdown(rows, header)
    print(table)
    if not args.quick and not args.no_docs:
        write_docs(table)
        print(f"wrote the table into {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
