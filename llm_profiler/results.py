"""What the profiler hands back, as pydantic models with a stable JSON schema."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ProfileResult(BaseModel):
    """Totals of one scope of one model at one shape (``schema_version`` bumps on breaking changes)."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    model: str
    model_type: str
    family: str
    batch: int
    seq: int
    past: int
    scope: str
    totals: dict[str, int]
    notes: list[str] = []
