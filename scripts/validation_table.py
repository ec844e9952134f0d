"""Regenerate the tables of docs/validation.md: the attribution rules (validation.parts.RULES), and the
results: every bundled preset, then one config per registered model type no preset covers (from
tests/family_configs/), each at full size on the meta device and at tiny size on the CPU, at three shapes;
one cell per (model, metric): exact on every node, or not. ``cache states`` is every per-kind cache row
(``cache[conv]``, ``cache[recurrent]``, ``cache[indexer_keys]``, ...), n/a for keys-and-values-only models.

    python scripts/validation_table.py            # rewrites both tables between their markers
    python scripts/validation_table.py --jobs 4   # models in 4 processes
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from llm_profiler.config import list_presets, load_config
from llm_profiler.errors import ProfilerError
from llm_profiler.families import resolve, supported_model_types
from llm_profiler.validation import validate
from llm_profiler.validation.compare import CACHE_GROWTH, COMPARED
from llm_profiler.validation.parts import ORDERED, RULES
from llm_profiler.validation.reference import reference

SHAPES = [(2, 3, 0), (3, 7, 5), (1, 1, 9)]
STATES = "cache states"  # every cache[<kind>] row
METRICS = (*COMPARED, "cache", STATES, CACHE_GROWTH)
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "validation.md"
FAMILY_CONFIGS = ROOT / "tests" / "family_configs"


def _replace(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    return re.sub(f"{re.escape(begin)}.*{re.escape(end)}", lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)


def rules_table() -> str:
    """validation.parts.RULES as a markdown table, in the order they are tried."""
    def code(x: str | None) -> str:
        return "" if x is None else "`" + x.replace("|", "\\|") + "`"

    lines = ["| # | part | function (qualified name) | file | source line contains | what, and who runs it |",
             "|---|---|---|---|---|---|"]
    for i, rule in enumerate(RULES, 1):
        part = "scores / softmax / context (by order)" if rule.part == ORDERED else f"`:{rule.part}`"
        lines.append(f"| {i} | {part} | {code(rule.function)} | {code(rule.file)} | {code(rule.line)} | {rule.why} |")
    return "\n".join(lines)


def _metric(name: str) -> str:
    return STATES if name.startswith("cache[") else name


# Class defaults that leave a field transformers' attention cannot use: the checkpoint's value, as
# tests/test_family_dense.py validates them (Hunyuan-7B's and Ministral-8B's head_dim, Nemotron-4's KV heads).
OVERRIDES: dict[str, dict[str, int]] = {
    "transformers--HunYuanDenseV1Config-defaults.json": {"head_dim": 128},
    "transformers--MinistralConfig-defaults.json": {"head_dim": 128},
    "transformers--NemotronConfig-defaults.json": {"num_key_value_heads": 8},
}


def validate_one(label: str, source: str) -> tuple[str, bool]:
    """One table row for ``source`` (a preset's hub id or a config path), and whether it is all exact."""
    cfg = load_config(source)
    config: Any = source
    if Path(source).name in OVERRIDES:
        label = f"{label} ({', '.join(f'{k}={v}' for k, v in OVERRIDES[Path(source).name].items())})"
        config = {**cfg.data, **OVERRIDES[Path(source).name]}
        cfg = load_config(config)
    try:
        ref = reference(cfg)
        spec, model = ref.profile.spec, ref.build()
    except Exception as err:  # static-only families (no transformers code) and unsupported ones
        reason = str(err).splitlines()[0].split(" (")[0]
        return f"| {label} | {cfg.model_type} | not validated: {reason} |" + " |" * len(METRICS), False
    status: dict[str, bool] = defaultdict(lambda: True)
    compared: dict[str, int] = defaultdict(int)
    nodes, ok = 0, True
    for tiny in (False, True):
        for shape in SHAPES:
            report = validate(config, *shape, tiny=tiny, model=None if tiny else model)
            ok &= report.ok and not report.unattributed_ops
            for row in report.rows:
                status[_metric(row.metric)] &= row.ok
                compared[_metric(row.metric)] += 1
            if not tiny:
                nodes = max(nodes, len({r.node for r in report.rows if r.metric in COMPARED}))
    cells = [("exact" if status[m] else "**MISMATCH**") if compared[m] else "n/a" for m in METRICS]
    row = f"| {label} | {spec.model_type} | {nodes:,} | " + " | ".join(cells) + " |"
    print(row, flush=True)
    return row, ok


def sources() -> list[tuple[str, str]]:
    """(label, source): the presets, then a family config for each model type no preset covers."""
    out = [(preset.alias, preset.hub_id) for preset in list_presets()]
    covered = {resolve(load_config(source).data)[1].get("model_type") for _, source in out}
    for path in sorted(FAMILY_CONFIGS.glob("*.json")):
        try:
            model_type = resolve(json.loads(path.read_text(encoding="utf-8")))[1].get("model_type")
        except ProfilerError:  # a config kept for a family not written yet
            continue
        if model_type in supported_model_types() and model_type not in covered:
            covered.add(model_type)
            out.append((f"`{path.name}`", str(path)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="models validated in parallel processes")
    args = parser.parse_args()
    start = time.perf_counter()
    todo = sources()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(validate_one, *zip(*todo, strict=True)))
    rows = [row for row, _ in results]
    all_ok = all(ok for _, ok in results)
    header = ("| preset or config | model_type | nodes | " + " | ".join(METRICS) + " |\n|" + "---|" * (len(METRICS) + 3))
    table = (f"{header}\n" + "\n".join(rows) + f"\n\n{len(rows)} configs, {len({r.split('|')[2] for r in rows})} "
             f"model types. Shapes (B, S, P): {SHAPES}, full size on meta and tiny on the CPU; `nodes`: graph nodes "
             "compared at full size; a cell is exact when every node (every layer, for the cache) agrees at every "
             f"shape; generated by `python scripts/validation_table.py --jobs {args.jobs}` in "
             f"{time.perf_counter() - start:.0f} s.")
    text = _replace(DOC.read_text(), "rules", rules_table())
    DOC.write_text(_replace(text, "results", table))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
