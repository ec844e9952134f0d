"""The config loading layer: presets, files, folders, dicts, PretrainedConfig duck types and the hub."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import errors as hub_errors

from llm_profiler.config import ModelConfig, find_preset, list_presets, load_config
from llm_profiler.config.presets import read_preset
from llm_profiler.errors import ConfigError, HubError, ProfilerError

PRESET_DIR = Path(__file__).resolve().parents[1] / "llm_profiler" / "presets"
SHARED_CONFIGS = Path("/work/shared/hf-configs")
SECRET = "hf_SuperSecretTokenValue0123456789"
TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128}


@pytest.fixture(autouse=True)
def _no_ambient_hub_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own token or offline setting must not change what these tests see.
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)


# --- presets -------------------------------------------------------------------------------------------


def test_preset_table_covers_every_bundled_file() -> None:
    bundled = {p.name for p in PRESET_DIR.glob("*.json")}
    assert {p.filename for p in list_presets()} == bundled
    assert len(bundled) == 52  # 33 of the first families, 19 of the 2025-26 ones


@pytest.mark.skipif(not SHARED_CONFIGS.is_dir(), reason="shared reference copies not present")
def test_bundled_files_are_unchanged_copies() -> None:
    """A preset from the shared reference copies is that file byte for byte; one found elsewhere (e.g. VaultGemma's
    gated file, reconstructed from its mirrors) has its source in docs/presets.md's table."""
    sources = (Path(__file__).parent.parent / "docs" / "presets.md").read_text()
    for preset in list_presets():
        shared = SHARED_CONFIGS / preset.filename
        if shared.exists():
            assert (PRESET_DIR / preset.filename).read_bytes() == shared.read_bytes()
        else:
            assert f"| `{preset.alias}` | `{preset.hub_id}` |" in sources, preset.alias


@pytest.mark.parametrize("preset", list_presets(), ids=lambda p: p.alias)
def test_every_preset_loads_by_hub_id_and_alias(preset: Any) -> None:
    by_id = load_config(preset.hub_id)
    for name in (preset.alias, preset.alias.upper(), preset.hub_id.lower(), preset.hub_id.upper()):
        assert load_config(name) == by_id
    assert by_id.origin == "preset"
    assert by_id.name == preset.hub_id
    assert isinstance(by_id.model_type, str)
    assert by_id.data == json.loads((PRESET_DIR / preset.filename).read_text())
    assert preset.published_params is not None and preset.published_params > 0
    assert preset.reconstructed == preset.filename.endswith(".reconstructed.json")
    assert preset.hub_id.count("/") == 1 and ".reconstructed" not in preset.hub_id
    assert preset.alias == preset.alias.lower()


def test_preset_names_are_unique() -> None:
    aliases = [p.alias for p in list_presets()]
    hub_ids = [p.hub_id.lower() for p in list_presets()]
    assert len(set(aliases)) == len(aliases)
    assert len(set(hub_ids)) == len(hub_ids)


@pytest.mark.parametrize(
    ("name", "hub_id", "model_type"),
    [
        ("llama-2-7b", "meta-llama/Llama-2-7b-hf", "llama"),
        ("Llama-3.2-1B", "meta-llama/Llama-3.2-1B", "llama"),
        ("meta-llama-3-8b", "meta-llama/Meta-Llama-3-8B", "llama"),
        ("MIXTRAL-8x7B", "mistralai/Mixtral-8x7B-v0.1", "mixtral"),
        ("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", "qwen3_moe"),
        ("gpt2", "openai-community/gpt2", "gpt2"),
        ("gemma-3-27b", "google/gemma-3-27b-pt", "gemma3"),
        ("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct", "phi3"),
        ("chatglm-6b", "THUDM/chatglm-6b", "chatglm"),
        ("deepseek-v3", "deepseek-ai/DeepSeek-V3", "deepseek_v3"),
        ("bloom-560m", "bigscience/bloom-560m", "bloom"),
        ("Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf", "llama"),  # the bare repo name resolves too
    ],
)
def test_known_aliases(name: str, hub_id: str, model_type: str) -> None:
    preset = find_preset(name)
    assert preset is not None and preset.hub_id == hub_id
    assert load_config(name).model_type == model_type


def test_preset_values_are_the_published_ones() -> None:
    llama = load_config("meta-llama/Llama-2-7b-hf")
    assert llama.data["hidden_size"] == 4096
    assert llama.data["num_hidden_layers"] == 32
    assert llama.data["intermediate_size"] == 11008
    assert load_config("mistral-7b").data["sliding_window"] == 4096
    assert load_config("gpt2").data["n_embd"] == 768
    assert load_config("bloom-560m").data["n_embed"] == 1024
    assert load_config("gemma-3-27b").data["text_config"]["num_hidden_layers"] == 62
    assert find_preset("llama-2-7b").published_params == 6_738_415_616  # type: ignore[union-attr]
    assert find_preset("chatglm-6b").published_params == 6_173_286_400  # type: ignore[union-attr]
    assert find_preset("deepseek-v3").published_params == 671_026_404_352  # type: ignore[union-attr]
    assert find_preset("falcon-7b").reconstructed and not find_preset("gpt2").reconstructed  # type: ignore[union-attr]


def test_find_preset_unknown_is_none() -> None:
    assert find_preset("no-such-model") is None


def test_read_preset_returns_a_fresh_dict() -> None:
    preset = find_preset("gpt2")
    assert preset is not None
    first = read_preset(preset)
    first["n_embd"] = 1
    assert read_preset(preset)["n_embd"] == 768


# --- files, folders, dicts, PretrainedConfig -------------------------------------------------------------


def test_file_path_str_and_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "my-config.json"
    path.write_text(json.dumps(TINY_LLAMA))
    for source in (str(path), path):
        config = load_config(source)
        assert config.origin == "file"
        assert config.name == str(path)
        assert config.data == TINY_LLAMA
        assert config.model_type == "llama"


def test_directory_reads_its_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    config = load_config(tmp_path)
    assert config.origin == "file"
    assert config.name == str(tmp_path / "config.json")
    assert config.data["hidden_size"] == 64


def test_directory_wins_over_a_hub_id_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "myorg" / "mymodel"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _must_not_be_called)
    assert load_config("myorg/mymodel").origin == "file"


def test_directory_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="has no config.json"):
        load_config(tmp_path)


def test_dict_is_copied() -> None:
    source = {"model_type": "llama", "rope_scaling": {"factor": 8.0}, "eos_token_id": (1, 2)}
    config = load_config(source)
    assert isinstance(config, ModelConfig)
    assert config.origin == "dict" and config.name == "<dict>"
    source["rope_scaling"]["factor"] = 1.0
    assert config.data["rope_scaling"]["factor"] == 8.0
    assert config.data["eos_token_id"] == [1, 2]  # plain JSON data, as config.json would hold it


def test_model_config_is_returned_as_is() -> None:
    config = load_config("gpt2")
    assert load_config(config) is config


def test_model_config_is_frozen_and_its_repr_is_short() -> None:
    config = load_config("deepseek-v3")
    with pytest.raises(ValueError):
        config.name = "other"  # type: ignore[misc]
    assert "hidden_size" not in repr(config)
    assert "deepseek-ai/DeepSeek-V3" in repr(config)


def test_model_type_may_be_missing() -> None:
    assert load_config({"hidden_size": 8}).model_type is None


class FakeDtype:
    def __str__(self) -> str:
        return "torch.bfloat16"


class FakePretrainedConfig:
    """What load_config needs from a transformers.PretrainedConfig, without transformers."""

    model_type = "mistral"

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **self.fields}


def test_pretrained_config_by_duck_typing() -> None:
    config = load_config(FakePretrainedConfig(hidden_size=32, torch_dtype=FakeDtype()))
    assert config.origin == "pretrained"
    assert config.name == "<PretrainedConfig>"
    assert config.data == {"model_type": "mistral", "hidden_size": 32, "torch_dtype": "bfloat16"}


def test_config_modules_import_nothing_heavy() -> None:
    # Only the standard library, pydantic and our own modules at import time; huggingface_hub only lazily.
    allowed = {"__future__", "difflib", "json", "os", "re", "pathlib", "typing", "dataclasses", "functools"}
    allowed |= {"contextlib", "logging", "collections"}  # the hub's one-retry-line filter (standard library)
    allowed |= {"importlib", "pydantic"}
    for module in ("loader", "presets", "__init__"):
        source = (
            Path(__file__).resolve().parents[1] / "llm_profiler" / "config" / f"{module}.py"
        ).read_text()
        for node in ast.parse(source).body:  # top level only: imports inside functions are lazy
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{module}.py imports {roots - allowed}"


def test_loading_imports_nothing_heavy() -> None:
    code = (
        "import sys; from llm_profiler.config import load_config; before = set(sys.modules); "
        "load_config('llama-2-7b'); load_config({'model_type': 'gpt2'}); "
        "heavy = ('transformers', 'torch', 'sympy', 'huggingface_hub'); "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- malformed input ------------------------------------------------------------------------------------


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message and "column" in message


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(path)


@pytest.mark.parametrize(
    "model_type", [3, 3.5, ["llama"], {"name": "llama"}], ids=["int", "float", "list", "dict"]
)
def test_model_type_must_be_a_string(model_type: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_type must be a string"):
        load_config({"model_type": model_type})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ConfigError, match="model_type must be a string"):
        load_config(path)


def test_unknown_name_explains_the_accepted_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _must_not_be_called)
    with pytest.raises(ConfigError) as info:
        load_config("llama-2-7")
    message = str(info.value)
    assert "llm-profiler presets" in message and "llama-2-7b" in message and "hub repo id" in message


@pytest.mark.parametrize(
    "name", ["configs/missing.json", "./models/x", "a/b/c", "bad name/x y", "org/na--me"]
)
def test_missing_paths_and_invalid_ids_never_reach_the_hub(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _must_not_be_called)
    with pytest.raises(ConfigError):
        load_config(name)


def test_unsupported_source_type() -> None:
    with pytest.raises(ConfigError, match="cannot load a config from a int"):
        load_config(42)


def test_errors_belong_to_the_profiler_family(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError):
        load_config(tmp_path)


# --- the hub --------------------------------------------------------------------------------------------


def _must_not_be_called(*args: Any, **kwargs: Any) -> str:
    raise AssertionError("the hub must not be contacted")


def _fake_response(status: int) -> SimpleNamespace:
    # Enough of an HTTP response for huggingface_hub's error classes; keeps the tests off its HTTP library.
    request = SimpleNamespace(url="https://huggingface.co/org/model/resolve/main/config.json", method="HEAD")
    return SimpleNamespace(status_code=status, headers={}, request=request)


def test_hub_fetch_downloads_only_config_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_download(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        path = tmp_path / "config.json"
        path.write_text(json.dumps(TINY_LLAMA))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    config = load_config("some-org/some-model", hf_token=SECRET, revision="v1.0")
    assert config.origin == "hub" and config.name == "some-org/some-model"
    assert config.data == TINY_LLAMA
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert args == ("some-org/some-model", "config.json")
    assert kwargs["token"] == SECRET and kwargs["revision"] == "v1.0"
    assert SECRET not in repr(config) and SECRET not in json.dumps(config.data)


def test_hub_token_defaults_to_hf_token_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        seen.update(kwargs, filename=filename)
        (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
        return str(tmp_path / "config.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    load_config("some-org/some-model")
    assert seen["filename"] == "config.json" and seen["token"] == SECRET


def _write_hub_cache(cache: Path, repo_id: str, data: dict[str, Any], commit: str) -> None:
    # The layout huggingface_hub itself writes: refs name a commit, snapshots hold the files per commit.
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(data))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def test_offline_hub_cache_is_used_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    _write_hub_cache(tmp_path / "hub", "cached-org/cached-model", TINY_LLAMA, commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config("cached-org/cached-model")
    assert config.origin == "hub" and config.data == TINY_LLAMA
    assert load_config("cached-org/cached-model", revision=commit).data == TINY_LLAMA


def test_offline_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as info:
        load_config("cached-org/not-cached", hf_token=SECRET)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "local config.json path or a bundled preset" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "error",
    [
        hub_errors.GatedRepoError(
            f"Access to model org/model is restricted (token {SECRET})", response=_fake_response(403)
        ),
        hub_errors.HfHubHTTPError(f"401 Client Error for token={SECRET}", response=_fake_response(401)),
    ],
    ids=["gated", "http-401"],
)
def test_gated_or_private_repo(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(*args: Any, **kwargs: Any) -> str:
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(HubError) as info:
        load_config("org/model", hf_token=SECRET)
    message = str(info.value)
    assert "the repo is gated or private: pass hf_token= or set HF_TOKEN" in message
    assert "download config.json and pass its path" in message
    _assert_secret_nowhere(info.value)


@pytest.mark.parametrize(
    "error",
    [
        hub_errors.LocalEntryNotFoundError("cannot find the requested files in the local cache"),
        ConnectionError(f"Max retries exceeded (Authorization: Bearer {SECRET})"),
        TimeoutError("read timed out"),
    ],
    ids=["local-entry-not-found", "connection-error", "timeout"],
)
def test_unreachable_hub(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(*args: Any, **kwargs: Any) -> str:
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(HubError) as info:
        load_config("org/model", hf_token=SECRET)
    message = str(info.value)
    assert "the hub is unreachable" in message
    assert "pass a local config.json path or a bundled preset" in message and "llama-2-7b" in message
    _assert_secret_nowhere(info.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            hub_errors.RepositoryNotFoundError("404 repo not found", response=_fake_response(404)),
            "was not found",
        ),
        (
            hub_errors.RevisionNotFoundError("404 revision", response=_fake_response(404)),
            "has no revision 'nope'",
        ),
        (
            hub_errors.RemoteEntryNotFoundError("404 entry", response=_fake_response(404)),
            "has no config.json",
        ),
        (hub_errors.HfHubHTTPError("500 Server Error", response=_fake_response(500)), "HTTP 500"),
    ],
    ids=["repo", "revision", "entry", "server-error"],
)
def test_hub_not_found_and_other_failures(
    error: Exception, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_download(*args: Any, **kwargs: Any) -> str:
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(HubError, match=expected):
        load_config("org/model", revision="nope")


def test_hub_file_that_is_not_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text("not json")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(tmp_path / "config.json"))
    with pytest.raises(ConfigError, match="org/model"):
        load_config("org/model")


def _assert_secret_nowhere(error: BaseException) -> None:
    # The message, the repr and every chained exception a traceback would print.
    seen: BaseException | None = error
    while seen is not None:
        assert SECRET not in str(seen) and SECRET not in repr(seen)
        seen = seen.__cause__ or seen.__context__
    assert SECRET not in repr(error.args)


def test_docs_table_lists_every_preset() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    for preset in list_presets():
        grade = "reconstructed" if preset.reconstructed else "verbatim"
        row = f"| `{preset.alias}` | `{preset.hub_id}` | `{load_config(preset.alias).model_type}` | {grade}"
        assert row in docs
        assert f"{preset.published_params:,}" in docs
