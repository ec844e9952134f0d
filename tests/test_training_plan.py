"""The training step under parallel plans: per-rank model states from the sharded nodes, ZeRO over the dp
group, activations per rank and in flight, the communication of a step with each formula's derivation, step
time, MFU; what fits (the largest micro-batch, the smallest plan); the ``train`` command's plan options."""

from __future__ import annotations

import json

import pytest

from llm_profiler import profile_model
from llm_profiler.cli import main
from llm_profiler.errors import ProfilerError
from llm_profiler.hardware.systems import get_system
from llm_profiler.parallel import make_plan
from llm_profiler.parallel.shard import rank_model
from llm_profiler.training.activations import saved_activations
from llm_profiler.training.fit import largest_micro_batch, training_fit
from llm_profiler.training.step import training_step

P8 = 8_030_261_248  # Llama-3.1-8B parameters
DGX = get_system("dgx-h100")
NV_BW, NV_LAT = DGX.intra_node.bandwidth, DGX.intra_node.latency_s  # 450 GB/s per direction, 0.47 us per hop
IB_BW, IB_LAT = DGX.inter_node_bandwidth_per_device, DGX.inter_node.latency_s  # 50 GB/s per GPU, 2.7 us
PEAK = DGX.device.peak("bf16")  # 989.5 TFLOP/s dense


@pytest.fixture(scope="module")
def llama8b():  # type: ignore[no-untyped-def]
    return profile_model("llama-3.1-8b")


@pytest.fixture(scope="module")
def llama70b():  # type: ignore[no-untyped-def]
    return profile_model("llama-3.1-70b")


def _states(step) -> int:  # type: ignore[no-untyped-def]
    m = step.memory
    return m.weights + m.gradients + m.master_weights + m.optimizer_states


def test_zero3_is_16_phi_over_nd(llama8b) -> None:  # type: ignore[no-untyped-def]
    """ZeRO-3 over N_d = 8 (Rajbhandari et al. 2020, figure 1: (2 + 2 + K) * Ψ / N_d, K = 12 for mixed-precision
    Adam): 16 * 8,030,261,248 / 8 = 16,060,522,496 bytes of model states per rank; plus the layer being computed,
    gathered whole: 4096 * (4096 + 1024 + 1024 + 4096) + 3 * 4096 * 14336 + 2 * 4096 = 218,112,000 parameters in
    bf16 = 436,224,000 bytes."""
    step = training_step(llama8b, 1, 4096, zero=3, plan=make_plan(dp=8), system="dgx-h100")
    assert _states(step) == 16 * P8 // 8 == 16_060_522_496
    assert step.memory.gathered_weights == 2 * 218_112_000 == 436_224_000
    # the same through dp= (no plan): one code path
    assert _states(training_step(llama8b, 1, 4096, zero=3, dp=8)) == 16 * P8 // 8


def test_zero3_communication_and_time(llama8b) -> None:  # type: ignore[no-untyped-def]
    """ZeRO-3, dp = 8, m micro-batches per step: the weights all-gathered before each micro-batch's forward and
    backward (2m), the gradients reduce-scattered after each backward (m), 2Ψ bytes each (bf16): a ring sends
    (n-1)/n of the buffer per rank, (n-1)/n * size / bw + (n-1) * lat over NVLink (parallel.comm). At m = 1 the
    ZeRO paper's 3Ψ (section 7.2.2): 3 * 7/8 * 2 * P = 42,158,871,552 bytes sent per rank."""
    step = training_step(llama8b, 1, 4096, zero=3, plan=make_plan(dp=8), system="dgx-h100")
    assert step.communication_bytes == 3 * 7 * 2 * P8 // 8 == 42_158_871_552
    each = 7 / 8 * 2 * P8 / NV_BW + 7 * NV_LAT
    assert step.communication_time_s == pytest.approx(3 * each)
    gathers = {(c.kind, c.what): c.count for c in step.collectives}
    assert gathers == {("all_gather", "weights"): 2, ("reduce_scatter", "gradients"): 1}
    acc = training_step(llama8b, 1, 4096, zero=3, plan=make_plan(dp=8), grad_accum=4, system="dgx-h100")
    assert {(c.kind, c.what): c.count for c in acc.collectives} == {("all_gather", "weights"): 8,
                                                                    ("reduce_scatter", "gradients"): 4}
    assert acc.communication_bytes == 12 * 7 * 2 * P8 // 8
    # ZeRO-0 (an all-reduce: 2 (n-1)/n), ZeRO-1 (reduce-scatter + all-gather), ZeRO-2 at m = 2 (m reduce-scatters
    # + 1 all-gather)
    assert training_step(llama8b, 1, 128, dp=8).communication_bytes == 2 * 7 * 2 * P8 // 8
    assert training_step(llama8b, 1, 128, dp=8, zero=1).communication_bytes == 2 * 7 * 2 * P8 // 8
    assert training_step(llama8b, 1, 128, dp=8, zero=2, grad_accum=2).communication_bytes == 3 * 7 * 2 * P8 // 8


def test_zero3_step_time_mfu(llama8b) -> None:  # type: ignore[no-untyped-def]
    """Step = m x (the micro-batch's compute) + the dp communication (not overlapped) + the optimizer and clip;
    MFU = the model's forward + backward FLOPs over all ranks / (step x 8 x peak)."""
    step = training_step(llama8b, 1, 4096, zero=3, plan=make_plan(dp=8), system="dgx-h100", recompute="full")
    compute = (step.forward_flops + step.backward_flops + step.recompute_flops) / PEAK
    optimizer = (step.optimizer_flops + step.clip_flops) / PEAK
    assert step.step_time_s == pytest.approx(compute + step.communication_time_s + optimizer)
    assert step.mfu == pytest.approx(8 * step.model_flops / (step.step_time_s * 8 * PEAK))
    assert step.tokens_per_day == pytest.approx(8 * 4096 / step.step_time_s * 86400)
    over = training_step(llama8b, 1, 4096, zero=3, plan=make_plan(dp=8), system="dgx-h100", recompute="full",
                         overlap=True)
    assert over.step_time_s == pytest.approx(max(compute, step.communication_time_s) + optimizer)


def test_llama70b_tp8_pp2_per_rank_states(llama70b) -> None:  # type: ignore[no-untyped-def]
    """tp = 8, pp = 2 on two DGX H100: each stage 40 layers; a layer's matrices 2 * 8192^2 + 2 * 1024 * 8192 +
    3 * 8192 * 28672 = 855,638,016 parameters, 1/8 per rank = 106,954,752; the vocab-parallel embedding
    (stage 0) and lm_head (stage 1) ceil(128256 / 8) = 16032 rows of 8192; the RMSNorm scales replicated
    (80 on stage 0, 81 with the final norm on stage 1). Read from the sharded nodes (parallel.shard), and
    mixed-precision AdamW's 16 bytes each without ZeRO."""
    plan = make_plan(tp=8, pp=2, micro_batches=8)
    step = training_step(llama70b, 1, 4096, plan=plan, system="dgx-h100", recompute="full")
    s0 = 40 * 106_954_752 + 16032 * 8192 + 80 * 8192
    s1 = 40 * 106_954_752 + 16032 * 8192 + 81 * 8192
    assert [st.params for st in step.stages] == [s0, s1] == [4_410_179_584, 4_410_187_776]
    assert [_states_of(st) for st in step.stages] == [16 * s0, 16 * s1]
    assert [st.layers for st in step.stages] == [40, 40]
    assert step.devices == 16 and step.micro_batches == 8


def _states_of(stage) -> int:  # type: ignore[no-untyped-def]
    m = stage.memory
    return m.weights + m.gradients + m.master_weights + m.optimizer_states


def test_llama70b_activations_per_rank_and_in_flight(llama70b) -> None:  # type: ignore[no-untyped-def]
    """Activations per rank, bf16-exact, at T = B*S = 2048 tokens, tp = 8: heads 64/8 = 8, KV heads 8/8 = 1,
    intermediate 28672/8 = 3584 (TP divides the head and intermediate dims; the norms and the column linears'
    inputs are whole without sp). Per layer: two norms 2 * (4*T*h + 4*T + 2*T*h) (x upcast to fp32, fp32 rstd,
    y in bf16), q_proj's and gate_proj's inputs 2 * 2*T*h, o_proj's input 2*T*h/8, scores q + repeated k
    2 * 2*8*S*128, softmax 4*8*S*S (fp32), context v and the bf16 probabilities 2*8*S*128 + 2*8*S*S, the
    activation's input 2*T*3584, the gate product 2 * 2*T*3584, down_proj's input 2*T*3584.
    1F1B: stage 0 holds min(pp, m) = 2 micro-batches in flight, stage 1 one (it also keeps the loss's
    float32 log-probabilities over its V/8 = 16032 vocabulary rows)."""
    t, h, i, s = 2048, 8192, 3584, 2048
    layer = (2 * (4 * t * h + 4 * t + 2 * t * h) + 2 * 2 * t * h + 2 * t * h // 8 + 2 * (2 * 8 * s * 128)
             + 4 * 8 * s * s + 2 * 8 * s * 128 + 2 * 8 * s * s + 2 * t * i + 2 * 2 * t * i + 2 * t * i)
    plan = make_plan(tp=8, pp=2, micro_batches=4)
    stage0 = rank_model(llama70b, plan, 0)
    rope = 2 * s * 128 * 2  # cos and sin once per stage (each stage builds its own tables)
    assert saved_activations(stage0, 1, s, loss=False).bytes == 40 * layer + rope + 8 * t  # + the ids (int64)
    stage1 = rank_model(llama70b, plan, 1)
    tail = (4 * t * h + 4 * t + 2 * t * h) + 2 * t * h + (4 * t * 16032 + 8 * t + 4)  # final norm, lm_head, loss
    assert saved_activations(stage1, 1, s).bytes == 40 * layer + rope + tail
    step = training_step(llama70b, 1, s, plan=plan)
    assert [st.in_flight for st in step.stages] == [2, 1]
    assert step.stages[0].memory.activations == 2 * (40 * layer + rope + 8 * t)
    assert step.stages[1].memory.activations == 40 * layer + rope + tail


def test_llama70b_tp_pp_communication(llama70b) -> None:  # type: ignore[no-untyped-def]
    """Per micro-batch of 1 x 4096 tokens, each all-reduce carries B*S*h*2 = 67,108,864 bytes (Megatron-LM:
    after o_proj and down_proj in the forward; before the column-parallel q/k/v and gate/up in the backward).
    Stage 0: the embedding's all-reduce + 40 layers x 2 forward, 80 backward; stage 1: 80 forward + the
    vocab-parallel cross-entropy's three fp32 vectors (B*S*4 = 16,384 bytes), 80 + the lm_head input's
    all-reduce backward. So the backward's all-reduces are the forward's (161 of 67 MB each), 2x in all.
    Full recomputation repeats the layers' 80 per stage. The pipeline: 67,108,864 bytes forward (stage 0 ->
    1) and back (1 -> 0) per micro-batch, over InfiniBand (the pair spans two nodes): size / 50 GB/s + 2.7 us."""
    plan = make_plan(tp=8, pp=2, micro_batches=8)
    step = training_step(llama70b, 1, 4096, plan=plan, system="dgx-h100", recompute="full")
    count: dict[tuple[str, str, int], int] = {}
    for c in step.collectives:
        if c.group == "tp":
            key = (c.phase, c.kind, c.payload_bytes)
            count[key] = count.get(key, 0) + c.count
    big = 1 * 4096 * 8192 * 2
    assert big == 67_108_864
    assert count == {("forward", "all_reduce", big): 161, ("backward", "all_reduce", big): 161,
                     ("recompute", "all_reduce", big): 160, ("forward", "all_reduce", 4096 * 4): 3}
    ar = 2 * 7 / 8 * big / NV_BW + 2 * 7 * NV_LAT  # a ring all-reduce in the node
    sends = [c for c in step.collectives if c.group == "pp"]
    assert {(c.stage, c.phase) for c in sends} == {(0, "forward"), (1, "backward")}
    assert all(c.time_s == pytest.approx(big / IB_BW + IB_LAT) and c.link.startswith("InfiniBand") for c in sends)
    # the stage-time: its compute plus its collectives; stage 1 (lm_head, loss) is the slower one
    st = step.stages[1]
    assert st.communication_time_s == pytest.approx((80 + 81 + 80) * ar + 3 * (2 * 7 / 8 * 16384 / NV_BW + 14 * NV_LAT)
                                                    + big / IB_BW + IB_LAT)
    assert st.micro_batch_time_s == pytest.approx((st.forward_flops + st.backward_flops + st.recompute_flops) / PEAK
                                                  + st.communication_time_s)
    assert step.critical_stage == 1
    # the pipeline: (m + pp - 1) stage-times, of which (pp - 1) the bubble, (pp - 1) / (m + pp - 1) = 1/9
    assert step.bubble_fraction == pytest.approx(1 / 9)
    assert step.bubble_time_s == pytest.approx(st.micro_batch_time_s)
    optimizer = (step.optimizer_flops + step.clip_flops) / PEAK
    assert step.step_time_s == pytest.approx(9 * st.micro_batch_time_s + optimizer)  # dp = 1: no dp collectives
    # MFU: the whole model's forward + backward over the 8 micro-batches, on 16 GPUs
    whole = training_step(llama70b, 1, 4096)
    assert step.mfu == pytest.approx(8 * whole.model_flops / (step.step_time_s * 16 * PEAK))


def test_tp_backward_flops_split_exactly(llama70b) -> None:  # type: ignore[no-untyped-def]
    """The matmuls split exactly over tp: the 8 ranks' backward matmul work adds up to the model's; the
    replicated norms and the loss's row reductions are what each rank repeats."""
    whole = training_step(llama70b, 1, 256)
    tp = training_step(llama70b, 1, 256, plan=make_plan(tp=8))
    assert tp.params * 8 > whole.params  # the replicated norms counted on every rank
    assert 8 * tp.backward_flops == pytest.approx(whole.backward_flops, rel=2e-3)
    assert 8 * tp.forward_flops == pytest.approx(whole.forward_flops, rel=2e-3)


def test_sp_divides_the_norms_sequence(llama70b) -> None:  # type: ignore[no-untyped-def]
    """Sequence parallelism runs the layers' norms (and residual adds) on S/tp tokens: each RMSNorm saves
    (4*T*h + 4*T + 2*T*h) / 8 per rank instead of all of it, 2 per layer (the final norm stays whole, as
    parallel.shard's "tokens" rule has it)."""
    t, h = 256, 8192
    norm = 4 * t * h + 4 * t + 2 * t * h
    plain = training_step(llama70b, 1, t, plan=make_plan(tp=8))
    sp = training_step(llama70b, 1, t, plan=make_plan(tp=8, sp=True))
    assert plain.memory.activations - sp.memory.activations == 160 * (norm - norm // 8)
    kinds = {(c.phase, c.kind) for c in sp.collectives if c.group == "tp"}
    assert ("forward", "reduce_scatter") in kinds and ("backward", "all_gather") in kinds


def test_largest_micro_batch(llama8b) -> None:  # type: ignore[no-untyped-def]
    """The largest micro-batch whose busiest rank fits: it fits, one more does not."""
    opts = dict(device="h100", zero=3, plan=make_plan(dp=8), recompute="full")
    best = largest_micro_batch(llama8b, 4096, **opts)
    cap = DGX.device.memory_bytes
    assert best >= 1
    assert training_step(llama8b, best, 4096, **opts).memory.total <= cap
    assert training_step(llama8b, best + 1, 4096, **opts).memory.total > cap
    fit = training_fit(llama8b, 4096, **opts)
    assert fit.micro_batch == best and fit.solved_for == "micro_batch"
    assert f"largest micro-batch = {best}" in fit.answer and "ZeRO-3" in fit.answer


def test_smallest_plan_for_training(llama70b) -> None:  # type: ignore[no-untyped-def]
    """Llama-3.1-70B, full fine-tune, full recomputation, 4096 tokens: 16 bytes x 70.6 G parameters do not fit one
    80 GiB H100; parallel.search.smallest_plan (1, 2, 4, ... devices, tp first) finds the fewest devices whose
    busiest rank holds micro-batch 1: tp=8 pp=2 (16), each stage's 4.41 G parameters x 16 bytes = 65.7 GiB."""
    fit = training_fit(llama70b, 4096, system="dgx-h100", recompute="full")
    assert fit.solved_for == "plan" and fit.smallest_plan == "tp=8 pp=2 m=2"
    assert fit.at_value is not None and fit.at_value.memory.total <= fit.capacity
    assert fit.at_next is not None and fit.at_next.memory.total > fit.capacity
    assert "smallest plan that fits: tp=8 pp=2 m=2 (16 devices)" in fit.answer


def test_plan_errors(llama8b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProfilerError, match="dp=4 and plan dp=8"):
        training_step(llama8b, 1, 128, dp=4, plan=make_plan(dp=8))
    with pytest.raises(ProfilerError, match="cp=2"):
        training_step(llama8b, 1, 128, plan=make_plan(cp=2))
    with pytest.raises(ProfilerError, match="tp=3"):
        training_step(llama8b, 1, 128, plan=make_plan(tp=3))
    with pytest.raises(ProfilerError, match="device=... or system"):
        largest_micro_batch(llama8b, 128)


def test_cli_train_plan_and_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "llama-3.1-70b", "--system", "dgx-h100", "--tp", "8", "--pp", "2", "--micro-batches", "8",
                 "--seq", "4096", "--recompute", "full", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"] == "tp=8 pp=2 m=8" and out["devices"] == 16 and len(out["stages"]) == 2
    assert main(["train", "llama-3.1-8b", "--system", "dgx-h100", "--dp", "8", "--zero", "3", "--seq", "4096"]) == 0
    text = capsys.readouterr().out
    assert "plan dp=8 (8 devices, dgx-h100)" in text and "all_gather" in text and "MFU" in text
    assert main(["train", "llama-3.1-8b", "--device", "h100", "--seq", "4096", "--fit"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("meta-llama/Llama-3.1-8B full fine-tune, adamw, recompute none at seq 4096")
    assert "smallest plan that fits" in text


def test_lora_step_keeps_the_lora_saved_set(llama8b) -> None:  # type: ignore[no-untyped-def]
    """With LoRA the step's activations are training.lora's saved set (exact per node on the tiny models),
    smaller than full fine-tuning's: no ids, no frozen linears' inputs, no norms' y, layer 0's input norm and
    q keep nothing; under full recomputation the checkpoints plus one layer's LoRA set."""
    from llm_profiler.training.lora import lora_saved_bytes

    step = training_step(llama8b, 1, 2048, lora_rank=16)
    assert step.memory.activations == lora_saved_bytes(llama8b, 1, 2048, 16, ("q_proj", "v_proj"))[0]
    assert step.memory.activations < training_step(llama8b, 1, 2048).memory.activations
    full = training_step(llama8b, 1, 2048, lora_rank=16, recompute="full")
    saved, peak = lora_saved_bytes(llama8b, 1, 2048, 16, ("q_proj", "v_proj"), recompute="full")
    assert full.memory.activations == saved + peak
    assert saved == 32 * 2048 * 4096 * 2 + (4 * 2048 * 4096 + 4 * 2048) + (4 * 2048 * 128256 + 8 * 2048 + 4)


def test_moe_experts_zero_over_their_group() -> None:
    """Mixtral-8x7B, dp = 8 with ep = 4 (DeepSpeed-MoE): each rank holds 8/4 = 2 experts per layer,
    32 x 2 x 3 x 4096 x 14336 = 11,274,289,152 parameters; their gradients are reduced, and ZeRO-1 shards their
    master weights and moments, over the expert-data-parallel group of dp / ep = 2 ranks; the rest of the rank's
    parameters over all 8."""
    model = profile_model("mixtral-8x7b")
    step = training_step(model, 1, 256, zero=1, plan=make_plan(dp=8, ep=4))
    experts = 32 * 2 * 3 * 4096 * 14336
    assert experts == 11_274_289_152
    rest = step.stages[0].params - experts
    assert step.memory.master_weights == -(-4 * rest // 8) + -(-4 * experts // 2)
    assert step.memory.optimizer_states == -(-8 * rest // 8) + -(-8 * experts // 2)
    groups = {(c.what, c.kind): (c.ranks, c.payload_bytes) for c in step.collectives if c.group == "dp"}
    assert groups == {("gradients", "reduce_scatter"): (8, 2 * rest), ("weights", "all_gather"): (8, 2 * rest),
                      ("expert gradients", "reduce_scatter"): (2, 2 * experts),
                      ("expert weights", "all_gather"): (2, 2 * experts)}


def test_llama70b_tp8_dp2_zero1_across_nodes(llama70b) -> None:  # type: ignore[no-untyped-def]
    """tp = 8 inside each DGX H100, dp = 2 across the two: a rank holds 70,552,387,584 / 8 sharded + 1,318,912
    replicated = 8,820,367,360 parameters (docs/parallel.md); ZeRO-1 shards its master weights (4 bytes) and
    AdamW moments (8) over the 2 replicas: 2 + 2 + 12/2 = 10 bytes per parameter. The dp group spans 16 ranks
    (tp innermost), so its reduce-scatter of the bf16 gradients and all-gather of the weights (2 x 8.82 G bytes
    each) run over InfiniBand at 50 GB/s per GPU: (2-1)/2 x size / bw + 1 x 2.7 us each."""
    phi = 70_552_387_584 // 8 + 1_318_912
    assert phi == 8_820_367_360
    step = training_step(llama70b, 1, 4096, plan=make_plan(tp=8, dp=2), zero=1, system="dgx-h100", recompute="full")
    assert _states(step) == 2 * phi + 2 * phi + 12 * phi // 2
    dp = [c for c in step.collectives if c.group == "dp"]
    assert {(c.kind, c.what, c.payload_bytes, c.ranks) for c in dp} == {
        ("reduce_scatter", "gradients", 2 * phi, 2), ("all_gather", "weights", 2 * phi, 2)}
    assert all(c.time_s == pytest.approx(0.5 * 2 * phi / IB_BW + IB_LAT) for c in dp)
    assert step.communication_bytes - sum(c.sent_bytes for c in dp) == sum(
        c.sent_bytes for c in step.collectives if c.group == "tp")  # m = 1: the tp ones once
    assert step.tokens_per_step == 2 * 4096
