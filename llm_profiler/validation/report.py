"""The validation report: plain pydantic data (no torch needed to read, print or serialise it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ..report.units import human


class ValidationRow(BaseModel):
    """One (node, metric): the graph's count against the measured one.

    ``node`` is a graph node path (``model.layers.0.self_attn:scores``), or a path no node has when the
    measurement found computation there that the graph does not predict; for the ``cache``,
    ``cache[<kind>]`` and ``cache_growth`` rows it is the layer's first cache node. ``module`` is the module whose forward runs it.
    """

    model_config = ConfigDict(frozen=True)

    node: str
    module: str  # module path ("" is the root model)
    metric: str
    predicted: int
    measured: int

    @model_validator(mode="before")
    @classmethod
    def _node_defaults_to_module(cls, data: Any) -> Any:
        """A row given only a module (schema 1) is the row of that module's own node."""
        if isinstance(data, dict):
            if "node" not in data and "module" in data:
                data = {**data, "node": data["module"]}
            if "module" not in data and "node" in data:
                data = {**data, "module": str(data["node"]).split(":", 1)[0]}
        return data

    @property
    def is_cache(self) -> bool:
        """A per-layer cache row (``cache``, ``cache[<kind>]``, ``cache_growth``), not a node's own count."""
        return self.metric.startswith("cache")

    @property
    def diff(self) -> int:
        return self.predicted - self.measured

    @property
    def ok(self) -> bool:
        return self.predicted == self.measured


class ValidationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    # 2: rows per graph node (``node``; ``module`` is the node's module), ``cache_growth`` rows, and
    # ``unattributed_ops``
    schema_version: int = 2
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
    # "module: aten op in function (file:line) (calls)": own ops of a module with several part nodes that no
    # rule of validation.parts names; they are counted on the module path, which no node predicts
    unattributed_ops: list[str] = []

    @property
    def mismatches(self) -> list[ValidationRow]:
        return [r for r in self.rows if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unknown_ops and not self.unattributed_ops

    def by_module(self) -> dict[str, dict[str, tuple[int, int]]]:
        """module -> metric -> (predicted, measured), the node rows summed per module (cache rows apart)."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for r in self.rows:
            if r.is_cache:
                continue
            p, m = out.setdefault(r.module, {}).get(r.metric, (0, 0))
            out[r.module][r.metric] = (p + r.predicted, m + r.measured)
        return out

    def summary_line(self) -> str:
        verdict = "EXACT" if self.ok else "MISMATCH"
        size = "tiny, cpu" if self.tiny else "full size, meta"
        if self.attn_implementation != "eager":
            size += f", {self.attn_implementation}"
        nodes = len({r.node for r in self.rows if not r.is_cache})
        unattributed = f", {len(self.unattributed_ops)} unattributed ops" if self.unattributed_ops else ""
        return (f"{verdict}: {self.model} ({self.model_type}, {size}) B={self.batch} S={self.seq} P={self.past}: "
                f"{len(self.rows) - len(self.mismatches)}/{len(self.rows)} node x metric values agree "
                f"({nodes} nodes), {len(self.unknown_ops)} unknown ops{unattributed}")

    def table(self, all_rows: bool = False, exact: bool = True) -> str:
        rows = self.rows if all_rows else self.mismatches
        cell = (lambda v: f"{v:,}") if exact else human
        body = [[r.node or "(root)", r.metric, cell(r.predicted), cell(r.measured), cell(r.diff)] for r in rows]
        header = ["node", "metric", "predicted", "measured", "difference"]
        lines = [self.summary_line()]
        if body:
            widths = [max(len(x) for x in col) for col in zip(header, *body)]
            for i, line in enumerate([header, *body]):
                lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))))
                if i == 0:
                    lines.append("  ".join("-" * w for w in widths))
        for op in self.unknown_ops:
            lines.append(f"unknown op (not counted): {op}")
        for op in self.unattributed_ops:
            lines.append(f"unattributed op (no part of its module): {op}")
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
