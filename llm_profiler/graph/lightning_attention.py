"""Lightning attention (MiniMax-Text-01 / MiniMax-M1): linear attention with a per-head exponential decay.

Every formula follows ``MiniMaxLightningAttention.forward`` of transformers 5.23 op by op, for H heads of
head_dim D (q, k and v all H x D; no KV heads), decay rates ``slope_rate`` (a buffer of H values) and the
``block_size`` C of the config:

- ``qkv_proj`` (hidden -> 3 H D, no bias), its activation (``hidden_act`` through the ``act_fn`` module) on
  all 3 H D outputs; q, k, v split per head.
- which branch runs depends on the cache, not on S: without a cached state (P = 0) the **block** form
  over N = ceil(S / C) blocks (N - 1 of C tokens, the last of S - (N - 1) C), per block of c tokens and
  (batch, head): the block decay exp(-slope * c) (neg, mul, exp over the H rates); intra-block
  (q @ k^T) * diagonal decay @ v (two bmm of (c x D) @ (D x c) and (c x c) @ (c x D), c*c MULT); inter-block
  (q * query decay) @ state ((c x D) @ (D x D), c*D MULT), + intra (c*D ADD); the next state
  state * block decay + (k * key decay)^T @ v ((D x c) @ (c x D); c*D + D*D MULT, D*D ADD). With a cached
  state (P > 0, whatever S) the **recurrent** form, token by token: ratio = exp(-slope) once (H neg, H
  exp); per token and (batch, head) k^T @ v ((D x 1) @ (1 x D)), state = ratio * state + that (D*D MULT
  and ADD), q @ state ((1 x D) @ (D x D)).
- ``norm``: RMSNorm over all H*D outputs of a token (not per head); the output gate
  sigmoid(``output_gate``(x)) * out (B*S*H*D sigmoid and MULT), then ``out_proj``.
- the cache holds the state, B x H x D x D, rewritten whole by every forward (transformers keeps it in
  ``MiniMaxCache.linear_cache``, outside the cache layers): constant in P.

p = min(P, 1) selects the branch, so every count is one exact formula in B, S, P (the blocks through
``ceil_div(S, C)``) and a generation (all its decode steps recurrent) stays a closed form.

What a kernel engine computes differently (MiniMax's own / vLLM's lightning kernels): the same block
algorithm fused per block in on-chip memory (none of the c x c decayed scores nor the per-block products is
written to memory) and the decode step as one fused update; the arithmetic is the same up to the kernel's
block size, the activations and memory traffic far smaller.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .. import ops
from ..facts import State, StateKind
from ..formula import B, Formula, S, ceil_div
from ..ops import Counts
from ..spec import LayerSpec, Mixer
from .blocks import TOKENS, Part, activation, fusable, linear, rms_norm, state_cache
from .linear_attention import LINEAR_ATTENTION, has_state
from .moe import MoESpec
from .node import ATTN, NodeKind

LIGHTNING = "lightning_attention"  # node kind: the block / recurrent linear attention with decay
OUTPUT_GATE = "output_gate"  # part name: sigmoid(output_gate(x)) * out, in the module's own forward


class Lightning(BaseModel):
    """A lightning attention layer's dims: ``heads`` x ``head_dim`` for q, k and v, the block size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    block_size: int = Field(gt=0)

    @property
    def width(self) -> int:
        return self.heads * self.head_dim


class LightningMoESpec(MoESpec):
    """Lightning (``layer_types`` ``linear_attention``) and softmax attention layers, MoE on every layer.
    ``mask_window``: a ``sliding_window`` that changes only the mask (the cache keeps every token)."""

    lightning: Lightning
    mask_window: int | None = Field(default=None, gt=1)

    def default_layer(self, index: int) -> LayerSpec:
        layer = super().default_layer(index)
        if self.layer_type(index) == LINEAR_ATTENTION:
            mixer = Mixer(kind="linear_attention", chunk=self.lightning.block_size, rope=False)
            return layer.model_copy(update={"mixer": mixer})
        return layer


def _blocks(d: Lightning, c: Formula | int, count: Formula) -> Counts:
    """``count`` blocks of ``c`` tokens for every (batch, head): the block form's ops (module docstring)."""
    H, D = d.heads, d.head_dim
    bh = B * H * count
    out = ops.elementwise("neg", count * H) + ops.elementwise("mul", count * H) + ops.elementwise("exp", count * H)
    out = out + ops.matmul(c, c, D, batch=bh) + ops.elementwise("mul", bh * c * c) + ops.matmul(c, D, c, batch=bh)
    out = out + ops.elementwise("mul", bh * c * D) + ops.matmul(c, D, D, batch=bh) + ops.elementwise("add", bh * c * D)
    out = out + ops.elementwise("mul", bh * c * D) + ops.matmul(D, D, c, batch=bh)
    return out + ops.elementwise("mul", bh * D * D) + ops.elementwise("add", bh * D * D)


def block_form(d: Lightning) -> Counts:
    """The block form over N = ceil(S / C) blocks: N - 1 full blocks and one of S - (N - 1) C tokens, when
    no state is cached (P = 0; zero otherwise)."""
    prefill = 1 - has_state()
    full = ceil_div(S, d.block_size) - 1
    return _blocks(d, d.block_size, prefill * full) + _blocks(d, S - full * d.block_size, prefill)


def recurrent_form(d: Lightning) -> Counts:
    """The recurrent form over the S tokens, when a state is cached (P > 0; zero otherwise)."""
    H, D, p = d.heads, d.head_dim, has_state()
    t = p * B * H * S  # (batch, head, token) triples
    out = ops.elementwise("neg", p * H) + ops.elementwise("exp", p * H)
    out = out + ops.matmul(D, D, 1, batch=t) + ops.elementwise("mul", t * D * D) + ops.elementwise("add", t * D * D)
    return out + ops.matmul(1, D, D, batch=t)


def lightning(d: Lightning) -> Counts:
    """Both forms (one of them zero); reads q, k, v and, after a prefill, the cached state."""
    held = B * d.heads * d.head_dim * d.head_dim
    out = block_form(d) + recurrent_form(d)
    return out.with_facts(states=(State(StateKind.RECURRENT, read=has_state() * held),), reads=3 * TOKENS * d.width)


def recurrent_state(d: Lightning) -> Counts:
    """The state B x H x D x D, written whole by every forward."""
    held = B * d.heads * d.head_dim * d.head_dim
    return state_cache(StateKind.RECURRENT, held, appended=held)


def output_gate(d: Lightning) -> Counts:
    """sigmoid(output_gate(x)) * out over B*S*H*D."""
    n = TOKENS * d.width
    return fusable(ops.elementwise("sigmoid", n) + ops.elementwise("mul", n), 2 * n, n)


def lightning_parts(d: Lightning, hidden: int, act: str, a: str = ".self_attn") -> list[Part]:
    """The parts of a lightning attention module ``a`` in its forward's order; the block / recurrent
    computation (``:lightning``) and the output gate run in the module's own forward."""
    t, w = TOKENS, d.width
    return [
        Part(f"{a}.qkv_proj", f"{a}.qkv_proj", NodeKind.LINEAR, linear(t, hidden, 3 * w, False), ATTN),
        Part(f"{a}.act_fn", f"{a}.act_fn", NodeKind.ACTIVATION, activation(act, t * 3 * w), ATTN),
        Part(f"{a}:lightning", a, LIGHTNING, lightning(d), ATTN),
        Part(f"{a}:recurrent_state", a, NodeKind.KV_CACHE, recurrent_state(d), ATTN),
        Part(f"{a}.norm", f"{a}.norm", NodeKind.NORM, rms_norm(t, w), ATTN),
        Part(f"{a}.output_gate", f"{a}.output_gate", NodeKind.LINEAR, linear(t, hidden, w, False), ATTN),
        Part(f"{a}:{OUTPUT_GATE}", a, NodeKind.ELEMENTWISE, output_gate(d), ATTN),
        Part(f"{a}.out_proj", f"{a}.out_proj", NodeKind.LINEAR, linear(t, w, hidden, False), ATTN),
    ]


__all__ = ["LIGHTNING", "Lightning", "LightningMoESpec", "block_form", "lightning", "lightning_parts",
           "output_gate", "recurrent_form", "recurrent_state"]
