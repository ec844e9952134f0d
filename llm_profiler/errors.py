"""The project's one error family: every user-facing failure is a ``ProfilerError`` with a message that says what to do."""

from __future__ import annotations


class ProfilerError(Exception):
    """Base class of every error llm_profiler raises on purpose."""


class ConfigError(ProfilerError, ValueError):
    """A config that is malformed, incomplete or not understood (names the field)."""


class UnknownModelTypeError(ConfigError):
    """A ``model_type`` that no registered family handles (lists the supported ones)."""


class HubError(ProfilerError):
    """The Hugging Face hub could not be reached, or refused the request (gated/private repo)."""


class ShapeError(ProfilerError, ValueError):
    """A batch / sequence / past length that is not a positive (or, for past, non-negative) integer."""


class QueryError(ProfilerError, ValueError):
    """An unknown metric (attr), scope, phase or option in a query (lists the valid ones)."""


class ValidationUnavailableError(ProfilerError, ImportError):
    """The validation extra (torch + transformers) is not installed."""


class ArgumentError(QueryError, TypeError):
    """An argument of a public function (or a CLI option) of the wrong type or with a value that is not
    allowed: names the argument and says what is allowed. A ``QueryError``; also a ``TypeError``."""


class LimitError(QueryError):
    """A request past a documented size limit (sweep points, value lists, generated tokens, name lengths):
    says how much was asked and what the limit is."""


class ValidationBuildError(ProfilerError):
    """``validate`` could not build or run the reference model: transformers (or torch) refused the config or
    the shape. Names the config field when it can be found, and says what to do; never a mismatch report."""
