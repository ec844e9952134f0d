"""Writers for results: JSON (pydantic), CSV and Markdown tables, and symbolic export of formulas.

Tables come in three formats: ``text`` (aligned with spaces, safe to copy-paste), ``markdown`` and ``csv``
(always exact integers). ``exact=True`` prints every count in full with thousands separators; otherwise
counts are in human units (K, M, G, T, P; powers of 1000).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .. import metrics as M
from ..errors import QueryError
from ..results import (
    CompareResult,
    LayerRow,
    PerLayerResult,
    PresetList,
    ProfileResult,
    SweepResult,
)
from .units import human

if TYPE_CHECKING:
    import sympy

    from ..profile import Profile

FORMATS = ("text", "markdown", "csv", "json")
EXPORT_FORMATS = ("text", "sympy", "latex", "python")


def to_json(result: BaseModel) -> str:
    """Indented JSON of any result model (round-trips through ``type(result).model_validate_json``)."""
    return result.model_dump_json(indent=2) + "\n"


def cell(value: Any, exact: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if exact else human(value)
    return str(value)


def render_table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "text", exact: bool = False,
                 left: int = 1) -> str:
    """A table in ``fmt``; the first ``left`` columns are left-aligned text, the others right-aligned numbers.

    CSV cells keep the raw values (exact integers); text and Markdown cells go through ``cell``.
    """
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buf.getvalue()
    body = [[cell(v, exact) for v in row] for row in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
        return "\n".join(lines) + "\n"
    if fmt != "text":
        raise QueryError(f"unknown table format {fmt!r}; valid: text, markdown, csv")
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
             for line in [list(header), *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


# --- profile ---------------------------------------------------------------------------------------------
def summary_table(result: ProfileResult, fmt: str = "text", exact: bool = False) -> str:
    """The totals of one scope as a table (scope, metric, value): the scope named on every row."""
    rows = [[result.scope, M.LABELS[m], v] for m, v in result.totals.items()]
    return render_table(["scope", "metric", "value"], rows, fmt, exact, left=2)


def per_layer_result(profile: Profile, metrics: Sequence[str] = M.SUMMARY,
                     layers: Sequence[int] | None = None) -> PerLayerResult:
    """The rows of ``Profile.table`` as data: embed, each layer and its parts, final norm, lm_head, total."""
    from .table import breakdown_rows

    names = [M.canonical(m) for m in metrics]
    rows = breakdown_rows(profile, names, layers)
    spec = profile.spec
    return PerLayerResult(
        model=spec.name, model_type=spec.model_type, family=spec.family, batch=profile.batch, seq=profile.seq,
        past=profile.past, metrics=names, rows=[LayerRow(label=r.label, level=r.level, values=r.values) for r in rows],
        notes=list(spec.notes),
    )


# --- compare ---------------------------------------------------------------------------------------------
def ratio(left: int, right: int) -> float | None:
    return None if left == 0 else right / left


def compare_result(left: ProfileResult, right: ProfileResult) -> CompareResult:
    return CompareResult(left=left, right=right,
                         ratios={m: ratio(v, right.totals[m]) for m, v in left.totals.items()})


def shape_label(result: ProfileResult) -> str:
    return f"B={result.batch} S={result.seq} P={result.past}"


def compare_labels(result: CompareResult) -> tuple[str, str]:
    """Column titles: the model names, or the shapes when both sides are the same model."""
    left, right = result.left, result.right
    if left.model == right.model:
        return shape_label(left), shape_label(right)
    if (left.batch, left.seq, left.past) == (right.batch, right.seq, right.past):
        return left.model, right.model
    return f"{left.model} ({shape_label(left)})", f"{right.model} ({shape_label(right)})"


def compare_table(result: CompareResult, fmt: str = "text", exact: bool = False) -> str:
    a, b = compare_labels(result)
    rows = [[M.LABELS[m], v, result.right.totals[m], result.ratios[m]]
            for m, v in result.left.totals.items()]
    return render_table(["metric", a, b, "ratio"], rows, fmt, exact)


# --- sweep -----------------------------------------------------------------------------------------------
def sweep_table(result: SweepResult, fmt: str = "csv", exact: bool = False) -> str:
    rows = [[p.batch, p.seq, p.past, *(p.values[m] for m in result.metrics)] for p in result.points]
    return render_table(["batch", "seq", "past", *result.metrics], rows, fmt, exact, left=0)


# --- presets ---------------------------------------------------------------------------------------------
def presets_table(result: PresetList, fmt: str = "text", exact: bool = False) -> str:
    rows = [[p.alias, p.hub_id, p.model_type, p.params, p.published_params] for p in result.presets]
    return render_table(["alias", "hub id", "model_type", "params", "published"], rows, fmt, exact, left=3)


# --- symbolic export -------------------------------------------------------------------------------------
def structured(expr: sympy.Expr) -> sympy.Expr:
    """The formula expanded, then collected by powers of S (new tokens) with each coefficient collected by
    B: the quadratic attention term stands apart from the per-token (linear) term and the constants."""
    import sympy  # symbolic export only: sympy stays off the numeric path

    from ..symbols import B, S

    return sympy.collect(sympy.expand(expr), S, func=lambda c: sympy.collect(c, B))


def s_powers(expr: sympy.Expr) -> list[tuple[str, sympy.Expr]]:
    """(label, coefficient) by descending power of S; terms where S hides inside Min/Max are kept whole."""
    import sympy  # symbolic export only: sympy stays off the numeric path

    from ..symbols import B, S

    parts = sympy.collect(sympy.expand(expr), S, evaluate=False)
    out: list[tuple[int, str, sympy.Expr]] = []
    for key, coeff in parts.items():
        power = sympy.degree(key, S) if key != 1 else 0
        label = "S inside Min/Max" if power == 0 and S in coeff.free_symbols else f"S**{power}"
        out.append((power, label, sympy.collect(coeff, B)))
    return [(label, coeff) for _, label, coeff in sorted(out, key=lambda t: -t[0])]


def python_source(expr: sympy.Expr, name: str, doc: str) -> str:
    """A self-contained Python function computing the count exactly on ints."""
    import sympy  # symbolic export only: sympy stays off the numeric path


    body = sympy.expand(expr)
    # Rational coefficients would print as float division: scale to integers and divide exactly at the end.
    denominator = sympy.ilcm(1, *(r.q for r in body.atoms(sympy.Rational)))
    code = sympy.pycode(structured(body * denominator), fully_qualified_modules=False)
    if denominator != 1:
        code = f"({code}) // {denominator}"
    return (f"def {name}(B: int, S: int, P: int = 0) -> int:\n"
            f'    """{doc}"""\n'
            f"    return {code}\n")


def export_expr(expr: sympy.Expr, fmt: str = "text", *, metric: str = "flops", scope: str = "transformer",
                model: str = "") -> str:
    """The formula of ``metric`` in ``scope`` as ``text`` (by powers of S), ``sympy``, ``latex`` or ``python``."""
    import sympy

    form = structured(expr)
    if fmt == "sympy":
        return f"{form}\n"
    if fmt == "latex":
        return sympy.latex(form) + "\n"
    label = M.LABELS.get(metric, metric)
    what = f"{label} of {scope} of {model}" if model else f"{label} of {scope}"
    if fmt == "python":
        ident = "".join(ch if ch.isalnum() else "_" for ch in f"{metric}_{scope}").strip("_")
        return python_source(expr, ident, f"{what}: exact, B batch, S new tokens, P cached tokens.")
    if fmt != "text":
        raise QueryError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    lines = [f"{what}", "(B batch, S new tokens per sequence, P tokens already cached)", "",
             f"  = {form}", "", "by powers of S:"]
    terms = s_powers(expr)
    width = max((len(label) for label, _ in terms), default=1)
    lines += [f"  {label.rjust(width)} : {coeff}" for label, coeff in terms]
    return "\n".join(lines) + "\n"


__all__ = [
    "EXPORT_FORMATS", "FORMATS", "compare_result", "compare_table", "export_expr", "per_layer_result",
    "presets_table", "python_source", "render_table", "s_powers", "structured", "summary_table", "sweep_table",
    "to_json",
]
