"""Inference phases as formulas: prefill, one decode step, and a whole generation in closed form.

Every count of the graph is a formula in B (batch), S (new tokens) and P (cached tokens). A phase fixes
how those relate to a request:

- prefill: S prompt tokens after an optional cached prefix of P tokens: the graph at (B, S, P) as is.
- decode step: one forward of S new tokens (S = 1; S > 1 is a speculative verify of S drafted tokens)
  at context P: again the graph at (B, S, P).
- generation of N new tokens after a prompt of S tokens (and an optional cached prefix P): what
  ``transformers.generate`` runs: one prefill forward (which yields the first new token), then N - 1
  decode forwards; decode step i (i = 0 .. N-2) feeds one token (S = 1) at context P + S + i::

      G(B, S, P, N) = f(B, S, P) + sum_{i=0}^{N-2} f(B, 1, P + S + i)

  summed symbolically (``sum_steps``), not with a Python loop, so G is a closed form in B, S, P, N.

The lm_head runs over all S positions in the graph (what a plain transformers forward does). With
``lm_head="last"`` it runs on the last position only (what ``generate`` asks for with
``logits_to_keep=1``): its token count B*S becomes B, i.e. S -> 1 in the lm_head node's formulas.

Sliding windows put ``Min(P, w - 1)`` terms in the formulas; sympy sums those poorly, so ``sum_steps``
splits each sum at the window boundary (exact for integers, see ``_sum_min_term``); a term it cannot
split (a product of two windowed factors, say) is summed as an exact finite sum when N is a number, with
a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from . import checks
from .errors import QueryError
from .profile import check_shape

PREFILL, DECODE, GENERATE = "prefill", "decode", "generate"
PHASES: tuple[str, ...] = (PREFILL, DECODE, GENERATE)
LM_HEAD_ALL, LM_HEAD_LAST = "all", "last"
LmHead = Literal["all", "last"]


def check_lm_head(lm_head: str) -> str:
    if lm_head not in (LM_HEAD_ALL, LM_HEAD_LAST):
        raise QueryError(f"lm_head must be 'all' (every position) or 'last' (last position only), got {lm_head!r}")
    return lm_head


@dataclass(frozen=True)
class Phase:
    """One phase of a request. ``seq`` is the prompt length for prefill / generate and the tokens fed per
    step for decode (1, or the drafted tokens of a speculative verify); ``past`` the cached tokens before."""

    kind: str
    batch: int
    seq: int
    past: int = 0
    new_tokens: int = 0  # generate only
    lm_head: str = LM_HEAD_ALL

    def __post_init__(self) -> None:
        if self.kind not in PHASES:
            raise QueryError(f"unknown phase {self.kind!r}; valid: {', '.join(PHASES)}")
        check_shape(self.batch, self.seq, self.past)
        check_lm_head(self.lm_head)
        if self.kind == GENERATE:
            checks.check_new_tokens(self.new_tokens)

    @classmethod
    def prefill(cls, batch: int, seq: int, past: int = 0, lm_head: str = LM_HEAD_ALL) -> Phase:
        return cls(PREFILL, batch, seq, past, 0, lm_head)

    @classmethod
    def decode(cls, batch: int, past: int, seq: int = 1, lm_head: str = LM_HEAD_ALL) -> Phase:
        return cls(DECODE, batch, seq, past, 0, lm_head)

    @classmethod
    def generate(cls, batch: int, prompt: int, new_tokens: int, past: int = 0, lm_head: str = LM_HEAD_ALL) -> Phase:
        return cls(GENERATE, batch, prompt, past, new_tokens, lm_head)

    @property
    def tokens(self) -> int:
        """Tokens the phase processes (prefill, decode: B*S) or generates (generate: B*N)."""
        return self.batch * (self.new_tokens if self.kind == GENERATE else self.seq)

    def steps(self) -> list[tuple[int, int]]:
        """The forwards the phase runs, as (seq, past) pairs (for checks: the closed form sums these)."""
        if self.kind != GENERATE:
            return [(self.seq, self.past)]
        return [(self.seq, self.past)] + [(1, self.past + self.seq + i) for i in range(self.new_tokens - 1)]

    def values(self) -> dict[Any, int]:
        """The phase's numbers keyed by the sympy symbols of the closed forms (``generation``)."""
        from .generation import N
        from .symbols import B, P, S

        out = {B: self.batch, S: self.seq, P: self.past}
        if self.kind == GENERATE:
            out[N] = self.new_tokens
        return out


_GENERATION = frozenset({
    "N", "STEP", "StepSum", "decode_step", "evaluate", "generation_sum", "last_position", "node_expr",
    "phase_count", "phase_expr", "phase_total", "sum_steps",
})


def __getattr__(name: str) -> Any:
    """The closed-form pieces live in ``generation`` (sympy); importing them from here still works."""
    if name in _GENERATION:
        from . import generation

        return getattr(generation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DECODE", "GENERATE", "LM_HEAD_ALL", "LM_HEAD_LAST", "PHASES", "PREFILL", "Phase", "check_lm_head"]
