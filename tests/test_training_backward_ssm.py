"""Backward of the SSM and short-conv layouts (mamba2, nemotron_h, granitemoehybrid, lfm2, falcon_h1, mamba,
jamba, falcon_mamba, bamba, lfm2_moe, falcon_h1 with mamba_rms_norm): exact per node against autograd
(training/backward_ssm.py), tiny on the CPU at (2, 3), (1, 5) and past the tiny chunk of 4 (1, 9); mamba2 at
full size on the meta device; the new rule kinds' numbers derived beside them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from llm_profiler.training import backward as tb
from llm_profiler.training.backward_moe import l2_norm_backward
from llm_profiler.training.backward_ssm import convolution_backward, softplus_backward

pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm_profiler.validation.backward import BackwardReport, validate_backward  # noqa: E402
from llm_profiler.validation.reference import reference  # noqa: E402

CONFIGS = Path(__file__).parent / "family_configs"
MAMBA2 = str(CONFIGS / "transformers--Mamba2Config-defaults.json")
# FalconH1Config's defaults with mamba_rms_norm true (mamba_norm_before_gate: its default, true)
FALCON_H1_NORM = str(CONFIGS / "transformers--FalconH1Config-defaults-mamba_rms_norm.json")
FALCON_MAMBA = str(CONFIGS / "transformers--FalconMambaConfig-defaults.json")
MODELS = [
    MAMBA2,  # mamba2: every layer a Mamba-2 mixer (torch path of the chunked SSD scan)
    "nemotron-h-56b",  # nemotron_h: Mamba-2, attention (no rope) and relu2-MLP layers
    str(CONFIGS / "transformers--GraniteMoeHybridConfig-defaults.json"),  # Mamba-2 / NoPE attention + MoE + shared
    str(CONFIGS / "transformers--Lfm2Config-LFM2-1.2B-dims.json"),  # lfm2: short-conv and attention layers
    str(CONFIGS / "transformers--FalconH1Config-defaults.json"),  # falcon_h1: parallel Mamba-2 + attention, muP
    str(CONFIGS / "transformers--MambaConfig-defaults.json"),  # mamba: Mamba-1's sequential scan, tied embedding
    "jamba-1.5-mini",  # jamba: Mamba-1 with dt / B / C norms, attention, MLP and MoE layers
    FALCON_MAMBA,  # falcon_mamba: Mamba-1, weightless dt/B/C norms
    str(CONFIGS / "transformers--BambaConfig-defaults.json"),  # bamba: Mamba-2 / partial-rotary attention + MLP
    str(CONFIGS / "transformers--Lfm2MoeConfig-LFM2-8B-A1B-dims.json"),  # lfm2_moe: short conv + sigmoid-routed MoE
    FALCON_H1_NORM,  # falcon_h1 with mamba_rms_norm: the grouped gated RMSNorm, norm(x) * silu(gate)
]
SHAPES = [(2, 3), (1, 5), (1, 9)]


@cache
def _report(model: str, batch: int, seq: int) -> BackwardReport:
    return validate_backward(model, batch, seq, tiny=True)


@pytest.mark.parametrize(("model", "batch", "seq"), [(m, b, s) for m in MODELS for b, s in SHAPES])
def test_ssm_backward_exact_per_node_tiny(model: str, batch: int, seq: int) -> None:
    report = _report(model, batch, seq)
    assert report.ok, report.summary_line() + "\n" + "\n".join(
        f"{r.node} {r.metric}: {r.predicted} vs {r.measured}" for r in report.mismatches[:20]) + str(report.unknown_ops)
    assert report.model_type in tb.VALIDATED_MODEL_TYPES


def _measured(report: BackwardReport, node: str) -> dict[str, int]:
    return {r.metric: r.measured for r in report.rows if r.node == node}


def test_mamba2_conv_dt_and_scan_values() -> None:
    """Tiny Mamba2Config at B=2, S=3: T=6, H=8 heads of Pd=16, G=2 groups of N=8 states, conv over
    C = 128 + 2*2*8 = 160 channels with kernel k=4, chunk L=4 (c = 1 chunk, Tp = 8 padded tokens)."""
    report = _report(MAMBA2, 2, 3)
    a = "backbone.layers.0.mixer"
    conv = _measured(report, f"{a}:conv")
    # the cached path convolves max(S, k) = 4 positions per channel, Lout = 4 + 3 = 7 outputs. grad input:
    # B*C*4 = 1280 elements x k taps; grad weight: C*k = 640 weights x B*Lout = 14 terms; grad bias: C sums of 14
    assert conv["macs"] == 1280 * 4 + 640 * 14 == 14_080
    assert conv["add"] == 1280 * 3 + 640 * 13 + 160 * 13 == 14_240
    assert dict(convolution_backward((2, 160, 7), (2, 160, 4), (160, 1, 4), (True, True, True), 160)) == {
        "macs": 14_080, "mult": 14_080, "add": 14_240, "act": 1280 + 640 + 160}
    dt = _measured(report, f"{a}:dt")
    # T*H = 48: clamp back (ge, le, logical_and: 3 CMP), softplus back (MULT 2, EXP, ADD, DIV, CMP 1 each),
    # dt read twice (48 ADD), dt_bias's gradient summed over T (8*5 ADD)
    assert (dt["cmp"], dt["mult"], dt["exp"], dt["div"]) == (4 * 48, 2 * 48, 48, 48)
    assert dt["add"] == 48 + 48 + 8 * 5
    assert dict(softplus_backward(1)) == {"mult": 2, "exp": 1, "add": 1, "div": 1, "cmp": 1, "act": 1}
    scan = _measured(report, f"{a}:scan")
    # every einsum's bmm backwards: twice the forward's MACs (G, Y_diag, states, C @ states: 8*B*c bmms;
    # new_states: 8*B bmms of (c+1) x (c+1) x 128): 2 * (1024*B*c^2 + 13312*B*c + 1024*B) at B=2, c=1
    assert scan["macs"] == 2 * (1024 * 2 + 13312 * 2 + 1024 * 2) == 61_440
    tiny = reference(MAMBA2, tiny=True).profile  # the forward of the same tiny model: the "2x" rule, per bmm
    assert scan["macs"] == 2 * tiny.at(2, 3).values[f"{a}:scan"]["macs"]
    mixer = _measured(report, a)
    # silu over the conv's B*C*4 = 1280 outputs (EXP 1, ADD 3, DIV 1, MULT 3 each), plus x read twice
    # (T*H*Pd = 768) and the chunked B and C read twice each (Tp*H*N = 512 each)
    assert mixer["add"] == 3 * 1280 + 768 + 2 * 512


def test_mamba2_backward_exact_full_size_meta() -> None:
    """Mamba2Config's defaults (64 layers, h 4096, 128 heads of 64, 8 groups of 128 states, chunk 256) at (1, 5)."""
    report = validate_backward(MAMBA2, 1, 5, tiny=False)
    assert report.ok, report.summary_line()
    got = {(r.node, r.metric): r.measured for r in report.rows}
    # dt: softplus back's one DIV per (token, head), T*H = 5*128; the scan's bmms: twice the forward's MACs
    assert got[("backbone.layers.0.mixer:dt", "div")] == 5 * 128
    full = reference(MAMBA2, tiny=False).profile.at(1, 5).values["backbone.layers.0.mixer:scan"]["macs"]
    assert got[("backbone.layers.0.mixer:scan", "macs")] == 2 * full


def test_falcon_h1_gated_norm_order_values() -> None:
    """Tiny falcon_h1 with mamba_rms_norm at B=2, S=3: T=6, I=64 (4 heads of 16), 2 norm groups: 12 rows of
    n=32. The two orders run the same forward ops; backward differs in which node's output the norm reads twice
    (x^2 and x * rstd): the scan's (norm(x) * silu(gate), mamba_norm_before_gate true) or the gated product's,
    computed inside the norm module (norm(x * silu(gate)), false)."""
    import json

    before = _report(FALCON_H1_NORM, 2, 3)
    cfg = {**json.loads(Path(FALCON_H1_NORM).read_text()), "mamba_norm_before_gate": False}
    after = validate_backward(cfg, 2, 3, tiny=True)
    assert after.ok, after.summary_line()
    norm, scan = "model.layers.0.mamba.norm", "model.layers.0.mamba:scan"
    # the norm's ADD: grad w summed over T (I*(T-1) = 64*5), grad r over each row (12*31), silu back (3*T*I)
    assert _measured(before, norm)["add"] == 64 * 5 + 12 * 31 + 3 * 384 == 1844
    # gate first: the product's two gradients (x^2, x * rstd) summed on the norm: + T*I = 384
    assert _measured(after, norm)["add"] == 1844 + 384
    assert _measured(before, scan)["add"] - _measured(after, scan)["add"] == 384  # ... else on the scan's output
    for metric in ("mult", "div", "exp", "macs"):  # the same ops otherwise
        assert _measured(before, norm).get(metric) == _measured(after, norm).get(metric)


def test_falcon_mamba_weightless_norm_values() -> None:
    """Tiny FalconMambaConfig at B=2, S=3: T=6, dt rank R=6, N=8 states; dt_layernorm, x * rsqrt(mean(x^2) +
    eps) without a weight (``l2_norm_backward``)."""
    dt = _measured(_report(FALCON_MAMBA, 2, 3), "backbone.layers.0.mixer.dt_layernorm")
    # x * r: g * r and g * x (2 T*R MULT), grad r summed over R (T*(R-1) ADD); rsqrt back (4 MULT per row);
    # mean: g / R (T*R DIV); x^2: pow(x, 1) (T*R EXP), * 2, * g (2 T*R MULT); no weight: no g*w, no grad w
    assert (dt["mult"], dt["add"], dt["div"], dt["exp"]) == (4 * 36 + 4 * 6, 6 * 5, 36, 36)
    assert dict(l2_norm_backward(6, 6)) == {k: dt[k] for k in ("mult", "add", "div", "exp", "act")}


def test_mamba1_scan_values() -> None:
    """Tiny MambaConfig at B=2, S=3: I=128 channels, N=8 states, T=6."""
    scan = _measured(_report(str(CONFIGS / "transformers--MambaConfig-defaults.json"), 2, 3), "backbone.layers.0.mixer:scan")
    # per step, y_i = state_i @ C_i back: B*I*N = 2048 MACs each way, S = 3 steps
    assert scan["macs"] == 2 * 3 * 2048
    # ADD: silu back (3*T*I = 2304), D's sum (I*(T-1) = 640), the C_i gradients (B*N*(I-1) = 2032 per step),
    # state_i read twice (2 * 2048), dA and dBu summed over their 3 per-step selects (2 * 2 * 6144), dBu's,
    # dB's and dA's sums (3 * T*I*(N-1) = 16128, T*N*(I-1) = 6096, T*I*N - I*N = 5120)
    assert scan["add"] == 2304 + 640 + 3 * 2032 + 2 * 2048 + 4 * 6144 + 16128 + 6096 + 5120
