"""Metric names: the one place that lists them, their aliases and their meaning."""

from __future__ import annotations

from .errors import QueryError

# Arithmetic categories counted per element by the op table (llm_profiler.ops).
ADD, MULT, DIV, SQRT, EXP, CMP = "add", "mult", "div", "sqrt", "exp", "cmp"
ARITHMETIC: tuple[str, ...] = (ADD, MULT, DIV, SQRT, EXP, CMP)
MACS = "macs"  # multiply-accumulates of matrix products (linear, attention scores / values, routers)
ACT = "act"  # elements written by computing ops (views, copies, casts and creation ops excluded)
PARAMS = "params"  # parameters (tied weights once)
ACTIVE_PARAMS = "active_params"  # parameters one token uses (MoE: routed top-k + shared + dense); = params if absent
CACHE = "cache"  # every cache state held after the forward (keys and values, latents, indexer keys, conv, recurrent)
KV = "kv"  # the attention keys and values alone (MLA: its cached latent), a part of CACHE
FLOPS = "flops"  # derived: add + mult (the seed's meaning)
MATMUL_FLOPS = "matmul_flops"  # derived: 2 * macs (torch FlopCounterMode / DeepSpeed / calflops convention)

# What a node stores: everything but the derived metrics.
STORED: tuple[str, ...] = (*ARITHMETIC, MACS, ACT, PARAMS, ACTIVE_PARAMS, CACHE, KV)
DERIVED: dict[str, tuple[tuple[str, int], ...]] = {
    FLOPS: ((ADD, 1), (MULT, 1)),
    MATMUL_FLOPS: ((MACS, 2),),
}
ALL: tuple[str, ...] = (*STORED, FLOPS, MATMUL_FLOPS)
# The seed's whole-transformer summary, in its order.
SUMMARY: tuple[str, ...] = (ADD, MULT, DIV, SQRT, EXP, FLOPS, MACS, PARAMS, CACHE, ACT)

# Every metric of ALL has a label and a description (tests/test_face.py holds both tables to ALL): a metric
# added to STORED without its label broke every table and seed line that showed it (a KeyError).
LABELS: dict[str, str] = {
    ADD: "ADD", MULT: "MULT", DIV: "DIV", SQRT: "SQRT", EXP: "EXP", CMP: "CMP",
    MACS: "MACs", ACT: "ACT", PARAMS: "PARAMS", ACTIVE_PARAMS: "ACTIVE_PARAMS", CACHE: "CACHE", KV: "KV", FLOPS: "FLOPs",
    MATMUL_FLOPS: "MATMUL_FLOPs",
}
DESCRIPTIONS: dict[str, str] = {
    ADD: "additions and subtractions (incl. the accumulations of matrix products)",
    MULT: "multiplications",
    DIV: "divisions",
    SQRT: "square roots",
    EXP: "exponentials and other transcendentals (exp, tanh, erf, sin, cos)",
    CMP: "comparisons and logic (max in softmax, masks)",
    MACS: "multiply-accumulates of matrix products",
    ACT: "activation elements written by computing ops",
    PARAMS: "parameters (tied weights once)",
    ACTIVE_PARAMS: "parameters one token uses (MoE: routed top-k experts, shared experts and dense parts)",
    CACHE: "cache elements held after the forward: every state (keys and values, MLA latents, indexer keys, "
           "conv and recurrent states)",
    KV: "attention keys and values held in the cache after the forward (MLA: its cached latent)",
    FLOPS: "add + mult",
    MATMUL_FLOPS: "2 * macs",
}

_ALIASES: dict[str, str] = {
    "mul": MULT, "multiply": MULT, "sub": ADD, "flop": FLOPS, "mac": MACS, "param": PARAMS,
    "parameters": PARAMS, "active": ACTIVE_PARAMS, "kv_cache": KV, "state": CACHE, "states": CACHE, "activations": ACT, "activation": ACT,
    "transcendental": EXP, "compare": CMP,
}


def canonical(name: str) -> str:
    """Map a user's metric name (any case, a few aliases) to its canonical name."""
    if not isinstance(name, str):
        raise QueryError(f"metric must be a string, got {type(name).__name__}; valid: {', '.join(ALL)}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in ALL:
        raise QueryError(f"unknown metric {name!r}; valid: {', '.join(ALL)}")
    return key
