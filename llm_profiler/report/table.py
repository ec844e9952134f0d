"""The per-layer breakdown table: rows of embed, each layer and its parts, final norm, lm_head, total."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import metrics as M
from ..graph.node import ATTN, MLP, NodeKind
from .units import human

if TYPE_CHECKING:
    from ..profile import Profile

@dataclass(frozen=True)
class Row:
    label: str
    values: dict[str, int]
    level: int = 0  # 0: a top row, 1: a part of the layer above it


def breakdown_rows(profile: Profile, metrics: Sequence[str], layers: Sequence[int] | None = None) -> list[Row]:
    values = profile.values
    nodes = profile.model.nodes

    def add(paths: list[str]) -> dict[str, int]:
        return {m: sum(values[p][m] for p in paths) for m in metrics}

    rows: list[Row] = []
    by_layer: dict[int, list] = {}
    pending: dict[str, list[str]] = {}
    order: list[str] = []

    def flush() -> None:
        for label in order:
            rows.append(Row(label, add(pending[label])))
        pending.clear()
        order.clear()

    for node in nodes:
        if node.layer is None:
            label = node.label
            if label not in pending:
                order.append(label)
                pending[label] = []
            pending[label].append(node.path)
            continue
        if node.layer not in by_layer:
            flush()
            by_layer[node.layer] = []
            rows.append(Row(f"layers.{node.layer}", {}))  # filled below
        by_layer[node.layer].append(node)
    flush()

    out: list[Row] = []
    for row in rows:
        if not row.label.startswith("layers.") or row.values:
            out.append(row)
            continue
        index = int(row.label.split(".")[1])
        if layers is not None and index not in layers:
            continue
        layer_nodes = by_layer[index]
        out.append(Row(row.label, add([n.path for n in layer_nodes])))
        parts = {
            "attn": [n.path for n in layer_nodes if n.block == ATTN],
            "mlp": [n.path for n in layer_nodes if n.block == MLP],
            "norms": [n.path for n in layer_nodes if n.block is None and n.kind == NodeKind.NORM],
            "residual & other": [n.path for n in layer_nodes if n.block is None and n.kind != NodeKind.NORM],
        }
        out.extend(Row(label, add(paths), level=1) for label, paths in parts.items() if paths)
    out.append(Row("total", {m: profile.total(m, "model") for m in metrics}))
    return out


def render(rows: list[Row], exact: bool = False, fmt: str = "text") -> str:
    metrics = list(rows[-1].values)
    header = ["scope", *(M.LABELS[m] for m in metrics)]
    cell = (lambda v: f"{v:,}") if exact else human
    body = [[("  " * r.level) + r.label, *(cell(r.values[m]) for m in metrics)] for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[("  " * r.level) + r.label, *(r.values[m] for m in metrics)] for r in rows])
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(metrics)) + "|"]
        lines += ["| " + " | ".join(c.replace("  ", "&nbsp;&nbsp;") for c in r) + " |" for r in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = [
        "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"
