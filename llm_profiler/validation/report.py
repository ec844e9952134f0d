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


class PeakComparison(BaseModel):
    """Measured peak live bytes of one forward against the prediction (``validation.peak``).

    predicted = predicted_activations (``memory.activation_bytes``) + predicted_kv_cache (the cache the
    forward leaves), both at ``act_dtype``; measured = the peak bytes of tensors the forward created and
    held at once (the KV-cache tensors and logits among them, as measured_kv_cache / measured_logits).
    """

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    model: str
    model_type: str
    batch: int
    seq: int
    past: int
    device: str  # "meta" (full size) or "cpu" (tiny dimensions)
    tiny: bool
    act_dtype: str
    predicted: int
    predicted_activations: int
    predicted_kv_cache: int
    measured: int
    measured_kv_cache: int  # KV-cache tensors created by the forward and alive at the peak
    measured_logits: int  # the logits, when alive at the peak
    measured_final: int  # bytes still alive after the forward (its outputs)
    notes: list[str] = []

    @property
    def ratio(self) -> float:
        """predicted / measured (above 1: the prediction is conservative)."""
        return self.predicted / self.measured if self.measured else float("inf")

    def summary_line(self) -> str:
        size = "tiny, cpu" if self.tiny else "full size, meta"
        return (f"peak activations: {self.model} ({self.model_type}, {size}) B={self.batch} S={self.seq} "
                f"P={self.past}, {self.act_dtype}: predicted {self.predicted:,} bytes (activations "
                f"{self.predicted_activations:,} + KV cache {self.predicted_kv_cache:,}), measured "
                f"{self.measured:,} (KV cache {self.measured_kv_cache:,}, logits {self.measured_logits:,}): "
                f"ratio {self.ratio:.3f}")
