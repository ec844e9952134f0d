"""``llm-profiler train``: one training step's FLOPs, memory per rank, communication, time and MFU."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_model_args, add_subcommand, emit, float_arg, int_arg, load_model
from .roofline import add_parallel_args, plan_of

ORDER = 45

EPILOG = """\
examples:
  llm-profiler train llama-3.1-8b --device h100 --batch 1 --seq 4096 --zero 3 --dp 8 --recompute full
  llm-profiler train llama-3.1-8b --device h100 --batch 1 --seq 2048 --lora-rank 16 --lora-targets q_proj,v_proj
  llm-profiler train llama-3.1-8b --device h100 --batch 1 --seq 2048 --lora-rank 16 --qlora --json
  llm-profiler train llama-3.2-1b --device a100 --batch 8 --seq 1024 --optimizer sgd --efficiency 0.5
  llm-profiler train llama-3.1-8b --system dgx-h100 --dp 8 --zero 3 --seq 4096 --recompute full
  llm-profiler train llama-3.1-70b --system dgx-h100 --tp 8 --pp 2 --micro-batches 8 --zero 1 --seq 4096 --recompute full
  llm-profiler train llama-3.1-8b --device h100 --seq 4096 --fit            # the largest micro-batch that fits
  llm-profiler train llama-3.1-70b --system dgx-h100 --seq 4096 --fit      # ... or the smallest plan that does

Backward counts are exact per node (validated against autograd) for 29 model types (llama, mistral, qwen2/3,
gemma 1-3, mixtral, the qwen and other MoEs...), saved activations for 9; other models use estimates, which
the output notes (docs/training.md).
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "train", help="training step: FLOPs, memory per rank, time, MFU",
                            description="One optimizer step: forward, backward (exact per node where validated), "
                                        "recomputation, gradient clipping and the optimizer update; memory per "
                                        "rank (weights, gradients, fp32 master weights, optimizer states, saved "
                                        "activations) under ZeRO / FSDP; communication, step time, MFU.",
                            epilog=EPILOG)
    add_model_args(parser)
    group = parser.add_argument_group("step")
    group.add_argument("-b", "--batch", type=int_arg(1, name="batch"), default=1, metavar="B",
                       help="micro-batch per rank (default 1)")
    group.add_argument("-s", "--seq", type=int_arg(1, name="seq"), default=2048, metavar="S",
                       help="tokens per sequence (default 2048)")
    group.add_argument("--grad-accum", type=int_arg(1, name="grad_accum"), default=1, metavar="N",
                       help="micro-batches per optimizer step (default 1)")
    group.add_argument("--device", default=None, metavar="D", help="device for time and MFU (e.g. h100)")
    group.add_argument("--optimizer", choices=("adamw", "sgd", "adafactor", "adam8bit"), default="adamw")
    group.add_argument("--precision", choices=("bf16-mixed", "fp32"), default="bf16-mixed")
    group.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=0, help="ZeRO stage (default 0)")
    group.add_argument("--fsdp", choices=("full_shard", "shard_grad_op"), default=None,
                       help="FSDP sharding (full_shard = ZeRO-3, shard_grad_op = ZeRO-2)")
    group.add_argument("--recompute", choices=("none", "selective", "full"), default="none")
    group.add_argument("--lora-rank", type=int_arg(1, name="lora_rank"), default=None, metavar="R")
    group.add_argument("--lora-targets", default="q_proj,v_proj", metavar="NAMES",
                       help="comma-separated linear module names (default q_proj,v_proj)")
    group.add_argument("--qlora", action="store_true", help="4-bit NF4 base weights (needs --lora-rank)")
    group.add_argument("--no-clip", action="store_true", help="no gradient clipping")
    group.add_argument("--efficiency", type=float_arg(0, 1, min_open=True, name="efficiency"), default=1.0,
                       metavar="F", help="fraction of the peak FLOP/s reached (default 1: a bound)")
    group.add_argument("--overlap", action="store_true", help="overlap the dp / ZeRO communication with compute")
    group.add_argument("--fit", action="store_true",
                       help="solve the largest micro-batch that fits a rank (at --seq); when not even 1 fits, the "
                            "smallest plan that does")
    add_parallel_args(parser)
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.set_defaults(handler=run)


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def run(args: argparse.Namespace) -> int:
    from ..training.step import training_step

    zero = {"full_shard": 3, "shard_grad_op": 2}.get(args.fsdp or "", args.zero)
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    options: dict[str, Any] = dict(
        device=args.device, optimizer=args.optimizer, precision=args.precision, zero=zero, grad_accum=args.grad_accum,
        recompute=args.recompute, lora_rank=args.lora_rank, lora_targets=targets, qlora=args.qlora,
        grad_clip=not args.no_clip, flops_efficiency=args.efficiency, overlap=args.overlap, plan=plan_of(args),
        system=args.system)
    if args.fit:
        return _fit(args, options)
    step = training_step(load_model(args), args.batch, args.seq, **options)
    if args.json:
        emit(step.model_dump_json(indent=2) + "\n")
        return 0
    m = step.memory
    mode = f"LoRA r={step.lora_rank} on {','.join(step.lora_targets)}" if step.lora_rank else "full fine-tune"
    if step.qlora:
        mode = "Q" + mode
    lines = [
        f"{step.model}: {mode}, {step.optimizer}, {step.precision}, micro-batch {step.batch} x {step.seq} tokens, "
        f"grad accum {step.grad_accum}, dp {step.dp}, ZeRO-{step.zero}, recompute {step.recompute}",
        f"  params {step.params:,}, trainable {step.trainable_params:,}; tokens per step {step.tokens_per_step:,}",
        f"  FLOPs per rank: forward {step.forward_flops:.4g}, backward {step.backward_flops:.4g}"
        f"{'' if step.backward_exact else ' (estimate)'}, recompute {step.recompute_flops:.4g}, optimizer "
        f"{step.optimizer_flops:.4g}, clip {step.clip_flops:.4g}: step {step.step_flops:.4g}",
        f"  memory per rank: weights {_gib(m.weights)} + gradients {_gib(m.gradients)} + master {_gib(m.master_weights)}"
        f" + optimizer {_gib(m.optimizer_states)} + activations {_gib(m.activations)}"
        f"{'' if step.activations_exact else ' (estimate)'} = {_gib(m.total)}",
        f"  communication per rank per step: {step.communication_bytes / 1e9:,.2f} GB",
    ]
    if m.gathered_weights:
        lines[-2] = lines[-2].replace(f" = {_gib(m.total)}", f" + gathered layer {_gib(m.gathered_weights)} = {_gib(m.total)}")
    if step.devices > 1 or step.tp > 1 or step.pp > 1:
        lines.insert(1, f"  plan {step.plan} ({step.devices} devices{', ' + step.system if step.system else ''}); "
                        f"{step.micro_batches} micro-batch{'es' if step.micro_batches > 1 else ''} per step"
                        f"{', pipeline bubble ' + format(100 * step.bubble_fraction, '.1f') + '%' if step.pp > 1 else ''}"
                        f"; per rank of the stage that needs the most memory (stage {step.busiest_stage})")
        for st in step.stages if step.pp > 1 else []:
            lines.append(f"    stage {st.stage}: {st.layers} layers, {st.params:,} params per rank, {st.in_flight} "
                         f"micro-batch{'es' if st.in_flight > 1 else ''} in flight, memory {_gib(st.memory.total)}"
                         + (f", {1e3 * st.micro_batch_time_s:.2f} ms per micro-batch" if st.micro_batch_time_s else ""))
        for c in step.collectives:
            if c.stage == step.critical_stage or c.group == "dp":
                each = f", {1e6 * c.time_s:.1f} us each over {c.link}" if c.time_s is not None else ""
                lines.append(f"    {c.count:>5} x {c.kind:<14} {c.group} {c.phase:<9} {c.what:<13} "
                             f"(stage {c.stage}, {c.ranks} ranks) of {c.payload_bytes / 1e6:,.2f} MB{each}")
    if step.device is not None:
        bubble = f" + bubble {step.bubble_time_s:.4g} s" if step.pp > 1 else ""
        lines.append(
            f"  on {step.device}: compute {step.compute_time_s:.4g} s + communication {step.communication_time_s:.4g} s"
            f"{bubble} -> step {step.step_time_s:.4g} s, MFU {100 * (step.mfu or 0):.1f}%, HFU {100 * (step.hfu or 0):.1f}%, "
            f"{step.tokens_per_second:,.0f} tokens/s ({(step.tokens_per_day or 0) / 1e9:,.2f} B tokens/day); "
            f"{'fits' if step.fits else 'does NOT fit'} in memory")
    lines += [f"  note: {n}" for n in step.notes]
    emit("\n".join(lines) + "\n")
    return 0


def _fit(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from ..training.fit import training_fit

    result = training_fit(load_model(args), args.seq, **options)
    if args.json:
        emit(result.model_dump_json(indent=2) + "\n")
        return 0
    lines = [result.answer]
    for label, step in (("at", result.at_value), ("one more" if result.at_value else "at", result.at_next)):
        if step is not None:
            mem = step.memory
            lines.append(f"  {label:<9} micro-batch {step.batch} x {step.seq}: {_gib(mem.total)} per rank "
                         f"(activations {_gib(mem.activations)}) of {_gib(result.capacity)} -> "
                         f"{'fits' if mem.total <= result.capacity else 'does not fit'}")
    lines += [f"  note: {n}" for n in result.notes]
    emit("\n".join(lines) + "\n")
    return 0
