"""Speed of the web explorer: server ready time and one interaction for Llama-3.1-8B.

Run: ``python benchmarks/ui_bench.py`` (``--repeats N``, default 30; ``--runs K`` fresh servers for the ready
time, default 3). It starts ``python -m llm_profiler ui --no-browser --port 0`` as a real process and prints:

- ready: process start to the first 200 answer of ``GET /`` (the page), median of ``--runs`` fresh processes;
- first view: the first ``GET /api/view`` for Llama-3.1-8B (builds the model's graph and formulas once);
- interaction: ``GET /api/view`` for Llama-3.1-8B as a slider moves (a new batch each time, so nothing is
  answered from a cache): the request's wall time from this client, HTTP and JSON included, median of N.

Targets (issue 16): ready < 2 s, interaction < 100 ms. Only loopback addresses are used; the loops are bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "llama-3.1-8b"
READY_TARGET_S, INTERACTION_TARGET_S = 2.0, 0.100
READY_TIMEOUT_S = 60.0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def start_server() -> tuple[subprocess.Popen[str], str, float]:
    """A fresh ``llm-profiler ui`` process, its URL and the seconds from start to the page's first 200."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llm_profiler", "ui", "--no-browser", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline())
    if match is None:
        proc.terminate()
        raise SystemExit("the server did not print its URL")
    url = match.group(0)
    while time.perf_counter() - t0 < READY_TIMEOUT_S:
        try:
            if _get(url)[0] == 200:
                return proc, url, time.perf_counter() - t0
        except OSError:
            time.sleep(0.01)
    proc.terminate()
    raise SystemExit(f"no 200 from {url} within {READY_TIMEOUT_S:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="interactions to time (default 30)")
    parser.add_argument("--runs", type=int, default=3, help="fresh servers for the ready time (default 3)")
    args = parser.parse_args(argv)

    ready = []
    for _ in range(max(1, args.runs)):
        proc, url, seconds = start_server()
        ready.append(seconds)
        if len(ready) < args.runs:
            proc.terminate()
            proc.wait(timeout=30)
    try:
        t0 = time.perf_counter()
        status, body = _get(f"{url}api/view?model={MODEL}&batch=1&seq=2048")
        first = time.perf_counter() - t0
        if status != 200:
            raise SystemExit(f"api/view answered {status}: {body[:300]!r}")
        times = []
        for i in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            status, body = _get(f"{url}api/view?model={MODEL}&batch={2 + i}&seq=2048")
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise SystemExit(f"api/view answered {status}: {body[:300]!r}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    ready_s, inter_s = statistics.median(ready), statistics.median(times)
    print(f"server ready (process start to first 200 of GET /): median {ready_s:.3f} s of {len(ready)} runs "
          f"(min {min(ready):.3f}, max {max(ready):.3f}); target < {READY_TARGET_S:g} s: "
          f"{'ok' if ready_s < READY_TARGET_S else 'MISSED'}")
    print(f"first view of {MODEL} (builds its formulas once): {first * 1000:.0f} ms")
    print(f"interaction (GET /api/view, {MODEL}, a new batch each time, {len(body):,} bytes of JSON): "
          f"median {inter_s * 1000:.1f} ms of {len(times)} (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}); "
          f"target < {INTERACTION_TARGET_S * 1000:g} ms: {'ok' if inter_s < INTERACTION_TARGET_S else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
