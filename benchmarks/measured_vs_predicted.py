"""Measured vs predicted: a real transformers ``generate`` on this CPU beside the roofline prediction.

The model is a ~134M-parameter Llama (hidden 768, 12 layers, 12 heads, MLP 2048, vocab 32000, untied head)
with random weights, in fp32. The prediction uses the local CPU's measured matmul FLOP/s and copy
bandwidth (``hardware.cpu_bench.measure_local_cpu``) and the same shapes and dtype; the lm_head runs on
the last position only, as ``generate`` asks for (``logits_to_keep=1``).

    python benchmarks/measured_vs_predicted.py [--repeats 3] [--dtype fp32] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CONFIG = {
    "model_type": "llama", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_key_value_heads": 12, "intermediate_size": 2048, "vocab_size": 32000, "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
# (batch, prompt, new tokens)
SHAPES = [(1, 128, 32), (4, 128, 32), (1, 512, 16)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--bench-seconds", type=float, default=2.0)
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # before the CPU benchmark, so both sides use the same threads

    from llm_profiler import profile_model
    from llm_profiler.hardware import measure_local_cpu
    from llm_profiler.validation.runs import build_reference, format_run, run_generate

    cpu = measure_local_cpu(args.bench_seconds)
    params = profile_model(CONFIG).count("params", "model")
    print(f"model: llama hidden 768, 12 layers, vocab 32000: {params:,} parameters, {args.dtype}")
    print(f"device: {cpu.notes}")
    print(f"        peak {', '.join(f'{k} {v / 1e9:.1f} GFLOP/s' for k, v in cpu.peak_flops.items())}, "
          f"bandwidth {cpu.memory_bandwidth / 1e9:.2f} GB/s; torch {torch.__version__}; "
          f"load average before the run {os.getloadavg()[0]:.2f}\n")
    model, _ = build_reference(CONFIG, dtype=args.dtype)
    runs = []
    for batch, prompt, new in SHAPES:
        run = run_generate(CONFIG, batch, prompt, new, dtype=args.dtype, device=cpu, model=model,
                           repeats=args.repeats, name="llama-134M")
        runs.append(run)
        print(format_run(run) + "\n")
    if args.markdown:
        print("| batch | prompt | new | TTFT measured | TTFT predicted | ratio | TPOT measured | TPOT predicted "
              "| ratio | tokens/s measured | tokens/s predicted | decode GB/s achieved | prefill GFLOP/s achieved |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in runs:
            print(f"| {r.batch} | {r.prompt} | {r.new_tokens} | {r.ttft_s * 1e3:.1f} ms | {r.predicted_ttft_s * 1e3:.1f} ms "
                  f"| {r.ttft_ratio:.2f} | {r.tpot_s * 1e3:.1f} ms | {r.predicted_tpot_s * 1e3:.1f} ms | {r.tpot_ratio:.2f} "
                  f"| {r.tokens_per_s:.1f} | {r.predicted_tokens_per_s:.1f} | {r.decode_achieved_bytes_per_s / 1e9:.2f} "
                  f"| {r.prefill_achieved_flops_per_s / 1e9:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
