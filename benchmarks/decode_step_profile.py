"""One eager decode step after a long context, op by op: where the time goes, beside the device model's split.

Builds a transformers model at its real size with random weights (``validation.runs.build_reference``), fills a
``DynamicCache`` with ``--past`` random tokens (``random_cache``), times ``--steps`` single-token forwards
(the cache cropped back after each), then runs one under torch's profiler and prints the aten ops that took
the most time. Below, the prediction of the same step under this CPU's device model (``hf-eager``), summed per
node kind. The process's allocator decides whether eager outputs land in fresh pages (docs/hardware.md, "The
allocator"): compare, e.g.

    python benchmarks/decode_step_profile.py qwen2.5-0.5b --past 8192
    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776 \\
        python benchmarks/decode_step_profile.py qwen2.5-0.5b --past 8192
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576 python benchmarks/decode_step_profile.py qwen2.5-0.5b --past 8192
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a bundled model name or config (e.g. qwen2.5-0.5b)")
    parser.add_argument("--past", type=int, default=8192, help="cached tokens before the step")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--top", type=int, default=8, help="aten ops to list")
    parser.add_argument("--tiny", action="store_true", help="the config's tiny variant (2 layers, small widths)")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from llm_profiler import profile_model
    from llm_profiler.hardware import measure_local_cpu
    from llm_profiler.hardware.cpu_bench import measure_cpu_model, process_allocator
    from llm_profiler.perf import phase_report, settings
    from llm_profiler.phases import Phase
    from llm_profiler.validation.reference import reference
    from llm_profiler.validation.runs import build_reference, random_cache

    torch.set_num_threads(args.threads)
    model, _ = build_reference(args.model, tiny=args.tiny, dtype=args.dtype)
    model.eval()
    cache = random_cache(model, 1, args.past)
    ids = torch.zeros(1, 1, dtype=torch.long)

    def step() -> None:
        model(input_ids=ids, past_key_values=cache, use_cache=True)
        cache.crop(-(cache.get_seq_length() - args.past))  # back to the filled context

    times = []
    with torch.no_grad():
        for i in range(2 + args.steps):
            t0 = time.perf_counter()
            step()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
    print(f"{args.model} {args.dtype}, {args.threads} thread(s), one token after {args.past}; allocator "
          f"{process_allocator()} (GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}); load "
          f"{os.getloadavg()[0]:.2f}")
    print(f"measured step: median {statistics.median(times) * 1e3:.1f} ms of {args.steps} "
          f"({', '.join(f'{t * 1e3:.0f}' for t in times)} ms)")
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:args.top]
    print("aten ops (one profiled step, self time): " + "; ".join(
        f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / 1e3:.1f} ms x{e.count}" for e in events))

    dm = measure_cpu_model()
    st = settings(measure_local_cpu(0.3), weight_dtype=args.dtype, act_dtype=args.dtype, kv_dtype=args.dtype,
                  compute_dtype=args.dtype, device_model=dm)
    data = reference(args.model, tiny=args.tiny).data
    report = phase_report(profile_model(data), Phase.decode(1, args.past, 1, "last"), st,
                          engine="hf-eager", nodes=True)
    by_kind: dict[str, float] = defaultdict(float)
    for row in report.nodes:
        by_kind[str(row.kind)] += row.time_s
    print(f"predicted step: {report.latency_s * 1e3:.1f} ms (device model, allocator {dm.allocator}); by node "
          "kind: " + "; ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])
                               if v >= 0.01 * report.latency_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
