"""The structured facts a graph node carries besides its counts: weights, matmuls, reads and cache state.

Families (through the shared blocks) state them once; traffic, memory, the cache metric and, later,
sharding read them instead of re-deriving shapes from the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formula import ZERO, Formula


class TensorClass:
    """What a weight is, for its storage dtype (``traffic.Dtypes``)."""

    MATRIX = "matrix"  # a linear layer's (out x in) matrix: the weight dtype
    EMBEDDING = "embedding"  # a lookup table (and a tied head): the embedding dtype
    VECTOR = "vector"  # norm scales and biases: the activation dtype
    EXPERTS = "experts"  # routed experts' matrices, (experts, out, in) each: the weight dtype


@dataclass(frozen=True, slots=True)
class Weight:
    """One parameter tensor a node reads.

    ``rows_read``: a lookup table reads only the gathered rows (None: the whole tensor is read).
    ``pairs``: routed experts read min(experts, pairs) of their ``shape[0]`` experts, ``pairs`` being the
    (token, expert) pairs of the forward. ``tied``: the tensor belongs to another node (params counted
    there, bytes stored there), this node only reads it.
    """

    name: str
    shape: tuple[int, ...]
    tensor_class: str
    tied: bool = False
    rows_read: Formula | None = None
    pairs: Formula | None = None

    @property
    def numel(self) -> int:
        out = 1
        for d in self.shape:
            out *= d
        return out


@dataclass(frozen=True, slots=True)
class Matmul:
    """batch x (m x k) @ (k x n); ``bias`` when the op adds a bias in the same kernel (addmm)."""

    m: Formula
    n: Formula
    k: Formula
    batch: Formula
    bias: bool = False

    @property
    def outputs(self) -> Formula:
        return self.batch * self.m * self.n


class StateKind:
    """Kinds of state a cache holds per layer."""

    KEYS_VALUES = "keys_values"  # attention K and V (per KV head)
    LATENT = "latent"  # MLA's compressed latent and shared rope key
    INDEXER_KEYS = "indexer_keys"  # a sparse-attention indexer's key cache
    CONV = "conv"  # a short convolution's rolling state (linear attention, SSM)
    RECURRENT = "recurrent"  # a linear-attention / SSM recurrent state


@dataclass(frozen=True, slots=True)
class State:
    """Elements of one kind of cache state a node reads, appends (writes) and holds after the forward."""

    kind: str
    read: Formula = ZERO
    appended: Formula = ZERO
    held: Formula = ZERO


@dataclass(frozen=True, slots=True)
class Facts:
    """The structured facts of a node (see the module docstring)."""

    weights: tuple[Weight, ...] = ()
    matmuls: tuple[Matmul, ...] = ()
    reads: Formula | None = None
    states: tuple[State, ...] = ()
    # A chain of elementwise ops (a norm, rope, an activation, a residual add) as one fused kernel runs it:
    # its distinct inputs read once and its final output written once (None: not a fusable chain).
    fused_reads: Formula | None = None
    fused_writes: Formula | None = None
    # Elements data ops copy (read once, written once; ``act`` counts computing ops only): eager attention's
    # repeat_kv expansion of K and V to every query head (``copies``, activations) and DynamicCache's
    # torch.cat re-copy of the cached tokens each forward (``cache_copies``, at the cache dtype).
    copies: Formula | None = None
    cache_copies: Formula | None = None


NO_FACTS = Facts()


__all__ = ["NO_FACTS", "Facts", "Matmul", "State", "StateKind", "TensorClass", "Weight"]
