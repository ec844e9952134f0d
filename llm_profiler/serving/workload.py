"""A request mix: prompt and output length distributions (or a trace file) and an arrival process.

Lengths: ``fixed`` (``value``), ``uniform`` (integers ``low`` .. ``high`` inclusive), ``normal`` (``mean``,
``std``), ``lognormal`` (``mean`` of the lengths and ``sigma`` of their logarithm, so the underlying normal
has mu = ln(mean) - sigma^2 / 2); draws are rounded and clipped to [``minimum``, ``maximum``].
Arrivals: ``poisson`` (exponential gaps of mean 1 / rate), ``fixed`` (one request every 1 / rate seconds) or
``burst`` (every request at t = 0). The RNG is numpy's seeded ``default_rng``; the gaps are drawn at rate 1
and divided by the rate, so one seed gives the same requests at every rate, arriving proportionally sooner
(the rate search relies on this coupling). A trace file (CSV with a header, or JSON lines) gives each
request's ``prompt_tokens`` and ``output_tokens`` (also accepted: ``input_len`` / ``output_len``,
``prompt_len``, ``input_tokens``) and optionally ``arrival_s`` (also ``timestamp``; shifted to start at 0).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import QueryError

MAX_REQUESTS = 1_000_000
_PROMPT_KEYS = ("prompt_tokens", "input_tokens", "prompt_len", "input_len", "prompt_length", "input_length")
_OUTPUT_KEYS = ("output_tokens", "output_len", "output_length", "completion_tokens")
_ARRIVAL_KEYS = ("arrival_s", "arrival", "timestamp", "time_s")


class WorkloadError(QueryError):
    """A request mix that cannot be simulated (names the field and what is allowed)."""


class Lengths(BaseModel):
    """A token-length distribution (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    value: int | None = None
    low: int | None = None
    high: int | None = None
    mean: float | None = None
    std: float | None = None
    sigma: float | None = None
    minimum: int = 1
    maximum: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Lengths:
        need = {"fixed": ("value",), "uniform": ("low", "high"), "normal": ("mean", "std"),
                "lognormal": ("mean", "sigma")}[self.kind]
        for name in need:
            if getattr(self, name) is None:
                raise ValueError(f"a {self.kind} length distribution needs {' and '.join(need)}")
        if self.minimum < 1:
            raise ValueError(f"minimum must be >= 1 token, got {self.minimum}")
        if self.maximum is not None and self.maximum < self.minimum:
            raise ValueError(f"maximum ({self.maximum}) must be >= minimum ({self.minimum})")
        checks = {"value": 1, "low": 1, "high": 1, "mean": 1e-9, "std": 0, "sigma": 0}
        for name, lowest in checks.items():
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < lowest):
                raise ValueError(f"{name} must be a finite number >= {lowest:g}, got {v}")
        if self.kind == "uniform" and self.high < self.low:  # type: ignore[operator]
            raise ValueError(f"uniform: high ({self.high}) must be >= low ({self.low})")
        return self

    @classmethod
    def parse(cls, text: str | int, name: str = "length") -> Lengths:
        """``512`` (fixed), ``uniform:128:1024``, ``normal:512:128``, ``lognormal:512:0.8``."""
        raw = str(text).strip()
        parts = raw.split(":")
        try:
            if len(parts) == 1:
                return cls(kind="fixed", value=int(parts[0]))
            kind, a, b = parts[0].lower(), parts[1], parts[2] if len(parts) > 2 else None
            if len(parts) != 3:
                raise ValueError("expected KIND:A:B")
            if kind == "fixed":
                raise ValueError("fixed takes one number")
            if kind == "uniform":
                return cls(kind="uniform", low=int(a), high=int(b))  # type: ignore[arg-type]
            if kind == "normal":
                return cls(kind="normal", mean=float(a), std=float(b))  # type: ignore[arg-type]
            if kind == "lognormal":
                return cls(kind="lognormal", mean=float(a), sigma=float(b))  # type: ignore[arg-type]
            raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, ValidationError) as err:
            detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            raise WorkloadError(f"{name} must be N (fixed), uniform:LOW:HIGH, normal:MEAN:STD or "
                                f"lognormal:MEAN:SIGMA with positive token counts; got {raw!r} ({detail})") from None

    @property
    def expected(self) -> float:
        """The mean before rounding and clipping."""
        if self.kind == "fixed":
            return float(self.value)  # type: ignore[arg-type]
        if self.kind == "uniform":
            return (self.low + self.high) / 2  # type: ignore[operator]
        return float(self.mean)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.kind == "fixed":
            text = f"{self.value}"
        elif self.kind == "uniform":
            text = f"uniform {self.low}..{self.high}"
        elif self.kind == "normal":
            text = f"normal(mean {self.mean:g}, std {self.std:g})"
        else:
            text = f"lognormal(mean {self.mean:g}, sigma {self.sigma:g})"
        if self.kind != "fixed" and (self.minimum != 1 or self.maximum is not None):
            text += f" clipped to [{self.minimum}, {self.maximum if self.maximum is not None else 'inf'}]"
        return text

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            x = np.full(n, float(self.value))  # type: ignore[arg-type]
        elif self.kind == "uniform":
            low, high = int(self.low or 1), int(self.high or 1)
            x = rng.integers(low, high + 1, n).astype(np.float64)
        elif self.kind == "normal":
            x = rng.normal(self.mean, self.std, n)  # type: ignore[arg-type]
        else:
            mu = math.log(self.mean) - self.sigma**2 / 2  # type: ignore[arg-type,operator]
            x = rng.lognormal(mu, self.sigma, n)  # type: ignore[arg-type]
        hi = self.maximum if self.maximum is not None else np.inf
        return np.clip(np.rint(x), self.minimum, hi).astype(np.int64)


class Workload(BaseModel):
    """A request mix: ``num_requests`` requests with prompt and output lengths from ``prompt`` / ``output``
    (or a ``trace`` file), arriving by ``arrival`` at ``rate`` requests/s, drawn with ``seed``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: Lengths = Lengths(kind="fixed", value=512)
    output: Lengths = Lengths(kind="fixed", value=128)
    rate: float | None = 1.0
    arrival: Literal["poisson", "fixed", "burst"] = "poisson"
    num_requests: int = 1000
    seed: int = 0
    trace: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.arrival != "burst" and self.rate is None:
            raise ValueError(f"{self.arrival} arrivals need a rate (requests/s)")
        if self.rate is not None and (not math.isfinite(self.rate) or self.rate <= 0):
            raise ValueError(f"rate must be a positive number of requests/s, got {self.rate}")
        if not 1 <= self.num_requests <= MAX_REQUESTS and self.trace is None:
            raise ValueError(f"num_requests must be in 1 .. {MAX_REQUESTS:,}, got {self.num_requests}")
        return self

    @classmethod
    def make(cls, **fields: object) -> Workload:
        """``Workload(**fields)``, with pydantic's validation error turned into one ``WorkloadError``."""
        try:
            return cls(**fields)  # type: ignore[arg-type]
        except ValidationError as err:
            e = err.errors()[0]
            where = ".".join(str(x) for x in e["loc"]) or "workload"
            raise WorkloadError(f"workload {where}: {e['msg']}") from None

    def with_rate(self, rate: float) -> Workload:
        return Workload.make(**{**self.model_dump(), "rate": rate})

    def describe(self) -> str:
        if self.trace:
            return f"trace {self.trace}"
        when = "all at t = 0" if self.arrival == "burst" else f"{self.arrival} arrivals at {self.rate:g} requests/s"
        return (f"{self.num_requests} requests, prompt {self.prompt.describe()} tokens, output "
                f"{self.output.describe()} tokens, {when}, seed {self.seed}")

    def requests(self) -> Requests:
        """The drawn (or read) requests, sorted by arrival."""
        rng = np.random.default_rng(self.seed)
        if self.trace is not None:
            prompt, output, arrival = read_trace(self.trace)
            n = len(prompt)
            if arrival is None:
                arrival = self._arrivals(rng, n)
        else:
            n = self.num_requests
            prompt, output = self.prompt.sample(rng, n), self.output.sample(rng, n)
            arrival = self._arrivals(rng, n)
        order = np.argsort(arrival, kind="stable")
        return Requests(arrival[order], prompt[order], output[order])

    def _arrivals(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.arrival == "burst":
            return np.zeros(n)
        rate = float(self.rate)  # type: ignore[arg-type]
        if self.arrival == "fixed":
            return np.arange(n) / rate
        gaps = rng.exponential(1.0, n)
        return (np.cumsum(gaps) - gaps[0]) / rate  # the first request at t = 0


@dataclass(frozen=True)
class Requests:
    arrival: np.ndarray  # seconds, sorted
    prompt: np.ndarray  # tokens
    output: np.ndarray  # tokens

    def __len__(self) -> int:
        return int(self.arrival.shape[0])


def _pick(row: dict[str, object], keys: tuple[str, ...]) -> object:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return row[k]
    return None


def read_trace(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(prompt, output, arrival or None) from a CSV (with a header) or JSON-lines trace file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise WorkloadError(f"cannot read trace {path!r}: {err.strerror or err}") from None
    rows: list[dict[str, object]] = []
    if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise WorkloadError(f"trace {path!r} line {i}: not JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise WorkloadError(f"trace {path!r} line {i}: each line must be a JSON object")
                rows.append(row)
    else:
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    if not rows:
        raise WorkloadError(f"trace {path!r} has no requests (a CSV needs a header and one row per request; "
                            f"JSON lines one object per line)")
    if len(rows) > MAX_REQUESTS:
        raise WorkloadError(f"trace {path!r} has {len(rows):,} requests; at most {MAX_REQUESTS:,}")
    prompt, output, arrival = [], [], []
    for i, row in enumerate(rows, 1):
        values = []
        for keys, what in ((_PROMPT_KEYS, "prompt_tokens"), (_OUTPUT_KEYS, "output_tokens")):
            v = _pick(row, keys)
            try:
                n = int(float(v))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise WorkloadError(f"trace {path!r} request {i}: {what} ({' / '.join(keys)}) must be a positive "
                                    f"integer, got {v!r}") from None
            if n < 1 or n != float(v):  # type: ignore[arg-type]
                raise WorkloadError(f"trace {path!r} request {i}: {what} must be a positive integer, got {v!r}")
            values.append(n)
        prompt.append(values[0])
        output.append(values[1])
        a = _pick(row, _ARRIVAL_KEYS)
        if a is not None:
            try:
                arrival.append(float(a))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise WorkloadError(f"trace {path!r} request {i}: arrival_s must be seconds, got {a!r}") from None
            if not math.isfinite(arrival[-1]):
                raise WorkloadError(f"trace {path!r} request {i}: arrival_s must be finite, got {a!r}")
    if arrival and len(arrival) != len(rows):
        raise WorkloadError(f"trace {path!r}: arrival_s is given for {len(arrival)} of {len(rows)} requests; all or none")
    arr = None
    if arrival:
        arr = np.asarray(arrival, dtype=np.float64)
        arr = arr - arr.min()
    return np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64), arr


__all__ = ["Lengths", "Requests", "Workload", "WorkloadError", "read_trace"]
