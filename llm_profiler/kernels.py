"""What each graph node runs as kernels: its kernel class, its op count under an execution profile, and its
time under a measured or datasheet device model (``hardware.roofline.DeviceModel``, issue 18).

Per node and forward::

    time = max(2 * macs / rate(class, dtype, M) + other FLOPs / vector rate, bytes / bandwidth(class, dtype))
           + ops(node, profile) x per-op cost

- kernel class: ``linear`` for weight matmuls (linear projections, lm_head, routers, experts: M = the
  rows of the recorded matmul, the tokens; bytes at the GEMV bandwidth), ``bmm`` for attention's batched
  matmuls (scores and context: M = the query rows per head; under the flash rule, which records the kept
  pairs as one row, the B*S query rows its kernel tiles), ``elementwise`` for everything else.
- ops: the aten ops the node dispatches. Under ``hf-eager`` and ``hf-sdpa`` the table ``EAGER_OPS`` below,
  counted op by op on transformers' Llama-layout forward (a ``TorchDispatchMode`` over a decode step of
  Llama-3.2-1B, transformers 5.23: views, copies and creations included, as ``cpu_bench.dispatched_ops``
  counts them when it measures the per-op cost; tests/test_device_model.py checks the table against the
  measured dispatch of llama and qwen2, module by module, fp32 and bf16); other layouts take the same
  per-kind counts (an approximation for their own extra ops). Under ``vllm`` one fused kernel per node,
  replayed from a captured graph (``captured_op_s``: 0 on a GPU under CUDA graphs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import metrics as M
from .engines import ExecutionProfile, get_engine
from .formula import B, Formula, S, compile_formulas
from .graph import Node, NodeKind
from .graph.node import HEAD_GROUP
from .hardware.roofline import DeviceModel
from .phases import LM_HEAD_LAST
from .profile import metric_formula

LINEAR, BMM, ELEMENTWISE = "linear", "bmm", "elementwise"
_LINEAR_KINDS = {NodeKind.LINEAR, NodeKind.LM_HEAD, NodeKind.ROUTER, NodeKind.EXPERTS}
_BMM_KINDS = {NodeKind.ATTN_SCORES, NodeKind.ATTN_CONTEXT}

# Aten ops per node in transformers' eager Llama-layout forward (every op the dispatcher sees: compute,
# views, copies, creations), with where they come from:
EAGER_OPS: dict[str, int] = {
    NodeKind.EMBEDDING: 1,  # embedding
    NodeKind.POSITIONS: 26,  # create_causal_mask and position ids: 5 arange, 1 zeros, 1 scalar_tensor,
    #                          13 unsqueeze, 1 expand, add x3, le, where
    NodeKind.ROTARY: 8,  # inv_freq @ positions (expand, _to_copy, mul), cat, cos, sin, x attention_scaling x2
    NodeKind.NORM: 6,  # RMSNorm: pow, mean, add eps, rsqrt, mul, mul weight
    NodeKind.LINEAR: 4,  # F.linear on (B, S, in): view, t, mm / addmm, _unsafe_view
    NodeKind.LM_HEAD: 6,  # F.linear (4) + the causal LM's logits_to_keep slice (alias) and zeros
    NodeKind.ROPE: 16,  # q and k: x * cos, rotate_half (2 slices, neg, cat), * sin, add; cos / sin unsqueeze
    NodeKind.KV_CACHE: 2,  # DynamicCache.update: torch.cat of K and of V
    NodeKind.ATTN_SCORES: 18,  # q / k / v view + transpose, repeat_kv of K (unsqueeze, expand, clone, view),
    #                            k transpose, matmul's expand / view / bmm / _unsafe_view, x scaling, + mask slice
    NodeKind.ATTN_SOFTMAX: 1,  # _softmax
    NodeKind.ATTN_CONTEXT: 13,  # repeat_kv of V, matmul's expand / view / bmm / _unsafe_view, transpose,
    #                             contiguous (clone), reshape
    NodeKind.ACTIVATION: 1,  # silu
    NodeKind.ELEMENTWISE: 1,  # act(gate) * up
    NodeKind.RESIDUAL: 2,  # the layer's two residual adds
}
# Extra casts below fp32: RMSNorm computes in fp32 (x.to(fp32), .to(input dtype)); eager softmax runs in
# fp32 (dtype=fp32, .to(q dtype)); the rotary tables are computed in fp32 and cast (cos, sin and the
# positions' float copy).
EAGER_CASTS_BELOW_FP32: dict[str, int] = {NodeKind.NORM: 2, NodeKind.ATTN_SOFTMAX: 2, NodeKind.ROTARY: 3}
SOFTMAX_CAST_BYTES = 16  # per score, below fp32 under hf-eager: (a + 4) + (4 + 4) + (4 + a) - 2a


def kernel_class(node: Node) -> str:
    """``linear``, ``bmm`` or ``elementwise``: the rates a node's time is taken at."""
    if node.kind in _LINEAR_KINDS:
        return LINEAR
    if node.kind in _BMM_KINDS:
        return BMM
    return ELEMENTWISE


def eager_ops(node: Node, act_dtype: str = "fp32") -> int:
    """Aten ops the node dispatches in transformers' eager forward at activation dtype ``act_dtype``
    (``EAGER_OPS``; a kind the table does not name: 4 per recorded matmul (as F.linear), else 1)."""
    if node.kind in EAGER_OPS:
        ops = EAGER_OPS[node.kind]
    else:
        ops = 4 * len(node.facts.matmuls) or 1
    if act_dtype != "fp32":
        ops += EAGER_CASTS_BELOW_FP32.get(node.kind, 0)
    return ops


def node_ops(node: Node, engine: str | ExecutionProfile | None, act_dtype: str = "fp32") -> int:
    """Ops a node dispatches under ``engine``: the eager table for the transformers profiles, one fused
    kernel under ``vllm``."""
    eng = get_engine(engine)
    if eng.name in ("hf-eager", "hf-sdpa"):
        return eager_ops(node, act_dtype)
    return 1


def captures_graphs(engine: str | ExecutionProfile | None) -> bool:
    """Whether the engine replays captured graphs (vLLM's CUDA graphs for decode): ops cost ``captured_op_s``."""
    return get_engine(engine).name == "vllm"


_MATMUL_KINDS = _LINEAR_KINDS | _BMM_KINDS


@dataclass(frozen=True)
class EagerOutputs:
    """Elements of the tensors one node's eager ops allocate, for the fresh-page cost (``fresh_output_bytes``):
    ``largest``, its largest computing output (a matmul's product, the scores, an elementwise chain's result);
    ``computing``, every computing op's output (the ``act`` count); ``fp32``, the fp32 intermediates below an
    fp32 activation dtype (eager softmax's input cast and result, ``dtype=torch.float32``); ``copy``, one
    ``repeat_kv`` expansion (``Facts.copies``); ``cache_cat``, one of DynamicCache's two ``torch.cat``
    re-copies (K or V: half of ``Facts.cache_copies``)."""

    largest: Formula
    computing: Formula
    fp32: Formula
    copy: Formula
    cache_cat: Formula


def eager_outputs(node: Node, act_dtype: str = "fp32") -> EagerOutputs:
    """What ``node`` allocates per forward in transformers' eager code (``EagerOutputs``)."""
    facts = node.facts
    computing = metric_formula(node.counts, M.ACT)
    if node.kind in _MATMUL_KINDS and facts.matmuls:
        largest = facts.matmuls[0].outputs
    elif node.kind == NodeKind.ATTN_SOFTMAX:
        largest = metric_formula(node.counts, M.EXP)  # one exp per score: the scores' size
    else:
        largest = Formula.of(facts.fused_writes if facts.fused_writes is not None else computing)
    fp32 = 2 * largest if node.kind == NodeKind.ATTN_SOFTMAX and act_dtype != "fp32" else Formula.of(0)
    return EagerOutputs(largest=largest, computing=computing, fp32=fp32, copy=Formula.of(facts.copies or 0),
                        cache_cat=Formula.of(facts.cache_copies or 0) / 2)


def fresh_output_bytes(outputs: list[tuple[Any, ...]], act_bytes: float, kv_bytes: float,
                       threshold: int) -> list[Any]:
    """Per group, the bytes its eager ops write into freshly mapped pages in a process that has run the
    forward before (steady state): glibc's dynamic mmap threshold has risen to the largest block freed, capped
    at ``threshold`` (``roofline.GLIBC_MMAP_THRESHOLD_MAX``, 32 MiB on 64-bit), so an output of at least the
    cap is mapped afresh on every call and a smaller one comes back from the heap. ``outputs``: per group, the
    values of (largest, computing, fp32, copy, cache_cat) elements (numbers or numpy arrays over decode
    steps); a group's computing outputs count when its largest does (the others of an S x S chain are its
    size)."""
    cut = float(threshold)
    out = []
    for largest, computing, fp32, copy, cat in outputs:
        lg, cp, ct = (np.asarray(x, dtype=np.float64) for x in (largest, copy, cat))
        fresh = np.where(lg * act_bytes >= cut, np.asarray(computing, dtype=np.float64) * act_bytes
                         + np.asarray(fp32, dtype=np.float64) * 4.0, 0.0)
        out.append(fresh + np.where(cp * act_bytes >= cut, cp * act_bytes, 0.0)
                   + np.where(ct * kv_bytes >= cut, 2.0 * ct * kv_bytes, 0.0))
    return out


def copy_bytes(outputs: list[tuple[Any, ...]], act_bytes: float, kv_bytes: float) -> list[Any]:
    """Per group, the bytes its eager data copies write: repeat_kv's expansion (``copy`` elements at the
    activation dtype) and DynamicCache's two ``torch.cat`` re-copies (``cache_cat`` elements each, at the KV
    dtype). The traffic counts each copy read and written: the write is the copy op's, the read the op's
    after it (the matmul that reads the expanded K or V) or the cat's own read of the held tokens, which stay
    with the node's bytes. ``outputs`` as ``fresh_output_bytes`` takes them."""
    return [np.asarray(copy, dtype=np.float64) * act_bytes + 2.0 * np.asarray(cat, dtype=np.float64) * kv_bytes
            for _largest, _computing, _fp32, copy, cat in outputs]


@dataclass
class KernelFacts:
    """Per group of identical nodes: kernel class, op count, and the formulas of its matmul FLOPs and M, the
    extra bytes of the profile, and its eager outputs (``EagerOutputs``' five fields)."""

    kernel: list[str]
    ops: list[int]
    fn: Any  # compiled [2 * macs, M, extra bytes, *EagerOutputs] per group
    WIDTH = 8

    def rows(self, batch: Any, seq: Any, past: Any) -> list[tuple[Any, ...]]:
        """Per group, evaluated once: (2 * macs, M, extra bytes, then the ``EagerOutputs`` fields)."""
        flat = self.fn(batch, seq, past)
        w = self.WIDTH
        return [tuple(flat[w * g:w * g + w]) for g in range(len(self.kernel))]

    def values(self, batch: Any, seq: Any, past: Any) -> list[tuple[Any, ...]]:
        """Per group: (2 * macs, M, extra bytes)."""
        return [row[:3] for row in self.rows(batch, seq, past)]


def extra_bytes(node: Node, engine: str | ExecutionProfile | None, act_dtype: str) -> Formula:
    """Bytes the node moves beyond its traffic under ``engine``: eager softmax's fp32 casts below fp32."""
    if (node.kind == NodeKind.ATTN_SOFTMAX and act_dtype != "fp32" and get_engine(engine).attention == "eager"):
        return metric_formula(node.counts, M.ACT) * SOFTMAX_CAST_BYTES
    return Formula.of(0)


def kernel_facts(groups: list[tuple[list[Node], Any]], engine: str | ExecutionProfile | None, act_dtype: str,
                 lm_head: str) -> KernelFacts:
    """The kernel facts of ``ModelTraffic.groups`` (the same grouping the roofline evaluates)."""
    formulas: list[Formula] = []
    kernels, ops = [], []
    flash = get_engine(engine).attention == "flash"
    for nodes, _ in groups:
        node = nodes[0]
        macs = metric_formula(node.counts, M.MACS)
        m = node.facts.matmuls[0].m if node.facts.matmuls else Formula.of(1)
        if flash and node.kind in _BMM_KINDS:
            m = B * S  # the flash rule records the kept pairs as one row; its kernel tiles the B*S query rows
        out = eager_outputs(node, act_dtype)
        eager = [out.largest, out.computing, out.fp32, out.copy, out.cache_cat]
        if lm_head == LM_HEAD_LAST and node.group == HEAD_GROUP:
            macs, m = macs.substitute({"S": 1}), m.substitute({"S": 1})
            eager = [f.substitute({"S": 1}) for f in eager]
        formulas += [macs * 2, m, extra_bytes(node, engine, act_dtype), *eager]
        kernels.append(kernel_class(node))
        ops.append(node_ops(node, engine, act_dtype))
    return KernelFacts(kernels, ops, compile_formulas(formulas))


def group_times(model: DeviceModel, kernel: str, dtype: str, flops: Any, matmul_flops: Any, nbytes: Any, m: Any,
                ops: int, captured: bool, weight_bytes: Any = None, fresh_bytes: Any = 0.0,
                copied_bytes: Any = 0.0) -> tuple[Any, Any]:
    """(time, compute-bound?) of one node, vectorised over numpy arrays (decode steps) or scalars: as
    ``roofline.kernel_time``, with the non-matmul FLOPs = flops - matmul FLOPs, the GEMV bandwidth at the
    node's ``weight_bytes``, plus its ``fresh_bytes`` at the model's fresh-page cost (page faults are the
    kernel's work, serial with the op's: added, not overlapped). ``copied_bytes`` (part of ``nbytes``: what
    the node's eager data copies write, ``copy_bytes``) are ops of their own before the node's kernel, at the
    copy bandwidth; the rest of ``nbytes`` at the kernel class's."""
    mm = np.asarray(matmul_flops, dtype=np.float64)
    other = np.maximum(np.asarray(flops, dtype=np.float64) - mm, 0.0)
    if kernel == ELEMENTWISE:
        rate = np.float64(model.vector_rate(dtype))
        compute = (mm + other) / rate
    else:
        curve = model.bmm.get(dtype) if kernel == BMM else None
        curve = curve or model.gemm[dtype]  # no bmm curve for the dtype: the GEMM curve
        rate = curve.at_array(np.maximum(np.asarray(m, dtype=np.float64), 1.0))
        compute = mm / rate + other / model.vector_rate(dtype)
    copied = np.asarray(copied_bytes, dtype=np.float64)
    memory = np.maximum(np.asarray(nbytes, dtype=np.float64) - copied, 0.0) / model.bandwidth(kernel, dtype, weight_bytes)
    time = (np.maximum(compute, memory) + copied / model.copy_rate(dtype) + ops * model.op_cost(captured)
            + np.asarray(fresh_bytes, dtype=np.float64) * model.fresh_output_s_per_byte)
    return time, (compute >= memory) & (compute > 0)


__all__ = ["BMM", "EAGER_OPS", "EagerOutputs", "eager_outputs", "copy_bytes", "fresh_output_bytes", "SOFTMAX_CAST_BYTES", "extra_bytes", "ELEMENTWISE", "LINEAR", "KernelFacts", "captures_graphs", "eager_ops", "group_times",
           "kernel_class", "kernel_facts", "node_ops"]
