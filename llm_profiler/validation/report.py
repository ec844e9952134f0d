"""The validation report: plain pydantic data (no torch needed to read, print or serialise it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..report.units import human


class ValidationRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    module: str  # module path ("" is the root model); "<layer prefix>N (cache)" for a layer's KV cache
    metric: str
    predicted: int
    measured: int

    @property
    def diff(self) -> int:
        return self.predicted - self.measured

    @property
    def ok(self) -> bool:
        return self.predicted == self.measured


class ValidationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    model: str
    model_type: str
    batch: int
    seq: int
    past: int
    device: str  # "meta" (full size) or "cpu" (tiny dimensions, real random weights)
    tiny: bool
    attn_implementation: str = "eager"
    transformers_version: str
    torch_version: str
    rows: list[ValidationRow]
    unknown_ops: list[str]  # "module: aten op (calls)": never counted in silence
    data_ops: list[str]  # ops that do no arithmetic (views, copies, creation), with their call counts

    @property
    def mismatches(self) -> list[ValidationRow]:
        return [r for r in self.rows if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unknown_ops

    def summary_line(self) -> str:
        verdict = "EXACT" if self.ok else "MISMATCH"
        size = "tiny, cpu" if self.tiny else "full size, meta"
        return (f"{verdict}: {self.model} ({self.model_type}, {size}) B={self.batch} S={self.seq} P={self.past}: "
                f"{len(self.rows) - len(self.mismatches)}/{len(self.rows)} module x metric values agree, "
                f"{len(self.unknown_ops)} unknown ops")

    def table(self, all_rows: bool = False, exact: bool = True) -> str:
        rows = self.rows if all_rows else self.mismatches
        cell = (lambda v: f"{v:,}") if exact else human
        body = [[r.module or "(root)", r.metric, cell(r.predicted), cell(r.measured), cell(r.diff)] for r in rows]
        header = ["module", "metric", "predicted", "measured", "difference"]
        lines = [self.summary_line()]
        if body:
            widths = [max(len(x) for x in col) for col in zip(header, *body)]
            for i, line in enumerate([header, *body]):
                lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
                if i == 0:
                    lines.append("  ".join("-" * w for w in widths))
        for op in self.unknown_ops:
            lines.append(f"unknown op (not counted): {op}")
        return "\n".join(lines) + "\n"
