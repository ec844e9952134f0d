"""A training step: optimizer / gradient / master-weight memory, ZeRO sharding and communication, LoRA, QLoRA,
step time and MFU, and the ``train`` command."""

from __future__ import annotations

import json

import pytest

from llm_profiler import profile_model
from llm_profiler.cli import main
from llm_profiler.errors import ProfilerError
from llm_profiler.training.step import TrainingError, training_step

P = 8_030_261_248  # Llama-3.1-8B parameters (published "8.03B"; embedding and lm_head untied)


@pytest.fixture(scope="module")
def llama8b():  # type: ignore[no-untyped-def]
    return profile_model("llama-3.1-8b")


def _static(step) -> int:  # type: ignore[no-untyped-def]
    m = step.memory
    return m.weights + m.gradients + m.master_weights + m.optimizer_states


def test_mixed_precision_adamw_is_16_bytes_per_param(llama8b) -> None:  # type: ignore[no-untyped-def]
    # bf16 weights 2 + bf16 gradients 2 + fp32 master 4 + fp32 Adam moments 8 = 16 bytes (ZeRO paper's
    # 2 + 2 + K with K = 12; accelerate estimate-memory's Adam column)
    step = training_step(llama8b, 1, 128)
    assert step.params == P
    assert _static(step) == 16 * P == 128_484_179_968


@pytest.mark.parametrize(("zero", "bytes_per_param_x8"), [
    (0, 16 * 8),  # nothing sharded
    (1, 2 * 8 + 2 * 8 + 12),  # master + moments (12 bytes) / 8
    (2, 2 * 8 + 14),  # gradients too: (2 + 12) / 8
    (3, 16),  # everything / 8
])
def test_zero_stages_per_rank_memory(llama8b, zero: int, bytes_per_param_x8: int) -> None:  # type: ignore[no-untyped-def]
    step = training_step(llama8b, 1, 128, zero=zero, dp=8)
    assert _static(step) == P * bytes_per_param_x8 // 8


def test_zero_communication(llama8b) -> None:  # type: ignore[no-untyped-def]
    # ring reduce-scatter + all-gather of bf16 gradients: 2 * (dp-1)/dp * P elements * 2 bytes per rank;
    # ZeRO-3 adds the weights' all-gather in the backward: 3 * (dp-1)/dp * P * 2
    assert training_step(llama8b, 1, 128, zero=2, dp=8).communication_bytes == 2 * 7 * P * 2 // 8
    assert training_step(llama8b, 1, 128, zero=3, dp=8).communication_bytes == 3 * 7 * P * 2 // 8 == 42_158_871_552
    assert training_step(llama8b, 1, 128, zero=3, dp=1).communication_bytes == 0


def test_optimizer_state_sizes(llama8b) -> None:  # type: ignore[no-untyped-def]
    assert training_step(llama8b, 1, 128, optimizer="sgd").memory.optimizer_states == 4 * P  # momentum, fp32
    # two int8 moments + two fp32 absmax per 2048-element block
    assert training_step(llama8b, 1, 128, optimizer="adam8bit").memory.optimizer_states == 2 * P + 8 * -(-P // 2048)
    # Adafactor: rows + cols per matrix (fp32), whole vectors: 32 layers of q, k, v, o, gate, up, down and two
    # norms, the embedding, the final norm and lm_head
    h, kv, i, v = 4096, 1024, 14336, 128256
    layer = (h + h) + (kv + h) + (kv + h) + (h + h) + 3 * (i + h) + 2 * h
    assert training_step(llama8b, 1, 128, optimizer="adafactor").memory.optimizer_states == 4 * (
        32 * layer + (v + h) + h + (v + h))


def test_optimizer_and_clip_flops(llama8b) -> None:  # type: ignore[no-untyped-def]
    step = training_step(llama8b, 1, 128)
    assert step.optimizer_flops == 14 * P  # AdamW: 5 ADD + 6 MULT + 2 DIV + 1 SQRT per parameter
    assert step.clip_flops == 3 * P  # g*g, the sum, the scaling
    assert training_step(llama8b, 1, 128, zero=1, dp=8).optimizer_flops == 14 * P // 8  # each rank its shard


def test_lora_and_qlora(llama8b) -> None:  # type: ignore[no-untyped-def]
    # r = 16 on q_proj (4096 -> 4096) and v_proj (4096 -> 1024): 32 * 16 * ((4096 + 4096) + (4096 + 1024)),
    # PEFT's print_trainable_parameters for Llama-3-8B at r=16 on q,v: 6,815,744
    step = training_step(llama8b, 1, 128, lora_rank=16)
    assert step.trainable_params == 32 * 16 * (8192 + 5120) == 6_815_744
    assert step.memory.gradients == 2 * 6_815_744 and step.memory.optimizer_states == 8 * 6_815_744
    assert step.memory.weights == 2 * (P + 6_815_744)
    # QLoRA: the linear weights at 4 + 0.127 bits, the rest (embedding, lm_head, norms: P - base) and the
    # adapters at 2 bytes
    base = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    q = training_step(llama8b, 1, 128, lora_rank=16, qlora=True)
    assert q.memory.weights == int(base * 4.127 / 8) + (P - base) * 2 + 2 * 6_815_744
    # the frozen base computes no weight gradients: 2 * (tokens * in * out) FLOPs per linear fewer
    full = training_step(llama8b, 1, 128)
    assert full.backward_flops - step.backward_flops == 2 * 128 * (P - 4096 * 128256 - 4096 * 65) - 2 * 2 * 128 * 6_815_744


def test_step_time_and_mfu(llama8b) -> None:  # type: ignore[no-untyped-def]
    step = training_step(llama8b, 1, 4096, device="h100", zero=3, dp=8, flops_efficiency=0.5)
    peak = 989.5e12  # H100 SXM dense bf16 (the device table)
    assert step.compute_time_s == pytest.approx(step.step_flops / (peak * 0.5))
    # NVLink 4: 450 GB/s per direction, 0.47 us per hop; three ring collectives (two all-gathers of the weights,
    # one reduce-scatter of the gradients) of 2P bytes: each 7/8 * 2P / bw + 7 * lat
    assert step.communication_time_s == pytest.approx(42_158_871_552 / 450e9 + 3 * 7 * 0.47e-6)
    assert step.mfu == pytest.approx(step.model_flops / (step.step_time_s * peak))
    assert step.tokens_per_day == pytest.approx(8 * 4096 / step.step_time_s * 86400)
    assert step.backward_exact and step.activations_exact
    # eager attention in bf16 keeps each layer's probabilities twice (the fp32 softmax output, 4*H*S*S, and
    # the bf16 copy the context reads, 2*H*S*S): 32 * 6 * 32 * 4096^2 bytes = 103 GB, which do not fit; selective
    # recomputation drops them (as FlashAttention / SDPA do)
    assert not step.fits and step.memory.activations > 32 * 6 * 32 * 4096**2
    assert training_step(llama8b, 1, 4096, device="h100", zero=3, dp=8, recompute="selective").fits


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"optimizer": "lion"}, "optimizer"), ({"zero": 4}, "zero"), ({"dp": 0}, "dp"),
    ({"qlora": True}, "lora_rank"), ({"lora_rank": 8, "lora_targets": ("nope",)}, "lora_targets"),
    ({"recompute": "some"}, "recompute")])
def test_bad_plans_are_profiler_errors(llama8b, kwargs: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProfilerError, match=field):
        training_step(llama8b, 1, 128, **kwargs)
    assert issubclass(TrainingError, ProfilerError)


def test_cli_train_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "llama-3.1-8b", "--device", "h100", "--batch", "1", "--seq", "4096", "--zero", "3",
                 "--dp", "8", "--recompute", "full", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["memory"]["weights"] == 2 * P // 8 and out["zero"] == 3 and out["recompute"] == "full"
    assert main(["train", "llama-3.1-8b", "--fsdp", "shard_grad_op", "--dp", "4", "--lora-rank", "16",
                 "--lora-targets", "q_proj,k_proj,v_proj,o_proj"]) == 0
    text = capsys.readouterr().out
    assert "LoRA r=16 on q_proj,k_proj,v_proj,o_proj" in text and "ZeRO-2" in text
    assert main(["train", "llama-3.1-8b", "--qlora"]) == 2
    assert "lora_rank" in capsys.readouterr().err
