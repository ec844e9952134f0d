"""Validation (optional extra ``llm-profiler[validate]``): measure the real transformers model and compare.

``ValidationReport`` is torch-free; ``validate`` needs torch and transformers and imports them lazily.
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationUnavailableError
from .report import ValidationReport, ValidationRow


def validate(config: Any, batch: int = 1, seq: int = 8, past: int = 0, **kwargs: Any) -> ValidationReport:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise ValidationUnavailableError(
            f"validation needs torch and transformers ({err.name} is missing): "
            "pip install 'llm-profiler[validate]' (on CPU: pip install torch==2.13.0 first)"
        ) from None
    from .compare import validate as _validate

    return _validate(config, batch, seq, past, **kwargs)


__all__ = ["ValidationReport", "ValidationRow", "validate"]
