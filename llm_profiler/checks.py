"""Argument validators for the public entry points: pure functions that return the checked value or raise a
``ProfilerError`` subclass naming the argument and what is allowed.

Every size a request can grow with is bounded here, before any work starts (the limits are module constants,
documented in docs/cli.md and docs/api.md):

- ``MAX_GRID_POINTS``: values of one CLI value list or layer list, and points of a sweep (the product of its
  axes, counted before anything is expanded);
- ``MAX_SWEEP_POINTS``: elements of the broadcast arrays of ``ModelProfile.sweep`` / ``compiled``;
- ``MAX_NEW_TOKENS``: tokens of one ``generate`` phase (evaluated per token);
- ``MAX_PATH_LENGTH``, ``MAX_DTYPE_NAME_LENGTH``, ``MAX_NAME_LENGTH``, ``MAX_TOKEN_LENGTH``: string arguments.

This module is a leaf: it imports only the standard library, ``errors`` and (lazily) numpy, so any module
may call it without an import cycle.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ArgumentError, ConfigError, LimitError, QueryError, ShapeError

MAX_GRID_POINTS = 1_000_000  # one value list, one layer list, the points of one CLI sweep
MAX_SWEEP_POINTS = 10_000_000  # elements of ModelProfile.sweep's broadcast arrays (int64: 80 MB each)
MAX_NEW_TOKENS = 1_000_000  # a generation is evaluated per token: 1e6 tokens take ~1 s and ~300 MB
MAX_INT = 2**63 - 1  # no tensor dimension is larger; and a 4300+ digit number cannot even be printed
MAX_PATH_LENGTH = 4096  # PATH_MAX on Linux; a hub repo id is at most 96 characters
MAX_DTYPE_NAME_LENGTH = 64
MAX_NAME_LENGTH = 100  # a model_type (as_family) or a hub revision name
MAX_TOKEN_LENGTH = 1024
DTYPE_EXAMPLES = "fp32, bf16, fp16, fp8, int8, int4, int4-g<N>"


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a 5,000-character argument is named, not echoed)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**limit:
        return f"a {value.bit_length()}-bit integer"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__})"


# --- numbers -----------------------------------------------------------------------------------------------


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = MAX_INT,
              error: type[ArgumentError] | type[ShapeError] = ArgumentError) -> int:
    """An integer (Python or numpy; not a bool, float or string) within ``[minimum, maximum]``."""
    if isinstance(value, bool):
        raise error(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise error(f"{name} must be an integer, got {type(value).__name__} {short(value)}") from None
    if minimum is not None and number < minimum:
        raise error(f"{name} must be >= {minimum}, got {short(number)}")
    if maximum is not None and number > maximum:
        limit = "2**63 - 1" if maximum == MAX_INT else f"{maximum:,}"
        raise error(f"{name} must be <= {limit}, got {short(number)}")
    return number


def check_float(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                min_open: bool = False, max_open: bool = False, unit: str = "") -> float:
    """A finite real number (int, float, numpy scalar; not a bool or string) in the given interval;
    ``min_open`` / ``max_open`` exclude the bounds."""
    interval = _interval(minimum, maximum, min_open, max_open)
    where = f" in {interval}" if interval[:1] in "[(" and interval else f" {interval}" if interval else ""
    allowed = f"a finite number{f' ({unit})' if unit else ''}{where}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be {allowed}, got {type(value).__name__} {short(value)}")
    try:
        number = float(value)
    except (OverflowError, ValueError):  # an int past 1.8e308
        raise ArgumentError(f"{name} must be {allowed}, got {short(value)}") from None
    if not math.isfinite(number):
        raise ArgumentError(f"{name} must be {allowed}, got {number!r}")
    too_low = minimum is not None and (number <= minimum if min_open else number < minimum)
    too_high = maximum is not None and (number >= maximum if max_open else number > maximum)
    if too_low or too_high:
        raise ArgumentError(f"{name} must be {allowed}, got {number!r}")
    return number


def _interval(minimum: float | None, maximum: float | None, min_open: bool, max_open: bool) -> str:
    if minimum is None and maximum is None:
        return ""
    if maximum is None:
        return f"{'>' if min_open else '>='} {minimum:g}"
    if minimum is None:
        return f"{'<' if max_open else '<='} {maximum:g}"
    return f"{'(' if min_open else '['}{minimum:g}, {maximum:g}{')' if max_open else ']'}"


def check_new_tokens(value: Any, name: str = "new_tokens", maximum: int = MAX_NEW_TOKENS) -> int:
    """Tokens of a generation: an integer in ``[1, MAX_NEW_TOKENS]`` (a generation is evaluated per token)."""
    number = check_int(value, name, minimum=1, maximum=None, error=ShapeError)
    if number > maximum:
        raise LimitError(f"{name} = {short(number)} asks for that many decode steps; at most {maximum:,} "
                         f"tokens are generated in one phase (MAX_NEW_TOKENS)")
    return number


def check_grid(axes: Mapping[str, int], limit: int = MAX_GRID_POINTS, what: str = "the sweep") -> int:
    """The number of points of a grid, the product of its axes' lengths, refused past ``limit``."""
    total = math.prod(axes.values())
    if total > limit:
        parts = " x ".join(f"{n:,} {axis}" for axis, n in axes.items())
        raise LimitError(f"{what} asks for {total:,} points ({parts} values); the limit is {limit:,} "
                         f"(MAX_GRID_POINTS): narrow a range or take a larger step")
    return total


# --- shapes as arrays (ModelProfile.sweep and compiled) -------------------------------------------------


_SHAPE_MINIMUM = {"batch": 1, "seq": 1, "past": 0}


def check_shape_arrays(batch: Any, seq: Any, past: Any, *, limit: int = MAX_SWEEP_POINTS,
                       where: str = "sweep") -> tuple[Any, Any, Any]:
    """``batch``, ``seq`` and ``past`` as int64 numpy arrays that broadcast together to at most ``limit``
    elements, every value an integer >= 1 (``past`` >= 0) and < 2**63."""
    import numpy as np

    arrays = []
    for name, value in (("batch", batch), ("seq", seq), ("past", past)):
        if isinstance(value, (str, bytes)) or value is None:
            raise ShapeError(f"{where}: {name} must be an integer or an array of integers, got {short(value)}")
        try:
            a = np.asarray(value)
        except (ValueError, TypeError) as err:  # ragged nested lists
            raise ShapeError(f"{where}: {name} must be an integer or an array of integers ({err})") from None
        if a.dtype == object:  # Python ints past int64, or mixed objects
            items = [check_int(x, f"{where}: {name}", minimum=_SHAPE_MINIMUM[name], error=ShapeError)
                     for x in a.ravel()[:limit + 1]]
            a = np.asarray(items, dtype=np.int64).reshape(a.shape) if len(items) == a.size else a
        elif a.dtype.kind == "b" or a.dtype.kind not in "iu":
            raise ShapeError(f"{where}: {name} must hold integers, got dtype {a.dtype}")
        elif a.dtype.kind == "u" and a.size and a.max() > MAX_INT:
            raise ShapeError(f"{where}: {name} must hold integers below 2**63")
        if a.size > limit:
            raise LimitError(f"{where}: {name} has {a.size:,} values; the limit is {limit:,} (MAX_SWEEP_POINTS)")
        a = a.astype(np.int64)
        if a.size and a.min() < _SHAPE_MINIMUM[name]:
            raise ShapeError(f"{where}: {name} must be >= {_SHAPE_MINIMUM[name]} everywhere, got {int(a.min())}")
        arrays.append(a)
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(_SHAPE_MINIMUM, arrays))
        raise ShapeError(f"{where}: batch, seq and past must broadcast together (numpy rules: equal lengths, "
                         f"or length 1, or scalars), got shapes {shapes}; for every combination pass "
                         f"e.g. batch=[[1], [2]], seq=[1, 2, 3]") from None
    if math.prod(shape) > limit:
        raise LimitError(f"{where}: batch, seq and past broadcast to {math.prod(shape):,} points {shape}; "
                         f"the limit is {limit:,} (MAX_SWEEP_POINTS)")
    return arrays[0], arrays[1], arrays[2]


def check_compiled_args(batch: Any, seq: Any, past: Any = 0) -> tuple[Any, Any, Any]:
    """Arguments of a ``ModelProfile.compiled`` function: three integers (as ``count`` takes them), or
    integer arrays (as ``sweep`` takes them)."""
    if any(isinstance(x, (list, tuple)) or hasattr(x, "__array__") and getattr(x, "ndim", 0) > 0
           for x in (batch, seq, past)):
        return check_shape_arrays(batch, seq, past, where="compiled")
    return (check_int(batch, "batch", minimum=1, error=ShapeError),
            check_int(seq, "seq", minimum=1, error=ShapeError),
            check_int(past, "past", minimum=0, error=ShapeError))


# --- queries -----------------------------------------------------------------------------------------------


def check_metric_list(metrics: Any, name: str = "metrics") -> list[str]:
    """One metric name or a non-empty iterable of them (names are checked by ``metrics.canonical``)."""
    if isinstance(metrics, str):
        return [metrics]
    if metrics is None or isinstance(metrics, (bytes, Mapping)) or not isinstance(metrics, Iterable):
        raise ArgumentError(f"{name} must be a metric name or a list of them (e.g. ['flops', 'params']), "
                            f"got {type(metrics).__name__} {short(metrics)}")
    out = list(metrics)
    if not out:
        raise ArgumentError(f"{name} must name at least one metric (e.g. ['flops', 'params'])")
    bad = next((m for m in out if not isinstance(m, str)), None)
    if bad is not None:
        raise ArgumentError(f"{name}: every metric must be a name (a string), got {type(bad).__name__} {short(bad)}")
    return out


def check_layers(layers: Any, n_layers: int, name: str = "layers") -> list[int] | None:
    """``None`` (every layer), one layer index, or an iterable of indices in ``0 .. n_layers - 1``
    (duplicates dropped, order kept)."""
    if layers is None:
        return None
    if isinstance(layers, (str, bytes, Mapping)) or not (isinstance(layers, Iterable) or _is_int(layers)):
        raise ArgumentError(f"{name} must be None, a layer index or a list of layer indices (e.g. [0, 1]), "
                            f"got {type(layers).__name__} {short(layers)}")
    out: dict[int, None] = {}
    for i, value in enumerate([layers] if _is_int(layers) else layers):
        if i >= MAX_GRID_POINTS:
            raise LimitError(f"{name} has more than {MAX_GRID_POINTS:,} entries (MAX_GRID_POINTS)")
        index = check_int(value, f"{name}[{i}]", minimum=None, maximum=None)
        if not 0 <= index < n_layers:
            raise QueryError(f"{name}: no layer {short(index)}; the model has layers 0..{n_layers - 1}")
        out[index] = None
    return list(out)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_table_args(metrics: Any, exact: Any, fmt: Any, layers: Any, n_layers: int,
                     formats: Sequence[str] = ("text", "markdown", "csv")) -> tuple[list[str], bool, str, list[int] | None]:
    """The arguments of ``Profile.table``: metrics, exact (a bool), fmt (one of ``formats``), layers."""
    checked = check_metric_list(metrics)
    if not isinstance(exact, bool):
        raise ArgumentError(f"exact must be True or False, got {type(exact).__name__} {short(exact)}")
    if not isinstance(fmt, str) or fmt not in formats:
        raise ArgumentError(f"fmt must be one of {', '.join(formats)}, got {short(fmt)}")
    return checked, exact, fmt, check_layers(layers, n_layers)


def layer_set(value: Any, field: str, n_layers: int | None = None) -> frozenset[int]:
    """A config's list of layer indices (e.g. ``mlp_only_layers``) as a frozenset, for O(1) membership:
    a list of integers (not bools); entries past ``n_layers`` are allowed and simply never match."""
    if not isinstance(value, (list, tuple)) or any(isinstance(i, bool) or not isinstance(i, int) for i in value):
        raise ConfigError(f"config field {field!r} must be a list of layer indices (integers), got {short(value)}")
    return frozenset(value)


# --- strings -----------------------------------------------------------------------------------------------


def check_as_family(value: Any, name: str = "as_family") -> str | None:
    """``None`` or a model_type name (a non-empty string of at most ``MAX_NAME_LENGTH`` characters)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a model_type name such as 'llama' (a string) or None, "
                            f"got {type(value).__name__} {short(value)}")
    if not value.strip() or len(value) > MAX_NAME_LENGTH or not value.isprintable():
        raise ArgumentError(f"{name} must be a model_type name such as 'llama' (1 to {MAX_NAME_LENGTH} printable "
                            f"characters), got {short(value)}")
    return value


def check_hf_token(value: Any, name: str = "hf_token (--hf-token)") -> str | None:
    """``None`` (or ``""``: no token) or a Hugging Face token: printable ASCII, no whitespace, at most
    ``MAX_TOKEN_LENGTH`` characters. The message names the argument and never shows the token."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a string (a Hugging Face access token, hf_...) or None, "
                            f"got a {type(value).__name__}")
    if len(value) > MAX_TOKEN_LENGTH:
        raise ArgumentError(f"{name} is {len(value):,} characters long; a Hugging Face token is at most "
                            f"{MAX_TOKEN_LENGTH} (the token is not shown)")
    for position, char in enumerate(value):
        if char.isspace():
            kind = "whitespace"
        elif not char.isascii():
            kind = "a non-ASCII character"
        elif not char.isprintable():
            kind = "a control character"
        else:
            continue
        raise ArgumentError(f"{name} is not a valid token: it has {kind} at position {position} (a Hugging Face "
                            f"token is printable ASCII without spaces, like hf_...; the token is not shown)")
    return value


def check_revision(value: Any, name: str = "revision") -> str | None:
    """``None`` or a hub revision (branch, tag or commit): 1 to 255 printable characters, no whitespace."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a branch, tag or commit name (a string) or None, "
                            f"got {type(value).__name__} {short(value)}")
    if not value or len(value) > 255 or any(c.isspace() or not c.isprintable() for c in value):
        raise ArgumentError(f"{name} must be a branch, tag or commit name (1 to 255 printable characters, "
                            f"no whitespace), got {short(value)}")
    return value


def check_source_name(name: str) -> str:
    """A config source given by name (path, preset, hub id): at most ``MAX_PATH_LENGTH`` characters."""
    if len(name) > MAX_PATH_LENGTH:
        raise ConfigError(f"config source {short(name)} is too long: a path has at most {MAX_PATH_LENGTH} "
                          f"characters and a hub repo id at most 96")
    return name


def check_dtype_name(value: Any, name: str = "dtype") -> str:
    """A dtype name (e.g. ``bf16``, ``torch.float16``, ``int4-g64``): a string of at most
    ``MAX_DTYPE_NAME_LENGTH`` characters. Whether it is a known dtype is ``hardware.get_dtype``'s call."""
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a dtype name ({DTYPE_EXAMPLES}), got {type(value).__name__} "
                            f"{short(value)}")
    if len(value) > MAX_DTYPE_NAME_LENGTH:
        raise ArgumentError(f"{name} must be a dtype name ({DTYPE_EXAMPLES}) of at most {MAX_DTYPE_NAME_LENGTH} "
                            f"characters, got {short(value, 20)}")
    return value
