"""Turn any config source (file, folder, preset, dict, PretrainedConfig, hub id) into a plain ``ModelConfig``.

On the hot path: only the standard library and pydantic are imported here; huggingface_hub is imported when a
hub fetch actually happens, and transformers never (a PretrainedConfig is recognised by duck typing).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..checks import check_hf_token, check_revision, check_source_name, short
from ..errors import ConfigError, HubError
from .presets import find_preset, list_presets, read_preset

Origin = Literal["preset", "file", "dict", "pretrained", "hub"]

# The hub's own rule for "org/name": letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters.
_REPO_ID = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$"
)
# Hugging Face user access tokens; scrubbed from library messages even when we did not pass them ourselves.
_HF_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{16,}")
_TRUE_ENV_VALUES = {"1", "on", "yes", "true"}
_PRESET_EXAMPLES = ("llama-2-7b", "llama-3.1-8b", "mistral-7b", "qwen3-8b", "gpt2")
# With no network a hub id fails in about this long: one DNS lookup and one TCP connect, no retries. The
# hub client's own backoff (about 23 s) is left for transient HTTP answers (429, 5xx) once the hub answers.
HUB_CONNECT_TIMEOUT_S = 1.5
_HUB_HTTP_LOGGER = "huggingface_hub.utils._http"  # where huggingface_hub logs each retry


class ModelConfig(BaseModel):
    """A model's raw config.json content and where it came from; no validation beyond ``model_type``."""

    model_config = ConfigDict(frozen=True)

    name: str  # preset hub id, file path, hub repo id, or "<dict>" / "<PretrainedConfig>"
    origin: Origin
    data: dict[str, Any] = Field(repr=False)  # a full config would swamp every repr and log line

    @property
    def model_type(self) -> str | None:
        return self.data.get("model_type")


def load_config(source: Any, hf_token: str | None = None, revision: str | None = None) -> ModelConfig:
    """Load a config from a ModelConfig, dict, PretrainedConfig, file, folder, preset name or hub repo id.

    ``hf_token`` (else ``$HF_TOKEN``) and ``revision`` are used only for a hub fetch, which downloads
    config.json and nothing else; both are checked whatever the source (an ``ArgumentError`` names them,
    never showing the token). With no network a hub id fails in about ``HUB_CONNECT_TIMEOUT_S``.
    """
    hf_token = check_hf_token(hf_token)
    revision = check_revision(revision)
    if isinstance(source, ModelConfig):
        return source
    if isinstance(source, dict):
        return _make("<dict>", "dict", _plain_json(source, "<dict>"))
    if _looks_like_pretrained_config(source):
        return _make("<PretrainedConfig>", "pretrained", _plain_json(source.to_dict(), "<PretrainedConfig>"))
    if isinstance(source, (str, os.PathLike)):
        return _load_named(os.fsdecode(source), hf_token=hf_token, revision=revision)
    raise ConfigError(
        f"cannot load a config from a {type(source).__name__}: pass a preset name, a config.json path, "
        "a folder, a hub repo id, a dict or a transformers PretrainedConfig"
    )


def _looks_like_pretrained_config(source: Any) -> bool:
    # Duck typing keeps transformers out of the import graph.
    return callable(getattr(source, "to_dict", None)) and hasattr(source, "model_type")


def _expand_user(name: str) -> Path:
    try:
        return Path(name).expanduser()
    except RuntimeError:  # "~someone/..." with no such user (or no home directory at all)
        user = name[1:].split("/", 1)[0].split(os.sep, 1)[0]
        who = f"no user {user!r}" if user else "no home directory"
        raise ConfigError(f"cannot expand {short(name)}: there is {who}; pass the path without '~'") from None


def _kind(path: Path, name: str) -> str:
    """'file', 'dir' or 'none' (missing); an unusable path is a ConfigError naming it, not an OSError."""
    try:
        return "file" if path.is_file() else "dir" if path.is_dir() else "none"
    except OSError as exc:  # "File name too long", "Permission denied" on a parent, ...
        raise ConfigError(f"cannot use {short(name)} as a config path: {exc.strerror or exc}") from None


def _load_named(name: str, hf_token: str | None, revision: str | None) -> ModelConfig:
    check_source_name(name)
    path = _expand_user(name)
    kind = _kind(path, name)
    if kind == "file":
        return _make(name, "file", _read_json_file(path))
    if kind == "dir":
        config_path = path / "config.json"
        if _kind(config_path, name) != "file":
            raise ConfigError(f"folder {name} has no config.json (a Hugging Face model folder holds one)")
        return _make(str(config_path), "file", _read_json_file(config_path))
    preset = find_preset(name)
    if preset is not None:
        return _make(preset.hub_id, "preset", read_preset(preset))
    if _is_repo_id(name):
        return _make(name, "hub", _fetch_from_hub(name, hf_token=hf_token, revision=revision))
    raise ConfigError(_not_found_message(name))


def _is_repo_id(name: str) -> bool:
    return (
        bool(_REPO_ID.match(name))
        and ".." not in name
        and "--" not in name
        and len(name) <= 96
        and not _is_pathish(name)
    )


def _is_pathish(name: str) -> bool:
    # "configs/foo.json" or "./models/x" is a missing file or folder, not a hub repo id.
    return name.endswith(".json") or name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _not_found_message(name: str) -> str:
    if _is_pathish(name):
        return f"no such file or folder: {name if len(name) <= 200 else short(name, 200)}"
    names = [p.alias for p in list_presets()] + [p.hub_id for p in list_presets()]
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=3, cutoff=0.6) if len(name) < 200 else []
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"{short(name, 200)} is neither an existing file or folder, a bundled preset (e.g. {', '.join(_PRESET_EXAMPLES)}; "
        f"`llm-profiler presets` lists all), nor a Hugging Face hub repo id of the form org/name.{hint}"
    )


def _make(name: str, origin: Origin, data: dict[str, Any]) -> ModelConfig:
    model_type = data.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConfigError(
            f"config {name}: model_type must be a string, got {type(model_type).__name__} {model_type!r}"
        )
    return ModelConfig(name=name, origin=origin, data=data)


def _plain_json(data: Any, name: str) -> dict[str, Any]:
    """A deep copy as plain JSON data (tuples become lists, dtypes strings), so callers cannot alias it."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {name} must be a mapping of field names to values, got {type(data).__name__}"
        )
    try:
        return json.loads(json.dumps(data, default=_json_fallback))
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        fields = [key for key, value in data.items() if not _is_json(value)]
        where = f" (field {', '.join(repr(k) for k in fields)})" if fields else ""
        raise ConfigError(f"config {name} cannot be represented as JSON{where}: {exc}") from None


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, default=_json_fallback)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _json_fallback(value: Any) -> str:
    # torch.dtype and similar enum-likes: "torch.bfloat16" -> "bfloat16", as config.json spells them.
    return str(value).removeprefix("torch.")


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits; absurdly deep nesting
        raise ConfigError(f"config file {path} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, found a {type(data).__name__}")
    return data


def _env_is_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_ENV_VALUES


def _fetch_from_hub(repo_id: str, hf_token: str | None, revision: str | None) -> dict[str, Any]:
    """Download config.json (never weights, never code) of ``repo_id``; the hub's local cache serves offline."""
    import huggingface_hub  # lazily: only a hub fetch pays for it

    token = hf_token or check_hf_token(os.environ.get("HF_TOKEN"), "$HF_TOKEN")
    # Read at call time too: huggingface_hub reads these once, at its own import.
    offline = _env_is_true("HF_HUB_OFFLINE") or _env_is_true("TRANSFORMERS_OFFLINE")
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    endpoint = _hub_endpoint()
    # Fail fast with no network: one lookup and one connect; the local cache may still serve the file.
    unreachable = None if offline else _unreachable_reason(endpoint, HUB_CONNECT_TIMEOUT_S)
    try:
        with _one_retry_line():
            local_path = huggingface_hub.hf_hub_download(
                repo_id,
                "config.json",
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                local_files_only=offline or unreachable is not None,
                endpoint=endpoint,
            )
    except Exception as exc:  # every hub failure becomes one actionable HubError, raised below
        failure: Exception | None = exc
    else:
        failure = None
    if failure is not None:
        message = _hub_failure_message(failure, repo_id, revision, offline, unreachable)
        error = HubError(_scrub(message, token))
        if _chain_mentions_secret(failure, token):
            raise error  # outside the except block: no chained exception carries the token along
        raise error from failure
    try:
        return _read_json_file(Path(local_path))
    except ConfigError as exc:
        raise ConfigError(f"config.json of hub repo {repo_id}: {exc}") from None


def _hub_endpoint() -> str:
    """The hub's base URL: ``$HF_ENDPOINT`` read now (huggingface_hub reads it once, at its import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _unreachable_reason(endpoint: str, timeout: float) -> str | None:
    """``None`` when a TCP connection to the hub (or to the proxy the environment names for it) opens within
    ``timeout`` seconds, else why not: name resolution failed or took too long, or every address refused."""
    import socket
    import threading
    import time
    import urllib.parse
    import urllib.request

    url = urllib.parse.urlsplit(endpoint)
    host, port, what = url.hostname, url.port, "the hub"
    proxies = urllib.request.getproxies_environment()  # what the hub client (httpx) uses too
    proxy = proxies.get(url.scheme) or proxies.get("all")
    bypass = getattr(urllib.request, "proxy_bypass_environment", urllib.request.proxy_bypass)  # not in typeshed
    if proxy and host and not bypass(host):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, what = parsed.hostname, parsed.port, "the proxy"
        url = parsed
    if not host:
        return None  # an endpoint we cannot parse: let the hub client report it
    if port is None:
        port = 443 if url.scheme == "https" else 80
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}

    def resolve() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            found["error"] = exc

    resolver = threading.Thread(target=resolve, daemon=True)  # getaddrinfo itself has no timeout
    resolver.start()
    resolver.join(timeout)
    if resolver.is_alive():
        return f"resolving {host} ({what}) took longer than {timeout:g} s"
    if "error" in found:
        exc = found["error"]
        return f"cannot resolve {host} ({what}): {getattr(exc, 'strerror', None) or exc}"
    last: OSError | None = None
    for family, kind, proto, _, address in found["addresses"]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(remaining)
                sock.connect(address)
            return None
        except OSError as exc:
            last = exc
    if last is None or isinstance(last, TimeoutError):
        return f"no answer from {host}:{port} ({what}) within {timeout:g} s"
    return f"cannot connect to {host}:{port} ({what}): {last.strerror or last}"


class _OneRetryLine(logging.Filter):
    """Lets the first retry warning of huggingface_hub through (marked as such) and drops the others."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg = f"{record.getMessage()} (the hub client retries with backoff; further retries not shown)"
        record.args = ()
        return True


@contextlib.contextmanager
def _one_retry_line() -> Iterator[None]:
    """At most one line on stderr while huggingface_hub retries a transient HTTP answer (429, 5xx)."""
    logger = logging.getLogger(_HUB_HTTP_LOGGER)
    one = _OneRetryLine()
    logger.addFilter(one)
    try:
        yield
    finally:
        logger.removeFilter(one)


def _hub_failure_message(exc: Exception, repo_id: str, revision: str | None, offline: bool,
                         unreachable: str | None = None) -> str:
    from huggingface_hub import errors as hub_errors

    at_revision = f" at revision {revision!r}" if revision else ""
    local_advice = (
        f"pass a local config.json path or a bundled preset: e.g. {', '.join(_PRESET_EXAMPLES)} "
        "(`llm-profiler presets` lists all)"
    )
    status = _http_status(exc)
    if isinstance(exc, hub_errors.GatedRepoError) or status in (401, 403):
        refusal = f"HTTP {status}" if status else "gated"
        return (
            f"hub repo {repo_id} refused access ({refusal}): the repo is gated or private: pass hf_token= "
            "or set HF_TOKEN (with access granted on the hub), or download config.json and pass its path"
        )
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return f"hub repo {repo_id} has no revision {revision!r}: check the branch, tag or commit name"
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return (
            f"hub repo {repo_id} was not found: check the id; if it is private or gated, "
            "pass hf_token= or set HF_TOKEN, or download config.json and pass its path"
        )
    if isinstance(exc, hub_errors.LocalEntryNotFoundError):
        answered = _chain_status(exc)
        reason = ("offline mode is on (HF_HUB_OFFLINE)" if offline
                  else f"the hub is unreachable ({unreachable})" if unreachable
                  else f"the hub answered HTTP {answered} (retried with backoff)" if answered
                  else "the hub is unreachable")
        return (
            f"cannot get config.json of {repo_id}{at_revision}: {reason} and the file is not in the local "
            f"hub cache; {local_advice}"
        )
    if isinstance(exc, hub_errors.EntryNotFoundError):
        return f"hub repo {repo_id}{at_revision} has no config.json (is it a transformers model repo?)"
    if isinstance(exc, hub_errors.HFValidationError):
        return f"{repo_id!r} is not a valid hub repo id or revision: {exc}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or _is_network_error(exc):
        return (
            f"cannot get config.json of {repo_id}: the hub is unreachable ({type(exc).__name__}: {exc}); "
            f"{local_advice}"
        )
    detail = f"HTTP {status}: " if status else ""
    return (
        f"cannot get config.json of {repo_id}{at_revision} from the hub ({detail}{type(exc).__name__}: {exc}); "
        f"download config.json and pass its path, or {local_advice}"
    )


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _chain_status(exc: BaseException) -> int | None:
    """The HTTP status of the first exception in the cause chain that carries a response."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        status = _http_status(cause)
        if status is not None:
            return status
        cause = cause.__cause__ or cause.__context__
    return None


def _is_network_error(exc: BaseException) -> bool:
    # The hub client's HTTP library is an implementation detail; recognise its transport errors by name.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectError", "TimeoutException", "ProxyError", "NetworkError", "TransportError"})


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return _HF_TOKEN_PATTERN.sub("hf_***", text)


def _chain_mentions_secret(exc: BaseException | None, token: str | None) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{exc!s} {exc!r}"
        if (token and token in text) or _HF_TOKEN_PATTERN.search(text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
