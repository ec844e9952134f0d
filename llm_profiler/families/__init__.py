"""Registry of model families keyed by ``model_type``; family modules in this package register themselves."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownModelTypeError
from ..spec import ArchSpec
from .base import Family

_REGISTRY: dict[str, Family] = {}
_LOADED = False
_NOT_FAMILIES = {"base", "fields", "template"}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: register one instance of the family for each of its model_types."""
    family = cls()
    for model_type in cls.model_types:
        if model_type in _REGISTRY:
            raise RuntimeError(f"model_type {model_type!r} registered twice")
        _REGISTRY[model_type] = family
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_FAMILIES and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _LOADED = True


_MODEL_TYPES = re.compile(r"^\s+model_types\s*=\s*\(([^)]*)\)", re.M)


@cache
def _index() -> dict[str, str]:
    """model_type -> family module, read from each module's ``model_types = (...)`` line without importing
    it: a profile imports only its own family (the registry still comes from the @register decorators)."""
    out: dict[str, str] = {}
    folder = Path(__file__).parent
    for module in pkgutil.iter_modules(__path__):
        if module.name in _NOT_FAMILIES or module.name.startswith("_"):
            continue
        text = (folder / f"{module.name}.py").read_text(encoding="utf-8")
        for group in _MODEL_TYPES.findall(text):
            for model_type in re.findall(r"[\"']([^\"']+)[\"']", group):
                out.setdefault(model_type, module.name)
    return out


def _known(model_type: str) -> bool:
    return model_type in _REGISTRY or model_type in _index()


def is_supported(model_type: str) -> bool:
    """Whether a family is registered for ``model_type``."""
    return _known(model_type)


def supported_model_types() -> list[str]:
    return sorted(set(_index()) | set(_REGISTRY))


def get_family(model_type: str) -> Family:
    if model_type not in _REGISTRY and model_type in _index():
        importlib.import_module(f"{__name__}.{_index()[model_type]}")
    if model_type not in _REGISTRY:  # a module whose model_types line the index could not read
        _load_all()
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnknownModelTypeError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(supported_model_types())}. "
            "If the model is architecturally one of these, profile it as that family with "
            "as_family='<model_type>' (CLI: --as-family). A config whose 'architectures' names a supported class "
            "(e.g. DeepseekV3ForCausalLM) is profiled as that class's model type."
        ) from None


@cache
def _architectures() -> dict[str, list[str]]:
    """Architecture class -> its model types, as transformers' auto mappings list them (data/architectures.json,
    written by scripts/architectures_table.py)."""
    path = Path(__file__).parent / "data" / "architectures.json"
    classes: dict[str, list[str]] = json.loads(path.read_text(encoding="utf-8"))["classes"]
    return classes


def model_type_of_architecture(data: dict[str, Any]) -> tuple[str, str] | None:
    """(class, model type) for a config whose ``architectures`` names a class of a supported model type, else
    None. A class serving a text and a multimodal model type picks by the config's shape (``text_config``)."""
    archs = data.get("architectures")
    if not isinstance(archs, list):
        return None
    multimodal = isinstance(data.get("text_config"), dict)
    for cls in archs:
        if not isinstance(cls, str):
            continue
        known = [t for t in _architectures().get(cls, []) if _known(t)]
        if known:
            known.sort(key=lambda t: (t.endswith("_text") == multimodal, t))
            return cls, known[0]
    return None


def resolve(data: dict[str, Any], as_family: str | None = None) -> tuple[Family, dict[str, Any], tuple[str, ...]]:
    """The family for a raw config, the dict it reads, and notes for the user.

    A multimodal config whose own model_type is not registered but which holds a ``text_config`` is
    profiled through its language model.
    """
    notes: tuple[str, ...] = ()
    if as_family is not None:
        family = get_family(as_family)
        return family, {**data, "model_type": as_family}, (f"profiled as model_type {as_family!r} (as_family)",)
    model_type = data.get("model_type")
    if model_type is None:
        raise ConfigError(
            "config has no 'model_type' field; add it (e.g. \"model_type\": \"llama\") or pass as_family=..."
        )
    if not isinstance(model_type, str):
        raise ConfigError(f"config field 'model_type' must be a string, got {model_type!r}")
    if not _known(model_type) and isinstance(data.get("text_config"), dict):
        text = dict(data["text_config"])
        text_type = text.get("model_type")
        if isinstance(text_type, str) and _known(text_type):
            notes = (f"multimodal {model_type!r} config: profiling its language model ({text_type!r}) only",)
            return get_family(text_type), text, notes
    if not _known(model_type):
        by_class = model_type_of_architecture(data)
        if by_class is not None:
            cls, known_type = by_class
            notes = (f"model_type {model_type!r} is not a supported model type; profiled as {known_type!r}, the model "
                     f"type of its declared architecture {cls} (no remote code is run)",)
            return get_family(known_type), {**data, "model_type": known_type}, notes
        archs = data.get("architectures")
        if isinstance(archs, list) and archs:
            raise UnknownModelTypeError(
                f"unsupported model_type {model_type!r}, and its architectures {archs} name no supported class; "
                f"supported model types: {', '.join(supported_model_types())}. If the model is architecturally "
                "one of these, profile it as that family with as_family='<model_type>' (CLI: --as-family).")
    return get_family(model_type), data, notes


def build_spec(data: dict[str, Any], name: str = "", as_family: str | None = None) -> tuple[Family, ArchSpec]:
    family, fields, notes = resolve(data, as_family)
    try:
        spec = family.spec(fields, name)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{fields.get('model_type')} config is inconsistent: {_first_line(err)}") from None
    if notes:
        spec = spec.model_copy(update={"notes": spec.notes + notes})
    return family, spec


def _first_line(err: Exception) -> str:
    text = str(err)
    errors = getattr(err, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}".strip(": ")
        except Exception:  # pragma: no cover - pydantic detail formats vary
            pass
    return text.splitlines()[0]


__all__ = ["Family", "build_spec", "get_family", "is_supported", "model_type_of_architecture", "register", "resolve",
           "supported_model_types"]
