"""A vLLM-style continuous-batching scheduler on paged KV blocks.

One engine step (vLLM V1's ``Scheduler.schedule``, simplified; docs/serving.md lists what is left out):

1. **Running requests first**, in admission order. Each asks for its remaining uncomputed tokens (the rest
   of its prompt, chunked; or 1 token when decoding; 1 + k when verifying k drafted tokens) and gets
   ``min(asked, budget left)``, the budget being ``max_num_batched_tokens`` per step (chunked prefill).
2. **Paged KV**: a request holds ceil(tokens with KV / block_size) blocks. When the running requests'
   new blocks do not fit in the free blocks, the **lowest-priority running request (the last admitted) is
   preempted** and recomputed later: its blocks are freed, it goes back to the front of the waiting queue
   and its prompt plus the tokens it generated are prefilled again. Repeat until the rest fit.
3. **Waiting requests** (FCFS) are admitted while the budget lasts, fewer than ``max_num_seqs`` run and
   their first chunk's blocks fit; none in a step that preempted. A **prefix-cache hit rate** h skips the
   first floor(h x prompt / block_size) x block_size prompt tokens (cached blocks, always leaving at least
   the last token to compute): they are not computed, count as cached context P of the first chunk and
   keep their blocks (counted per request, which overstates memory where real sharing saves it).
4. After the step, a request whose computed tokens reach its length samples a token (the first one ends
   its prefill: its TTFT); a request with all its output tokens finishes and frees its blocks.

The state is numpy arrays indexed by request, so a step is a few vector operations over the running
requests plus a Python loop over the (few) admissions and preemptions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import QueryError


class SchedulerConfig(BaseModel):
    """Scheduler limits (vLLM's names). ``None``: the engine's value (vllm: 8192 tokens per step, 16-token
    blocks) or, for ``num_kv_blocks``, what the device memory holds after the weights and activations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    memory_fraction: float = 0.9  # vLLM's gpu_memory_utilization default
    num_kv_blocks: int | None = None
    prefix_cache_hit: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> SchedulerConfig:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens (the token budget per step) must be >= 1 token, got "
                             f"{self.max_num_batched_tokens}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be >= 1 token, got {self.block_size}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError(f"num_kv_blocks must be >= 1, got {self.num_kv_blocks}")
        if not 0 <= self.prefix_cache_hit < 1:
            raise ValueError(f"prefix_cache_hit must be in [0, 1), got {self.prefix_cache_hit}")
        return self

    @classmethod
    def make(cls, **fields: Any) -> SchedulerConfig:
        try:
            return cls(**{k: v for k, v in fields.items() if v is not None or k == "num_kv_blocks"})
        except ValidationError as err:
            e = err.errors()[0]
            where = ".".join(str(x) for x in e["loc"]) or "scheduler"
            raise QueryError(f"scheduler {where}: {e['msg']}") from None


@dataclass
class Batch:
    """One step's work: request ids, tokens scheduled, their cached context before the step, and which are
    decodes (one token, or 1 + k with speculation, at the end of a sequence that has an output token)."""

    ids: np.ndarray
    tokens: np.ndarray
    past: np.ndarray
    decode: np.ndarray
    preempted: list[int]


def _ceil_div(x: Any, d: int) -> Any:
    return -(-x // d)


class Scheduler:
    """The scheduler's state over the requests of one simulation (see the module docstring)."""

    def __init__(self, prompt: np.ndarray, output: np.ndarray, *, budget: int, max_num_seqs: int,
                 block_size: int, num_blocks: int, prefix_cache_hit: float = 0.0, spec_k: int = 0) -> None:
        n = prompt.shape[0]
        self.prompt, self.output = prompt.astype(np.int64), output.astype(np.int64)
        self.budget, self.max_num_seqs, self.block_size = budget, max_num_seqs, block_size
        self.num_blocks = self.free = num_blocks
        self.spec_k = spec_k
        self.cached = (np.floor(prefix_cache_hit * self.prompt / block_size).astype(np.int64) * block_size
                       if prefix_cache_hit else np.zeros(n, dtype=np.int64))
        self.num_tokens = self.prompt.copy()  # prompt + generated
        self.num_computed = np.zeros(n, dtype=np.int64)
        self.blocks = np.zeros(n, dtype=np.int64)
        self.generated = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.running = np.zeros(0, dtype=np.int64)
        self.waiting: deque[int] = deque()

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free

    def schedule(self) -> Batch:
        bs, budget = self.block_size, self.budget
        run = self.running
        nt, nc = self.num_tokens[run], self.num_computed[run]
        rem = nt - nc
        dec = (rem == 1) & (self.generated[run] > 0)
        if self.spec_k:
            want = rem.copy()
            want[dec] = 1 + self.spec_k
        else:
            want = rem
        everything = int(want.sum()) <= budget  # every running request gets what it asks (each asks >= 1)
        if everything:
            sched = want
            need = np.maximum(_ceil_div(nc + sched, bs) - self.blocks[run], 0)
        else:
            before = np.cumsum(want) - want
            sched = np.minimum(np.maximum(budget - before, 0), want)
            need = np.where(sched > 0, np.maximum(_ceil_div(nc + sched, bs) - self.blocks[run], 0), 0)
        total = int(need.sum())
        preempted: list[int] = []
        while total > self.free:  # preempt the lowest-priority running request until the rest fit
            victim = int(run[-1])
            total -= int(need[-1])
            self.free += int(self.blocks[victim])
            self.blocks[victim] = 0
            self.num_computed[victim] = 0
            self.preemptions[victim] += 1
            self.waiting.appendleft(victim)
            preempted.append(victim)
            run, nc, sched, need, dec = run[:-1], nc[:-1], sched[:-1], need[:-1], dec[:-1]
        self.blocks[run] += need
        self.free -= total
        budget_left = budget - int(sched.sum())
        new_ids: list[int] = []
        new_tokens: list[int] = []
        new_past: list[int] = []
        if not preempted:
            slots = self.max_num_seqs - run.shape[0]
            while self.waiting and budget_left > 0 and len(new_ids) < slots:
                r = self.waiting[0]
                computed = min(int(self.cached[r]), int(self.num_tokens[r]) - 1)
                s = min(int(self.num_tokens[r]) - computed, budget_left)
                blocks = _ceil_div(computed + s, bs)
                if blocks > self.free:
                    break
                self.waiting.popleft()
                self.num_computed[r] = computed
                self.blocks[r] = blocks
                self.free -= blocks
                budget_left -= s
                new_ids.append(r)
                new_tokens.append(s)
                new_past.append(computed)
        keep = None if everything else sched > 0
        if keep is not None and not keep.all():
            run_ids, sched, nc, dec = run[keep], sched[keep], nc[keep], dec[keep]
        else:
            run_ids = run
        if not new_ids:
            self.running = run
            return Batch(run_ids, sched, nc, dec, preempted)
        fresh = np.asarray(new_ids, dtype=np.int64)
        self.running = np.concatenate([run, fresh])
        return Batch(np.concatenate([run_ids, fresh]), np.concatenate([sched, np.asarray(new_tokens, dtype=np.int64)]),
                     np.concatenate([nc, np.asarray(new_past, dtype=np.int64)]),
                     np.concatenate([dec, np.zeros(len(new_ids), dtype=bool)]), preempted)

    def commit(self, batch: Batch, emitted_spec: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply a finished step: computed tokens advance, tokens are sampled. ``emitted_spec``: the tokens each
        speculative decode row yields (1 + accepted drafts; None without speculation). Returns (ids that
        emitted, how many tokens each, their generated count before) and finishes the requests that are done."""
        ids, tokens = batch.ids, batch.tokens
        reached = batch.past + tokens >= self.num_tokens[ids]
        emitted = reached.astype(np.int64)
        if emitted_spec is not None:
            left = self.output[ids] - self.generated[ids]
            e = np.minimum(emitted_spec, left)
            emitted = np.where(batch.decode, e, emitted)
            self.num_computed[ids] = np.where(batch.decode, batch.past + e, batch.past + tokens)
        else:
            self.num_computed[ids] = batch.past + tokens
        out = emitted > 0
        ids_e, em = ids[out], emitted[out]
        before = self.generated[ids_e].copy()
        self.num_tokens[ids_e] += em
        self.generated[ids_e] += em
        done = self.generated[self.running] >= self.output[self.running]
        if done.any():
            finished = self.running[done]
            self.free += int(self.blocks[finished].sum())
            self.blocks[finished] = 0
            self.running = self.running[~done]
        return ids_e, em, before


__all__ = ["Batch", "Scheduler", "SchedulerConfig"]
