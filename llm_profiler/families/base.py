"""The Family interface: the only code that knows a config's quirks."""

from __future__ import annotations

from typing import Any, ClassVar

from ..graph import Graph
from ..spec import ArchSpec


class Family:
    """Turns raw configs of some ``model_type``s into an ArchSpec, and an ArchSpec into a Graph."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    # Where the decoder layers live in the transformers module tree (e.g. "model.layers.").
    layer_prefix: ClassVar[str] = "model.layers."

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        raise NotImplementedError

    def graph(self, spec: ArchSpec) -> Graph:
        raise NotImplementedError

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """The config dict transformers builds the reference model from (its ``model_type`` included)."""
        return dict(data)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        """The same architecture at tiny dimensions, for real CPU runs with random weights."""
        raise NotImplementedError
