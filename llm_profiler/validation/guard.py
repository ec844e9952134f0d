"""How ``validate`` fails: sizes checked before anything is built, library errors turned into one clear error.

- ``check_size``: the tiny (CPU) run's memory is estimated from the profile's own counts before the model is
  built, ``4 bytes x (params + ACT_FACTOR x act + cache)`` at float32, with ``act`` the larger of the counted
  forward's and the prefill's (``act`` is every computing op's output, all of them, so it bounds the live
  activations; the factor covers the copies it leaves out: repeat_kv's clone, the cache ``cat``, the mask).
  Past ``TINY_MEMORY_LIMIT`` it raises ``LimitError``. Full size runs on the meta device and allocates
  nothing, but every tensor's element count is an int64: a forward whose ``act`` passes ``META_ACT_LIMIT``
  is refused too (torch would overflow a size).
- ``refusing(stage, config, retry)``: a context in which any exception but a ``ProfilerError`` (transformers'
  config checks, torch's shape checks, an AttributeError deep in transformers, ...) becomes
  ``ValidationBuildError`` that says who refused (transformers or torch, with the version), what was being
  done, the config field, and what to do. The field is the one the message (or its cause) names, else the one
  on the innermost transformers source line that raised, else (``retry``: the failed step again, on the meta
  device) the first field without which the step succeeds, searched one field at a time for at most
  ``BLAME_SECONDS``.
"""

from __future__ import annotations

import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import metrics as M
from ..errors import LimitError, ProfilerError, ValidationBuildError

TINY_MEMORY_LIMIT = 4 * 2**30  # bytes a tiny (CPU) validation run may be estimated to need
ACT_FACTOR = 2  # activations x this factor in that estimate (module docstring)
META_ACT_LIMIT = 2**60  # activation elements of a full-size (meta device) forward: int64 sizes, with margin
MAX_MESSAGE = 400  # characters of the library's own message quoted
BLAME_SECONDS = 5.0  # time the search for the field (retries without one field at a time) may take

# config keys too generic to name as "the field" when found in a source line
_GENERIC = {"model_type", "architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
            "name", "type"}
# transformers renames some fields while reading a config: the message names its field, the user wrote ours
_RENAMED = {"rope_parameters": ("rope_scaling", "rope_theta", "rope_parameters")}


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def check_size(profile: Any, batch: int, seq: int, past: int, *, tiny: bool) -> None:
    """Refuse a shape the reference run cannot hold (tiny) or torch cannot size (full size on meta)."""
    act = profile.count(M.ACT, "model", batch, seq, past)
    if past:
        act = max(act, profile.count(M.ACT, "model", batch, past, 0))  # the uncounted prefill
    shape = f"batch {batch}, seq {seq}, past {past}"
    if not tiny:
        if act > META_ACT_LIMIT:
            raise LimitError(
                f"validate at full size with {shape}: the forward writes {act:,} activation elements, past the "
                f"limit of 2**60 (torch sizes are int64); use a smaller batch / seq / past")
        return
    params = profile.count(M.PARAMS, "model")
    cache = profile.count(M.CACHE, "model", batch, seq, past)
    need = 4 * (params + ACT_FACTOR * act + cache)
    if need > TINY_MEMORY_LIMIT:
        raise LimitError(
            f"validate --tiny with {shape} would need about {_gib(need)} of CPU memory (float32: weights "
            f"{_gib(4 * params)} + {ACT_FACTOR} x activations {_gib(4 * act)} + KV cache {_gib(4 * cache)}), past "
            f"the limit of {_gib(TINY_MEMORY_LIMIT)}; use a smaller batch / seq / past (the counts of any shape "
            "come from `profile`, validation needs only small shapes)")


def _keys(config: dict[str, Any]) -> list[str]:
    return sorted((k for k in config if isinstance(k, str) and k not in _GENERIC), key=len, reverse=True)


def _mentions(text: str, key: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", text) is not None


def find_field(err: BaseException, config: dict[str, Any]) -> str | None:
    """The config field an error is about: named in its message (or its causes'), else on the innermost
    transformers source line that raised it."""
    keys = _keys(config)
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain and len(chain) < 5:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        text = str(e)
        for key in keys:
            if _mentions(text, key):
                return key
        for theirs, ours in _RENAMED.items():
            if _mentions(text, theirs):
                return next((k for k in ours if k in config), theirs)
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if "/transformers/" not in frame.filename.replace("\\", "/"):
            continue
        line = frame.line or ""
        for key in keys:
            if _mentions(line, key):
                return key
    return None


_blaming = False  # set while blame() retries, so that the retries do not search in turn


def blame(config: dict[str, Any], retry: Callable[[dict[str, Any]], Any]) -> str | None:
    """The first config field without which ``retry`` (the failed step, rebuilt on the meta device) succeeds,
    trying one field at a time for at most ``BLAME_SECONDS``; None when no single field is the cause."""
    global _blaming
    if _blaming:
        return None
    import transformers

    _blaming = True
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the retries' warnings are not the user's
    try:
        deadline = time.monotonic() + BLAME_SECONDS
        for key in [k for k in config if k not in _GENERIC]:
            if time.monotonic() > deadline:
                return None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    retry({k: v for k, v in config.items() if k != key})
            except Exception:  # still failing (or failing otherwise): not this field alone
                continue
            return key
        return None
    finally:
        transformers.logging.set_verbosity(verbosity)
        _blaming = False


def _who(err: BaseException) -> str:
    """Which library raised it (the innermost frame's package), with its version."""
    import torch
    import transformers

    frames = traceback.extract_tb(err.__traceback__)
    files = [f.filename.replace("\\", "/") for f in frames]
    by_transformers = any("/transformers/" in f or "/huggingface_hub/" in f for f in files)
    if files and "/torch/" in files[-1]:
        called = f", called by transformers {transformers.__version__}" if by_transformers else ""
        return f"torch {torch.__version__}{called}"
    return f"transformers {transformers.__version__}"


def _one_line(err: BaseException) -> str:
    try:
        text = " ".join(str(err).split()) or type(err).__name__
    except Exception:  # an exception whose __str__ fails
        text = type(err).__name__
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def build_error(err: BaseException, stage: str, config: dict[str, Any],
                retry: Callable[[dict[str, Any]], Any] | None = None) -> ValidationBuildError:
    """The one error for ``err`` raised while ``stage`` (e.g. "building the model"); ``retry`` re-runs the
    failed step on a config, to find the field by elimination when the message names none."""
    field = find_field(err, config)
    how = ""
    if field is None and retry is not None:
        field = blame(config, retry)
        how = ", the one without which it builds and runs" if field else ""
    where = f" (config field {field!r}{how})" if field else ""
    if field:
        advice = (f"fix or remove {field!r} in the config (the model's transformers configuration class says what "
                  "it allows)")
    else:
        advice = "check the config against the model's transformers configuration class"
    return ValidationBuildError(
        f"validate could not run the reference model: {_who(err)} refused the config{where} while {stage}: "
        f"{_one_line(err)}; {advice}. The counts themselves (`profile`) do not need transformers; only validate "
        "builds the real model")


@contextmanager
def refusing(stage: str, config: dict[str, Any],
             retry: Callable[[dict[str, Any]], Any] | None = None) -> Iterator[None]:
    """Turn any exception but a ``ProfilerError`` raised inside into a ``ValidationBuildError``."""
    try:
        yield
    except ProfilerError:
        raise
    except Exception as err:  # transformers and torch raise anything: ValueError, KeyError, RuntimeError, ...
        raise build_error(err, stage, config, retry) from err


__all__ = ["ACT_FACTOR", "BLAME_SECONDS", "META_ACT_LIMIT", "TINY_MEMORY_LIMIT", "blame", "build_error", "check_size",
           "find_field", "refusing"]
