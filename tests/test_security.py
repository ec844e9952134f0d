"""Security: configs are data, tokens stay secret, and the hub is asked for config.json only.

- A config whose ``auto_map`` names remote code (and that asks for ``trust_remote_code``) is never executed:
  the code files beside it would write a marker file when imported; profiling it, as a supported
  model_type, an unsupported one, through ``as_family`` and through the reference model of the validation
  path, never writes the marker.
- A token passed in (``hf_token=``, ``--hf-token``) or read from ``HF_TOKEN`` never appears in output,
  logs, errors (their chains and tracebacks included) or JSON, even when the hub client's own error
  message quotes it.
- Hub fetches ask for ``config.json`` and nothing else (no weights, no code, no snapshot).
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

from llm_profiler import ProfilerError, get_profile, load_config, profile, profile_model
from llm_profiler.config import find_preset, read_preset
from llm_profiler.errors import HubError, UnknownModelTypeError

hub = pytest.importorskip("huggingface_hub")

LLAMA_TINY = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "hidden_act": "silu",
}
EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("remote code ran")
raise SystemExit("remote code ran")
"""


def _token(prefix: str = "hf_") -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(34))


# --- remote code is never executed --------------------------------------------------------------------


@pytest.fixture
def evil_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A model folder whose config points at code that writes a marker when imported."""
    folder = tmp_path / "evil-model"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    for module in ("configuration_evil", "modeling_evil", "tokenization_evil", "__init__"):
        (folder / f"{module}.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = {
        **LLAMA_TINY,
        "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModel": "modeling_evil.EvilModel",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
            "AutoTokenizer": ["tokenization_evil.EvilTokenizer", None],
        },
        "trust_remote_code": True,
        "custom_pipelines": {"text-generation": {"impl": "modeling_evil.Pipeline"}},
        "architectures": ["EvilForCausalLM"],
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def _write_config(folder: Path, **changes: Any) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_payload_is_live(evil_folder: tuple[Path, Path]) -> None:
    # Without this, a marker that never appears would prove nothing.
    import subprocess

    folder, marker = evil_folder
    subprocess.run([sys.executable, "-c", "import configuration_evil"], cwd=folder, capture_output=True)
    assert marker.exists()


def test_auto_map_of_a_supported_type_is_not_executed(evil_folder: tuple[Path, Path]) -> None:
    folder, marker = evil_folder
    prof = profile(folder, batch=2, seq=3)
    assert prof.total("params", "model") > 0
    prof = profile(str(folder / "config.json"), batch=1, seq=1, past=4)
    assert prof.total("flops") > 0
    assert not marker.exists()
    assert not any(name.endswith("_evil") for name in sys.modules)


def test_auto_map_of_an_unsupported_type_is_not_executed(evil_folder: tuple[Path, Path]) -> None:
    folder, marker = evil_folder
    _write_config(folder, model_type="evil")
    with pytest.raises(UnknownModelTypeError, match="'evil'"):
        profile(folder, batch=2, seq=3)
    # Profiled as a known family instead: still data only.
    assert profile(folder, batch=2, seq=3, as_family="llama").total("macs") > 0
    assert not marker.exists()


def test_code_like_strings_in_fields_are_never_evaluated(evil_folder: tuple[Path, Path]) -> None:
    folder, marker = evil_folder
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    for field in ("hidden_act", "model_type"):
        _write_config(folder, **{**LLAMA_TINY, field: payload})
        with pytest.raises(ProfilerError):
            profile(folder, batch=1, seq=1)
    assert not marker.exists()


def test_bundled_preset_with_auto_map_is_data_only() -> None:
    # DeepSeek-V3's real config.json names remote code in auto_map.
    data = read_preset(find_preset("deepseek-v3"))
    assert "auto_map" in data
    assert profile_model("deepseek-v3").spec.num_layers == data["num_hidden_layers"]


@pytest.mark.validation
def test_validation_reference_model_does_not_run_remote_code(evil_folder: tuple[Path, Path]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from llm_profiler.validation import validate

    folder, marker = evil_folder
    report = validate(folder, 1, 2, 0, tiny=True)
    assert report.rows
    assert not marker.exists()


# --- tokens stay secret --------------------------------------------------------------------------------


class _Unauthorized(Exception):
    """Stands in for the hub client's HTTP error; its message quotes the token, as careless clients do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.response = type("Response", (), {"status_code": 401})()


def _leaky_download(token_seen: list[Any]) -> Any:
    def download(repo_id: str, filename: str, **kwargs: Any) -> str:
        token_seen.append(kwargs.get("token"))
        raise _Unauthorized(f"401 Client Error for {repo_id}/{filename} (Authorization: Bearer {kwargs.get('token')})")

    return download


def _all_text(err: BaseException) -> str:
    parts = ["".join(traceback.format_exception(type(err), err, err.__traceback__)), repr(err)]
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        parts += [str(link), repr(link), repr(getattr(link, "args", ()))]
        link = link.__cause__ or link.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("token", [_token(), _token("secret-")], ids=["hf_token", "other_token"])
@pytest.mark.parametrize("how", ["argument", "env"])
def test_token_never_leaks_from_a_failed_fetch(token: str, how: str, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(hub, "hf_hub_download", _leaky_download(seen))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    kwargs: dict[str, Any] = {}
    if how == "env":
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        kwargs["hf_token"] = token
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubError) as info:
        load_config("some-org/gated-model", **kwargs)
    with pytest.raises(HubError) as info2:
        profile_model("some-org/gated-model", **kwargs)
    with pytest.raises(HubError) as info3:
        get_profile({"model_config": "some-org/gated-model", "input_shape": [1, 1]}, "flops")
    assert seen and all(t == token for t in seen[:2])  # the token was used for the request
    for err in (info.value, info2.value, info3.value):
        assert "gated or private" in str(err)
        assert token not in _all_text(err)
    out = capsys.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in out.out + out.err + logs


def test_token_never_in_results_or_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    token = _token()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(LLAMA_TINY))
    monkeypatch.setattr(hub, "hf_hub_download", lambda repo_id, filename, **kw: str(config))
    monkeypatch.setenv("HF_TOKEN", token)
    cfg = load_config("some-org/tiny-llama")
    prof = profile_model("some-org/tiny-llama", hf_token=token).at(2, 3)
    texts = [repr(cfg), cfg.model_dump_json(), json.dumps(cfg.data), prof.result().model_dump_json(),
             prof.table(), repr(prof.spec)]
    get_profile({"model_config": "some-org/tiny-llama", "input_shape": [2, 3]}, "flops")
    texts.append(capsys.readouterr().out)
    assert all(token not in text for text in texts)


def test_cli_never_prints_the_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    cli = pytest.importorskip("llm_profiler.cli")
    token = _token()
    monkeypatch.setattr(hub, "hf_hub_download", _leaky_download([]))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code = cli.main(["profile", "some-org/gated-model", "--hf-token", token])
    out = capsys.readouterr()
    assert code != 0
    assert token not in out.out + out.err
    assert "some-org/gated-model" in out.err


# --- config.json only ----------------------------------------------------------------------------------


def test_hub_fetch_asks_for_config_json_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAMA_TINY, "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    requests: list[tuple[str, str, dict[str, Any]]] = []

    def download(repo_id: str, filename: str, **kwargs: Any) -> str:
        requests.append((repo_id, filename, kwargs))
        return str(config)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"unexpected hub call {args} {kwargs}")

    monkeypatch.setattr(hub, "hf_hub_download", download)
    for name in ("snapshot_download", "hf_hub_url", "list_repo_files", "model_info"):
        monkeypatch.setattr(hub, name, forbidden, raising=False)
    profile("org-a/model-one", batch=2, seq=3).total("flops")
    profile_model("org-b/model-two", revision="v1.0").at(1, 1).summary()
    get_profile({"model_config": "org-c/model-three", "input_shape": [1, 4], "past_length": 2}, "macs", quiet=True)
    assert [(r, f) for r, f, _ in requests] == [("org-a/model-one", "config.json"), ("org-b/model-two", "config.json"),
                                              ("org-c/model-three", "config.json")]
    assert requests[1][2].get("revision") == "v1.0"
