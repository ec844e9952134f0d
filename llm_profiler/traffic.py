"""Bytes moved per node: weights read, activations read and written, cache state read and appended.

The model is eager execution, one kernel per op, as the transformers forward runs it: every op reads its
inputs from memory and writes its output (no fusion, no cache reuse). Every quantity comes from the node's
own facts (``graph.node``: weights, matmuls, reads, states) and counts; nothing is re-derived from the spec.
Three storage dtypes: ``weight`` (matrices and routed experts), ``act`` (activations, norm scales, biases)
and ``kv`` (every cache state); embeddings and the lm_head at ``Dtypes.embed``. A quantized checkpoint
(``Dtypes.quant``, from the config's ``quantization_config``: ``llm_profiler.quantization``) overrides the
storage of the weights it quantizes (e.g. gpt-oss: only the routed experts, at MXFP4), each with its
scale bytes; every other weight keeps the rules here.

Rules (elements; bytes = elements x the dtype's bytes, exact integers):

- weights: each ``Weight`` the node reads, by tensor class: a matrix via ``hardware.dtypes.weight_bytes``
  (int4 group scales and zero points included); a lookup table only its ``rows_read`` rows; routed experts
  min(experts, pairs) of their experts (each token assumed to touch experts no other token touched until
  all are read: an upper bound); vectors at the activation dtype. A tied weight is read, not stored.
- act_read: the node's ``reads`` (the op table records each matmul's first operand; elementwise ops read
  one tensor of their output's size, two-operand nodes two); act_written: ``act``.
- kv_read / kv_written: the ``read`` / ``appended`` elements of the node's cache states (K and V, MLA
  latents, ...) at the KV dtype, plus the ``cache_copies`` the engine makes: transformers' DynamicCache
  re-copies the tokens held before the forward with torch.cat (read and written again: hf-eager, hf-sdpa);
  a paged serving engine appends (vllm: no copy).
- copies: elements data ops copy (``Facts.copies``, read and written at the activation dtype): eager
  attention's repeat_kv expansion of grouped K and V to every query head (hf-eager always, hf-sdpa when it
  passes a mask, vllm never).

Roofline FLOPs (``flops``): 2 * macs + the non-matmul arithmetic, i.e. every arithmetic category (add,
mult, div, sqrt, exp, cmp) plus, for each matmul output without a fused bias, the one accumulation the
exact count leaves out (k products need k - 1 adds; the 2 * macs convention counts k): the outputs of the
node's recorded matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from . import metrics as M
from .errors import QueryError
from .facts import TensorClass, Weight
from .formula import ZERO, Formula, fmin, total
from .graph import Node
from .graph.node import HEAD_GROUP
from .hardware.dtypes import DType, get_dtype, tensor_bytes, weight_bytes
from .phases import LM_HEAD_ALL, LM_HEAD_LAST, check_lm_head
from .profile import ModelProfile, metric_formula
from .quantization import Quantization
from .scopes import node_filter

CATEGORIES: tuple[str, ...] = ("weights", "act_read", "act_written", "kv_read", "kv_written")


@dataclass(frozen=True)
class Dtypes:
    """Storage dtypes: weight matrices, activations (and norms / biases), KV cache; embeddings and the
    lm_head stay at the activation dtype when the weights are a grouped (GPTQ / AWQ int4) format, as those
    quantizers leave them unquantized."""

    weight: DType
    act: DType
    kv: DType
    quant: Quantization | None = None  # a quantized checkpoint's per-tensor storage (None: ``weight``)

    @property
    def embed(self) -> DType:
        return self.act if self.weight.grouped else self.weight

    def storage(self, path: str, kind: str, w: Weight) -> DType | None:
        """The quantized storage of weight ``w`` of the node at ``path`` (None: the rules of this module)."""
        return None if self.quant is None else self.quant.format_for(path, kind, w)

    def as_dict(self) -> dict[str, str]:
        out = {"weight": self.weight.name, "act": self.act.name, "kv": self.kv.name}
        if self.quant is not None:
            out["quantization"] = self.quant.describe()
        return out


def weights_label(d: dict[str, str]) -> str:
    """How a header names the weight storage of ``Dtypes.as_dict()``: the quantized format first when the
    config's ``quantization_config`` applies (the rest stays at the weight dtype)."""
    if "quantization" not in d:
        return d["weight"]
    return f"{d['quantization'].split(':')[0]} per quantization_config, others {d['weight']}"


def dtypes(weight: str | DType = "bf16", act: str | DType = "bf16", kv: str | DType | None = None,
           quant: Quantization | None = None) -> Dtypes:
    """Validated storage dtypes (kv defaults to the activation dtype; int4 is weight-only); ``quant``: a
    quantized checkpoint's storage, over ``weight`` for the tensors it quantizes."""
    w, a = get_dtype(weight), get_dtype(act)
    k = a if kv is None else get_dtype(kv)
    for what, d in (("activation", a), ("KV cache", k)):
        if d.weight_only:
            raise QueryError(f"{d.name} is a weight-only format; the {what} dtype must be fp32, bf16, fp16, fp8 or int8")
    return Dtypes(w, a, k, quant)


def _per_element(d: DType) -> int:
    return d.bits // 8  # plain formats only (checked by ``dtypes``)


@dataclass(frozen=True)
class NodeTraffic:
    """Bytes (and roofline FLOPs) of one node as formulas in B, S, P."""

    weights: Formula
    act_read: Formula
    act_written: Formula
    kv_read: Formula
    kv_written: Formula
    flops: Formula
    stored: int = 0  # bytes the node's own parameters occupy (0 for a tied lm_head)

    @property
    def bytes(self) -> Formula:
        return self.weights + self.act_read + self.act_written + self.kv_read + self.kv_written

    def get(self, what: str) -> Formula:
        if what == "bytes":
            return self.bytes
        if what in (*CATEGORIES, "flops"):
            value: Formula = getattr(self, what)
            return value
        raise QueryError(f"unknown traffic quantity {what!r}; valid: bytes, flops, {', '.join(CATEGORIES)}")

    def last_position(self) -> NodeTraffic:
        """The same node on the last position only (rows B*S become B: S -> 1)."""
        def last(f: Formula) -> Formula:
            return f.substitute({"S": 1})

        return NodeTraffic(weights=last(self.weights), act_read=last(self.act_read),
                           act_written=last(self.act_written), kv_read=last(self.kv_read),
                           kv_written=last(self.kv_written), flops=last(self.flops), stored=self.stored)


def _weight_traffic(w: Weight, dt: Dtypes, quantized: DType | None = None) -> tuple[Formula, int]:
    """(bytes read this forward, bytes stored) of one weight tensor; ``quantized``: its storage in a
    quantized checkpoint (``Dtypes.storage``), None for the default rules."""
    if w.tensor_class == TensorClass.VECTOR:
        whole = tensor_bytes(quantized or dt.act, w.numel)
        return Formula.const(whole), whole
    if w.tensor_class == TensorClass.EXPERTS:
        experts, one = w.shape[0], w.numel // w.shape[0]
        per_expert = tensor_bytes(quantized or dt.weight, one)
        pairs = w.pairs if w.pairs is not None else Formula.const(experts)
        return per_expert * fmin(pairs, experts), per_expert * experts
    store = quantized or (dt.embed if w.tensor_class == TensorClass.EMBEDDING else dt.weight)
    rows, cols = w.shape if len(w.shape) == 2 else (w.numel, 1)
    whole = weight_bytes(store, rows, cols)
    if w.rows_read is not None:  # a lookup: only the gathered rows
        return w.rows_read * tensor_bytes(store, cols), whole
    return Formula.const(whole), whole


def node_traffic(node: Node, dt: Dtypes, lm_head: str = LM_HEAD_ALL) -> NodeTraffic:
    """Bytes moved and roofline FLOPs of one node, by the rules of the module docstring."""
    c, facts = node.counts, node.facts
    a, kv = _per_element(dt.act), _per_element(dt.kv)
    weights, stored = ZERO, 0
    for w in facts.weights:
        read, whole = _weight_traffic(w, dt, dt.storage(node.path, node.kind, w))
        weights = weights + read
        stored += 0 if w.tied else whole
    reads = facts.reads if facts.reads is not None else Formula.of(c.get(M.ACT, 0))
    arith = total(metric_formula(c, m) for m in M.ARITHMETIC)
    unbiased_outputs = total(mm.outputs for mm in facts.matmuls if not mm.bias)
    copies, cache_copies = Formula.of(facts.copies or 0), Formula.of(facts.cache_copies or 0)
    out = NodeTraffic(
        weights=weights,
        act_read=(reads + copies) * a,
        act_written=(metric_formula(c, M.ACT) + copies) * a,
        kv_read=(total(st.read for st in facts.states) + cache_copies) * kv,
        kv_written=(total(st.appended for st in facts.states) + cache_copies) * kv,
        flops=arith + unbiased_outputs,
        stored=stored,
    )
    if lm_head == LM_HEAD_LAST and node.group == HEAD_GROUP:
        out = out.last_position()
    return out


class ModelTraffic:
    """Traffic formulas of every node of a model: distinct nodes (layers share formulas) with multiplicity."""

    def __init__(self, model: ModelProfile, dt: Dtypes, lm_head: str = LM_HEAD_ALL) -> None:
        self.model, self.dtypes, self.lm_head = model, dt, check_lm_head(lm_head)
        groups: dict[tuple[int, int], list[Node]] = {}
        for node in model.nodes:  # layers share counts and facts: one traffic formula per distinct pair
            groups.setdefault((id(node.counts), id(node.facts)), []).append(node)
        self.groups: list[tuple[list[Node], NodeTraffic]] = [
            (nodes, node_traffic(nodes[0], dt, lm_head)) for nodes in groups.values()
        ]

    def total(self, what: str = "bytes", scope: str | None = "model") -> Formula:
        """The model's (or a scope's) total of ``what`` (bytes, flops or a byte category) in B, S, P."""
        pred = node_filter(scope or "model", self.model.nodes)
        return total(sum(1 for n in nodes if pred(n)) * t.get(what) for nodes, t in self.groups)

    def weight_storage(self) -> int:
        """Bytes the weights occupy (each parameter once: a tied lm_head adds nothing)."""
        return sum(len(nodes) * t.stored for nodes, t in self.groups)


@lru_cache(maxsize=32)
def _cached(model: ModelProfile, dt: Dtypes, lm_head: str) -> ModelTraffic:
    return ModelTraffic(model, dt, lm_head)


def model_traffic(model: ModelProfile, dt: Dtypes, lm_head: str = LM_HEAD_ALL) -> ModelTraffic:
    """The traffic formulas of a model for some dtypes (built once per combination)."""
    return _cached(model, dt, check_lm_head(lm_head))


def intensity(flops: int, bytes_moved: int) -> float:
    """Arithmetic intensity in FLOP per byte (inf when nothing moves, 0 when nothing happens)."""
    if bytes_moved:
        return flops / bytes_moved
    return float("inf") if flops else 0.0


__all__ = ["CATEGORIES", "Dtypes", "ModelTraffic", "NodeTraffic", "dtypes", "intensity", "model_traffic",
           "node_traffic"]
