"""Write the images the docs use (docs/images/*.png). Run: python scripts/make_doc_images.py"""

from __future__ import annotations

from pathlib import Path

from llm_profiler import profile, profile_model
from llm_profiler.perf import roofline
from llm_profiler.report.plots import plot_layers, plot_roofline, plot_seq_curve

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # Gemma 2 alternates sliding-window (4096) and global layers: at 8192 tokens the windowed layers keep
    # half the KV cache (eager attention still computes every score, so their FLOPs are the same).
    plot_layers(profile("gemma-2-9b", batch=1, seq=8192), "cache", OUT / "layers_gemma2_cache.png")
    plot_seq_curve(profile_model("llama-3.1-8b"), "flops", [2**k for k in range(7, 17)], OUT / "seq_curve_llama31.png")
    # Every node of Llama-3.1-8B a point (FLOPs and bytes from llm_profiler.traffic), coloured by phase.
    points = []
    for label, (phase, b, s, p) in {"prefill B=1 S=2048": ("prefill", 1, 2048, 0),
                                    "decode B=1 P=2048": ("decode", 1, 1, 2048),
                                    "decode B=64 P=2048": ("decode", 64, 1, 2048)}.items():
        report = roofline("llama-3.1-8b", "h100", phase, batch=b, seq=s, past=p, nodes=True)
        points += [(label, n.flops, n.bytes) for n in report.nodes if n.flops > 0 and n.bytes > 0]
    plot_roofline(points, "h100", "bf16", OUT / "roofline_llama31_h100.png")
    for path in sorted(OUT.glob("*.png")):
        print(f"wrote {path.relative_to(OUT.parent.parent)} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
