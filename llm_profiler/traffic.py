"""Bytes moved per node: weights read, activations read and written, KV cache read and appended.

The model is eager execution, one kernel per op, as the transformers forward runs it: every op reads its
inputs from memory and writes its output (no fusion, no cache reuse). Sizes come from the node's own
formulas (``macs``, ``act``, ``params``, ``cache``) and, for attention, the spec's head counts. Three
storage dtypes: ``weight`` (matrices), ``act`` (activations, norms' and biases' parameters) and ``kv``.

Rules, per node kind (elements; bytes = elements x the dtype's bytes, exact integers):

- written: ``act`` elements of every node (every computing op's output), at the activation dtype;
  the KV-cache node writes the S new tokens' K and V instead (``kv_written``).
- matrix nodes (linear, lm_head, router and any other node with MACs and parameters, e.g. experts):
  weights: the (out x in) matrix via ``hardware.dtypes.weight_bytes`` (int4 group scales and zero points
  included), ``in`` = macs / act (the reduced dimension), plus a bias of ``out`` at the activation dtype
  when the node has one (its ADD count equals its MULT count: the bias supplies the k-th add).
  A tied lm_head reads the embedding matrix (vocab x hidden) even though its params are counted once.
  Input read: rows x in = macs / out elements.
- embedding: reads the gathered rows of the table (act elements) at the embedding's dtype; token ids
  (int64, 8 bytes each) are not counted.
- attention scores (q @ k^T, scale, mask): reads q (B*S*H*D), the cached keys K (B*KV*D*keys, at the KV
  dtype; keys = P + S, or Min(P, w-1) + S in a sliding layer) and, for the scale and mask ops after the
  matmul, one tensor of the matmul's size each (act - macs / D).
- attention context (probs @ v): reads the probabilities (B*H*S*keys = B*H*S * macs / act, as the bmm
  writes B*H*S*Dv) and the cached values V (KV dtype).
  K and V elements are KV/H of the matmul's (B*H*S*keys*D) / S: ``KV * macs / (H * S)``.
- KV cache: appends the S new tokens: ``2*B*KV*D*S`` elements at the KV dtype (transformers' DynamicCache
  actually re-copies the whole cache with torch.cat each step; an efficient server appends, which is what
  is modelled).
- norms: weight (params) at the activation dtype; reads ``act`` elements (each op of the eager chain reads
  about one tensor of its output's size).
- residual and elementwise products (two operands): read 2 x act.
- other nodes with MACs and parameters whose formulas give no single (out x in) shape (MoE experts):
  weights at the weight dtype (grouped along the flattened parameters), at most
  Min(all of them, B*S x one token's ``active_params``): each token is assumed to touch experts no other
  token touched until all are read (an upper bound; a real batch shares experts).
- everything else (activations, rope, rotary tables, masks, softmax, unknown kinds): read = act.
  Nodes without MACs (norms, ...) charge their params (if any) at the activation dtype.

Roofline FLOPs (``flops``): 2 * macs + the non-matmul arithmetic, i.e. every arithmetic category (add,
mult, div, sqrt, exp, cmp) plus, for each matmul output without a fused bias, the one accumulation the
exact count leaves out (k products need k - 1 adds; the 2 * macs convention counts k). Matmul outputs are
known for linear / lm_head nodes (act, when unbiased) and attention scores / context (macs / D); for other
kinds the exact arithmetic is used (a difference of 1 / k).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy

from . import metrics as M
from .errors import QueryError
from .graph import Node, NodeKind
from .hardware.dtypes import DType, get_dtype, tensor_bytes, weight_bytes
from .phases import LM_HEAD_ALL, LM_HEAD_LAST, check_lm_head, last_position
from .profile import ModelProfile, _metric_expr
from .scopes import HEAD_KINDS, node_filter
from .spec import ArchSpec
from .symbols import B, S

MATRIX_KINDS = frozenset({NodeKind.LINEAR, NodeKind.LM_HEAD, NodeKind.ROUTER})
TWO_OPERAND_KINDS = frozenset({NodeKind.RESIDUAL, NodeKind.ELEMENTWISE})
CATEGORIES: tuple[str, ...] = ("weights", "act_read", "act_written", "kv_read", "kv_written")


@dataclass(frozen=True)
class Dtypes:
    """Storage dtypes: weight matrices, activations (and norms / biases), KV cache; embeddings and the
    lm_head stay at the activation dtype when the weights are a grouped (GPTQ / AWQ int4) format, as those
    quantizers leave them unquantized."""

    weight: DType
    act: DType
    kv: DType

    @property
    def embed(self) -> DType:
        return self.act if self.weight.grouped else self.weight

    def as_dict(self) -> dict[str, str]:
        return {"weight": self.weight.name, "act": self.act.name, "kv": self.kv.name}


def dtypes(weight: str | DType = "bf16", act: str | DType = "bf16", kv: str | DType | None = None) -> Dtypes:
    """Validated storage dtypes (kv defaults to the activation dtype; int4 is weight-only)."""
    w, a = get_dtype(weight), get_dtype(act)
    k = a if kv is None else get_dtype(kv)
    for what, d in (("activation", a), ("KV cache", k)):
        if d.grouped or d.bits % 8:
            raise QueryError(f"{d.name} is a weight-only format; the {what} dtype must be fp32, bf16, fp16, fp8 or int8")
    return Dtypes(w, a, k)


def _per_element(d: DType) -> int:
    return d.bits // 8  # plain formats only (checked by ``dtypes``)


@dataclass(frozen=True)
class NodeTraffic:
    """Bytes (and roofline FLOPs) of one node as formulas in B, S, P."""

    weights: sympy.Expr
    act_read: sympy.Expr
    act_written: sympy.Expr
    kv_read: sympy.Expr
    kv_written: sympy.Expr
    flops: sympy.Expr
    stored: int = 0  # bytes the node's own parameters occupy (0 for a tied lm_head)

    @property
    def bytes(self) -> sympy.Expr:
        return self.weights + self.act_read + self.act_written + self.kv_read + self.kv_written

    def get(self, what: str) -> sympy.Expr:
        if what == "bytes":
            return self.bytes
        if what in (*CATEGORIES, "flops"):
            return getattr(self, what)
        raise QueryError(f"unknown traffic quantity {what!r}; valid: bytes, flops, {', '.join(CATEGORIES)}")


def _const_int(expr: sympy.Expr) -> int | None:
    expr = sympy.cancel(expr)
    return int(expr) if expr.is_Integer and expr > 0 else None


def _matrix_shape(node: Node, spec: ArchSpec) -> tuple[int, int, bool] | None:
    """(out, in, bias) of a matrix node, from its formulas; None when they do not say."""
    c = node.counts
    macs, act = _metric_expr(c, M.MACS), _metric_expr(c, M.ACT)
    if macs == 0 or act == 0:
        return None
    k = _const_int(macs / act)
    if k is None:
        return None
    bias = sympy.expand(_metric_expr(c, M.ADD) - _metric_expr(c, M.MULT)) == 0
    params = int(_metric_expr(c, M.PARAMS))
    if params == 0:
        return (spec.vocab_size, k, False) if node.kind in HEAD_KINDS else None
    per_out = k + 1 if bias else k
    if params % per_out:
        return None
    return params // per_out, k, bias


def node_traffic(node: Node, spec: ArchSpec, dt: Dtypes, lm_head: str = LM_HEAD_ALL) -> NodeTraffic:
    """Bytes moved and roofline FLOPs of one node, by the rules of the module docstring."""
    c = node.counts
    a, kv = _per_element(dt.act), _per_element(dt.kv)
    macs, act = _metric_expr(c, M.MACS), _metric_expr(c, M.ACT)
    params = int(_metric_expr(c, M.PARAMS))
    arith = sympy.Add(*(_metric_expr(c, m) for m in M.ARITHMETIC))
    zero = sympy.Integer(0)
    weights, read, kv_read, kv_written, mm_outputs = zero, act, zero, zero, zero
    written = act * a
    stored = 0
    kind = node.kind
    shape = _matrix_shape(node, spec) if macs != 0 and (params or kind in HEAD_KINDS) else None

    if kind == NodeKind.EMBEDDING:
        weights = act * _per_element(dt.embed)  # the gathered rows only
        stored = tensor_bytes(dt.embed, params)
    elif shape is not None:
        out, k, bias = shape
        store = dt.embed if kind in HEAD_KINDS else dt.weight
        weights = sympy.Integer(weight_bytes(store, out, k) + (tensor_bytes(dt.act, out) if bias else 0))
        stored = int(weights) if params else 0
        read = sympy.cancel(macs / out)
        if kind in MATRIX_KINDS and not bias:
            mm_outputs = act
    elif kind == NodeKind.ATTN_SCORES and macs != 0:
        d = spec.head_dim
        cached = sympy.cancel(spec.num_kv_heads * macs / (spec.num_heads * S))
        read = B * S * spec.num_heads * d + sympy.expand(act - sympy.cancel(macs / d))
        kv_read = cached * kv
        mm_outputs = sympy.cancel(macs / d)
    elif kind == NodeKind.ATTN_CONTEXT and macs != 0:
        # a pure bmm: act = B*H*S*Dv outputs (Dv may differ from the q/k head_dim, e.g. MLA), so the
        # probabilities are B*H*S*keys = B*H*S * macs / act
        cached = sympy.cancel(spec.num_kv_heads * macs / (spec.num_heads * S))
        read = sympy.cancel(B * S * spec.num_heads * macs / act)
        kv_read = cached * kv
        mm_outputs = act
    elif kind == NodeKind.KV_CACHE:
        kv_written = 2 * B * spec.num_kv_heads * spec.head_dim * S * kv
        read = zero
    elif kind in TWO_OPERAND_KINDS:
        read = 2 * act
    elif macs != 0 and params:
        # A matrix node whose formulas do not reveal one (out x in) shape (e.g. MoE experts: gate, up,
        # act, product and down in one node): weights at the weight dtype, grouped along the flattened
        # parameters; B*S tokens touch at most B*S x (one token's active params) of them.
        whole = tensor_bytes(dt.weight, params)
        active = int(_metric_expr(c, M.ACTIVE_PARAMS))
        per_token = tensor_bytes(dt.weight, active) if active else whole
        weights = whole if per_token >= whole else sympy.Min(whole, B * S * per_token)
        stored = whole
    if params and macs == 0 and kind != NodeKind.EMBEDDING:
        weights = sympy.Integer(tensor_bytes(dt.act, params))  # norms, biases and other small vectors
        stored = int(weights)

    out = NodeTraffic(
        weights=sympy.sympify(weights),
        act_read=sympy.expand(read * a),
        act_written=sympy.expand(written),
        kv_read=sympy.expand(kv_read),
        kv_written=sympy.expand(kv_written),
        flops=sympy.expand(arith + mm_outputs),
        stored=stored,
    )
    if lm_head == LM_HEAD_LAST and kind in HEAD_KINDS:
        out = NodeTraffic(*(last_position(getattr(out, f)) for f in (*CATEGORIES, "flops")), stored=out.stored)
    return out



class ModelTraffic:
    """Traffic formulas of every node of a model: distinct nodes (layers share formulas) with multiplicity."""

    def __init__(self, model: ModelProfile, dt: Dtypes, lm_head: str = LM_HEAD_ALL) -> None:
        self.model, self.dtypes, self.lm_head = model, dt, check_lm_head(lm_head)
        groups: dict[tuple[int, str], list[Node]] = {}
        for node in model.nodes:
            groups.setdefault((id(node.counts), node.kind), []).append(node)
        self.groups: list[tuple[list[Node], NodeTraffic]] = [
            (nodes, node_traffic(nodes[0], model.spec, dt, lm_head)) for nodes in groups.values()
        ]

    def total(self, what: str = "bytes", scope: str | None = "model") -> sympy.Expr:
        """The model's (or a scope's) total of ``what`` (bytes, flops or a byte category) in B, S, P."""
        pred = node_filter(scope or "model", self.model.nodes)
        return sympy.Add(*(sum(1 for n in nodes if pred(n)) * t.get(what) for nodes, t in self.groups))

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
