"""The layer graph: nodes at the module paths of the transformers implementation, carrying sympy formulas."""

from .node import Graph, Node, NodeKind

__all__ = ["Graph", "Node", "NodeKind"]
