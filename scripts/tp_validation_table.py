"""Regenerate the measured tables of docs/tensor_parallel_validation.md: transformers' own tensor parallelism
(tp_plan="auto") of the tiny llama, qwen3 and mixtral on 2 gloo ranks (and llama, mixtral on 4), per rank.

    python scripts/tp_validation_table.py       # rewrites the tables between their markers in the doc
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from llm_profiler.validation.tensor_parallel import TensorParallelMeasurement, measure_tensor_parallel_runs

DOC = Path(__file__).resolve().parents[1] / "docs" / "tensor_parallel_validation.md"
SHAPES = [(2, 3, 0), (2, 1, 3)]
METRICS = ("macs", "params", "act", "add")


def _replace(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    return re.sub(f"{re.escape(begin)}.*{re.escape(end)}", lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)


def _nodes(m: TensorParallelMeasurement) -> list[str]:
    """Layer 0 and the nodes outside the layers (layer 1 is layer 0 again)."""
    return [p for p in m.node_paths() if not re.match(r"model\.layers\.[1-9]", p)]


def _collectives(runs: dict, world: int) -> str:
    lines = ["| model | ranks | (B, S, P) | kind | module | calls | payload bytes each | op |",
             "|---|---|---|---|---|---|---|---|"]
    for (name, shape), m in runs.items():
        seen: dict[tuple[str, str, int, str], int] = {}
        for c in m.ranks[0].collectives:
            key = (c.kind, re.sub(r"\.\d+\.", ".*.", c.module), c.payload_bytes, c.op)
            seen[key] = seen.get(key, 0) + 1
        for (kind, module, size, op), calls in seen.items():
            lines.append(f"| {name} | {world} | {shape} | {kind} | `{module}` | {calls} | {size:,} | `{op}` |")
    return "\n".join(lines)


def _summary(runs: list[TensorParallelMeasurement]) -> str:
    lines = ["| model | ranks | (B, S, P) | params / rank | params, 1 process | MACs / rank | MACs, 1 process "
             "| collective bytes / rank | max abs logit diff |", "|---|---|---|---|---|---|---|---|---|"]
    for m in runs:
        name, shape, r = m.model, (m.batch, m.seq, m.past), m.ranks[0]
        single_macs = sum(v.get("macs", 0) for v in m.single.values())
        lines.append(f"| {name} | {m.world_size} | {shape} | {r.params:,} | {m.single_params:,} | "
                     f"{r.total('macs'):,} | {single_macs:,} | {r.collective_bytes():,} | {m.max_logit_diff:.1e} |")
    return "\n".join(lines)


def main() -> None:
    start = time.time()
    two = measure_tensor_parallel_runs(["llama-2-7b", "qwen3-8b", "mixtral-8x7b", "llama-3.2-1b"], 2, SHAPES)
    four = measure_tensor_parallel_runs(["llama-2-7b", "mixtral-8x7b"], 4, SHAPES,
                                        overrides={"num_key_value_heads": 4})
    llama = two[("llama-2-7b", (2, 3, 0))]
    mixtral = two[("mixtral-8x7b", (2, 3, 0))]
    mixtral_mlp = [p for p in _nodes(mixtral) if ".mlp" in p]
    text = DOC.read_text()
    text = _replace(text, "tp-llama", llama.table(METRICS, _nodes(llama)))
    text = _replace(text, "tp-mixtral", mixtral.table(METRICS, mixtral_mlp))
    text = _replace(text, "tp-collectives", _collectives(two, 2) + "\n" + "\n".join(
        _collectives(four, 4).splitlines()[2:]))
    text = _replace(text, "tp-summary", _summary([*two.values(), *four.values()]))
    DOC.write_text(text)
    print(f"wrote {DOC} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
