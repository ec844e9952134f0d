"""Speculative decoding in closed form (Leviathan, Kalman and Matias, 2023, "Fast Inference from
Transformers via Speculative Decoding", ICML; arXiv:2211.17192).

With k drafted tokens per target step and a per-token acceptance rate a (the i.i.d. assumption of the
paper's section 3.1), the number of tokens one target step yields is 1 + min(G, k), G geometric (each draft
accepted with probability a until the first rejection; the target always contributes one token, the
correction or the bonus), so (the paper's equation 1)

    E[tokens per target step] = (1 - a^(k+1)) / (1 - a)            (k + 1 when a = 1)

A step costs one target forward verifying k + 1 tokens plus k draft forwards; with c = the cost of one
draft forward over one target forward (the paper's cost coefficient), the expected walltime improvement
over plain decoding (its theorem 3.8) is

    speedup = (1 - a^(k+1)) / ((1 - a)(c k + 1))

and the cost per accepted token, in target steps, is its inverse. Drafts: another model (its own step cost),
an n-gram / prompt-lookup proposer (c = 0: a lookup on the host, no forward), or the model's own multi-token
prediction heads where the config has ``num_nextn_predict_layers`` (DeepSeek-V3: one extra decoder layer
and the shared lm_head per draft token).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ..errors import QueryError

MAX_K = 64


def _check(k: Any, acceptance: Any) -> tuple[int, float]:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise QueryError(f"spec_k (drafted tokens per step) must be an integer in 1 .. {MAX_K}, got {k!r}")
    if isinstance(acceptance, bool) or not isinstance(acceptance, (int, float)) or not 0 <= acceptance <= 1:
        raise QueryError(f"spec_accept (the per-token acceptance rate) must be a number in [0, 1], got {acceptance!r}")
    return k, float(acceptance)


def expected_tokens(k: int, acceptance: float) -> float:
    """Expected tokens per target step: (1 - a^(k+1)) / (1 - a); k + 1 at a = 1."""
    k, a = _check(k, acceptance)
    if a == 1.0:
        return float(k + 1)
    return (1 - a ** (k + 1)) / (1 - a)


def speedup(k: int, acceptance: float, cost_ratio: float) -> float:
    """Walltime improvement over plain decoding: E[tokens] / (c k + 1) (Leviathan et al., theorem 3.8)."""
    if not isinstance(cost_ratio, (int, float)) or not math.isfinite(cost_ratio) or cost_ratio < 0:
        raise QueryError(f"draft cost ratio must be a number >= 0, got {cost_ratio!r}")
    return expected_tokens(k, acceptance) / (cost_ratio * k + 1)


def cost_per_token(k: int, acceptance: float, cost_ratio: float) -> float:
    """Target-step equivalents per generated token: (c k + 1) / E[tokens]."""
    return 1 / speedup(k, acceptance, cost_ratio)


class Speculative(BaseModel):
    """Speculative decoding in the simulator: ``k`` drafts per step accepted at rate ``acceptance``;
    ``draft``: ``ngram`` (free), ``mtp`` (the model's own MTP heads) or a model (preset, hub id or path);
    ``draft_cost_ratio`` overrides the draft forward's cost as a fraction of the target's decode step."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int
    acceptance: float
    draft: str = "ngram"
    draft_cost_ratio: float | None = None

    @model_validator(mode="after")
    def _valid(self) -> Speculative:
        _check(self.k, self.acceptance)
        c = self.draft_cost_ratio
        if c is not None and (not math.isfinite(c) or c < 0):
            raise ValueError(f"draft_cost_ratio must be >= 0, got {c}")
        return self

    @classmethod
    def make(cls, k: Any, acceptance: Any, draft: str = "ngram", draft_cost_ratio: float | None = None) -> Speculative:
        _check(k, acceptance)
        if draft_cost_ratio is not None and (not isinstance(draft_cost_ratio, (int, float)) or
                                             not math.isfinite(draft_cost_ratio) or draft_cost_ratio < 0):
            raise QueryError(f"draft_cost_ratio must be a number >= 0, got {draft_cost_ratio!r}")
        return cls(k=k, acceptance=acceptance, draft=draft or "ngram", draft_cost_ratio=draft_cost_ratio)

    @property
    def expected_tokens(self) -> float:
        return expected_tokens(self.k, self.acceptance)


def mtp_layers(spec_or_config: Any) -> int:
    """The config's ``num_nextn_predict_layers`` (0 when it has none)."""
    data = getattr(spec_or_config, "data", spec_or_config)
    value = data.get("num_nextn_predict_layers", 0) if isinstance(data, dict) else 0
    return int(value or 0)


def mtp_cost_ratio(model: Any, device: Any, engine: Any = "vllm", context: int = 1024) -> float:
    """One MTP draft forward over one target decode step (batch 1 at ``context``): the time of the last
    decoder layer's nodes plus the final norm and the lm_head (the MTP module is one decoder layer with the
    shared head; its small input projection and norms are left out), from ``perf``'s per-node roofline."""
    from ..perf import roofline

    r = roofline(model, device, "decode", batch=1, past=context, nodes=True, engine=engine)
    layers = max((n.path.split(".")[2] for n in r.nodes if n.path.startswith("model.layers.")),
                 key=lambda x: int(x.split(":")[0]), default=None)
    if layers is None:
        raise QueryError("cannot find the decoder layers to cost an MTP head")
    last = f"model.layers.{layers.split(':')[0]}."
    part = sum(n.time_s for n in r.nodes if n.path.startswith(last) or n.path.startswith("lm_head")
               or n.path.startswith("model.norm"))
    return part / r.latency_s


__all__ = ["Speculative", "cost_per_token", "expected_tokens", "mtp_cost_ratio", "mtp_layers", "speedup"]
