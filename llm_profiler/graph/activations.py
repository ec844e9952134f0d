"""Hugging Face activation names -> the aten ops their transformers module runs, one op-table op each.

Several transformers activations are Python expressions (NewGELUActivation, FastGELUActivation,
Bloom's gelu, ...): each aten op they run is a separate pass that writes a full tensor, so each is
counted on its own (``act`` included) rather than as one fused op. The sequences below were read off
the aten ops the modules dispatch (transformers 5.23), in order.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import Formula
from ..ops import Counts

# name -> op of llm_profiler.ops.ELEMENTWISE per aten op the module runs, in order
HF_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    # one aten op each
    "silu": ("silu",), "swish": ("silu",), "relu": ("relu",), "gelu": ("gelu",),
    "gelu_pytorch_tanh": ("gelu_tanh",), "sigmoid": ("sigmoid",), "tanh": ("tanh",),
    # NewGELUActivation: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))):
    #   0.5*x, x**3 (pow 3: 2 MULT), *0.044715, x + _, *sqrt(2/pi), tanh, 1 + _, (0.5*x) * _
    "gelu_new": ("mul", "cube", "mul", "add", "mul", "tanh", "add", "mul"),
    "gelu_python_tanh": ("mul", "cube", "mul", "add", "mul", "tanh", "add", "mul"),  # x * 0.5 * (...): same ops
    "gelu_accurate": ("mul", "cube", "mul", "add", "mul", "tanh", "add", "mul"),
    # FastGELUActivation: 0.5 * x * (1 + tanh(x * 0.7978845608 * (1 + 0.044715 * x * x))):
    #   0.5*x, x*c, 0.044715*x, _*x, 1 + _, (x*c) * _, tanh, 1 + _, (0.5*x) * _
    "gelu_fast": ("mul", "mul", "mul", "mul", "add", "mul", "tanh", "add", "mul"),
    # Bloom's bloom_gelu_forward: x * 0.5 * (1 + tanh(0.79788456 * x * (1 + 0.044715 * x * x))): the same 9 ops
    "bloom_gelu": ("mul", "mul", "mul", "mul", "add", "mul", "tanh", "add", "mul"),
    # QuickGELUActivation: x * sigmoid(1.702 * x)
    "quick_gelu": ("mul", "sigmoid", "mul"),
    # GELUActivation(use_gelu_python): x * 0.5 * (1 + erf(x / sqrt(2)))
    "gelu_python": ("mul", "div", "erf", "add", "mul"),
    # ReLUSquaredActivation: relu(x) ** 2
    "relu2": ("relu", "square"),
}


def supported() -> list[str]:
    return sorted(HF_ACTIVATIONS)


def activation_counts(name: str, n: Formula) -> Counts:
    """Counts of the activation ``name`` over n elements: the sum of its aten ops, each writing n."""
    return ops.total(ops.elementwise(op, n) for op in HF_ACTIVATIONS[name])


def read_activation(fields: Any, *names: str, default: str) -> str:
    """The activation name of a config (a ``families.fields.Fields``), checked against the table."""
    name = fields.str(*names, default=default)
    if name not in HF_ACTIVATIONS:
        raise ConfigError(
            f"{fields.model_type} config field {names[0]!r} = {name!r} is not a supported activation; "
            f"supported: {', '.join(supported())}"
        )
    return name
