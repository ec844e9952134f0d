"""Speed of the serving simulator: 10,000 requests of a chat mix on Llama-3.1-8B / H100 at several arrival
rates, step by step and with the vectorised decode stretches (the default).

Run: ``python benchmarks/bench_serving.py`` (``--requests N``, ``--rates 5,10,20,40``). Prints the wall and
CPU time of each simulation (the best of ``--repeat`` runs, after one warm-up that builds the step-cost
tables; CPU time is the fairer figure on a shared machine), the steps simulated (CPU microseconds per step),
the load average (``os.getloadavg``) before, after and per row, and the process's nice value. No analytical
peer simulates a scheduler, so there is no peer column.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_profiler.serving import Lengths, Server, Workload  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--device", default="h100")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rates", default="5,10,20,40")
    ap.add_argument("--prompt-len", default="lognormal:1024:0.8")
    ap.add_argument("--output-len", default="lognormal:256:0.8")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--step-by-step", action="store_true", help="also time without the decode stretches")
    args = ap.parse_args()
    server = Server(args.model, args.device)
    prompt, output = Lengths.parse(args.prompt_len), Lengths.parse(args.output_len)
    print(f"{args.model} on {args.device}: {args.requests:,} requests, prompt {prompt.describe()}, output "
          f"{output.describe()}; load average before {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, nice "
          f"{os.nice(0)}")
    server.run(Workload(prompt=prompt, output=output, rate=10.0, num_requests=200))  # warm-up: tables
    print(f"{'rate':>6} {'mode':>12} {'wall s':>8} {'CPU s':>7} {'steps':>9} {'us/step':>8} {'running':>8} {'p99 TTFT':>9} "
          f"{'load':>5}")
    for rate in (float(r) for r in args.rates.split(",")):
        wl = Workload(prompt=prompt, output=output, rate=rate, num_requests=args.requests)
        for fast in ((True, False) if args.step_by_step else (True,)):
            best = cpu = float("inf")
            for _ in range(args.repeat):
                t, c = time.perf_counter(), time.process_time()
                r = server.run(wl, fast_forward=fast)
                best, cpu = min(best, time.perf_counter() - t), min(cpu, time.process_time() - c)
            print(f"{rate:>6g} {'stretches' if fast else 'step by step':>12} {best:>8.2f} {cpu:>7.2f} {r.steps:>9,} "
                  f"{cpu / r.steps * 1e6:>8.1f} {r.mean_running:>8.1f} {r.ttft_s.p99:>8.3f}s {os.getloadavg()[0]:>5.1f}")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
