"""Write the images the docs use (docs/images/*.png). Run: python scripts/make_doc_images.py"""

from __future__ import annotations

from pathlib import Path

from llm_profiler import profile, profile_model
from llm_profiler.hardware import tensor_bytes
from llm_profiler.report.plots import plot_layers, plot_roofline, plot_seq_curve

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def traffic_bytes(model: str, batch: int, seq: int, past: int, dtype: str = "bf16") -> int:
    """A simple traffic estimate for the roofline picture: every weight read once, the KV cache read,
    every activation written once, all in ``dtype`` (no reuse modelled)."""
    p = profile(model, batch, seq, past)
    elements = p.total("params", "model") + p.total("cache", "model") + p.total("act", "model")
    return tensor_bytes(dtype, elements)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # Gemma 2 alternates sliding-window (4096) and global layers: at 8192 tokens the windowed layers keep
    # half the KV cache (eager attention still computes every score, so their FLOPs are the same).
    plot_layers(profile("gemma-2-9b", batch=1, seq=8192), "cache", OUT / "layers_gemma2_cache.png")
    plot_seq_curve(profile_model("llama-3.1-8b"), "flops", [2**k for k in range(7, 17)], OUT / "seq_curve_llama31.png")
    model = "llama-3.1-8b"
    points = []
    for label, (b, s, p) in {"prefill B=1 S=2048": (1, 2048, 0), "decode B=1 P=2048": (1, 1, 2048),
                             "decode B=64 P=2048": (64, 1, 2048)}.items():
        flops = profile(model, b, s, p).total("matmul_flops", "model")
        points.append((label, flops, traffic_bytes(model, b, s, p)))
    plot_roofline(points, "h100", "bf16", OUT / "roofline_llama31_h100.png")
    for path in sorted(OUT.glob("*.png")):
        print(f"wrote {path.relative_to(OUT.parent.parent)} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
