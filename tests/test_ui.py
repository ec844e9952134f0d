"""The web explorer (``llm-profiler ui``) and the static report (``ui --html``).

Three layers: the JSON API against the CLI's ``--json`` for the same request (in process, and through the real
server on a free loopback port); the static report's embedded data; and a real headless Chromium (Debian's
``chromium`` driven by Playwright) that loads the page, changes the model and the batch, and reads the numbers
the page shows, which must equal the CLI's JSON. The browser tests skip, saying why, without Chromium or
Playwright (``apt-get install -y chromium``; ``pip install playwright``; never ``playwright install``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_profiler.cli import main
from llm_profiler.config import list_presets, read_preset
from llm_profiler.errors import ConfigError, LimitError, QueryError, ShapeError
from llm_profiler.memory import memory_usage
from llm_profiler.ui import api
from llm_profiler.ui.report import build_html
from llm_profiler.ui.server import STATIC_FILES, ExplorerServer, static_text

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def cli_json(argv: list[str]) -> Any:
    """``llm-profiler ARGV`` in process (the same code path as the installed script), its stdout parsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    assert rc == 0, argv
    return json.loads(out.getvalue())


def shape_args(r: api.ViewRequest) -> list[str]:
    return ["--batch", str(r.batch), "--seq", str(r.seq), "--past", str(r.past)]


def roofline_args(r: api.ViewRequest) -> list[str]:
    args = ["roofline", r.model, "--device", r.device, "--phase", r.phase, *shape_args(r), "--new-tokens",
            str(r.new_tokens), "--lm-head", r.lm_head, "--engine", r.engine, "--weight-dtype", r.weight_dtype,
            "--act-dtype", r.act_dtype, "--nodes", "1", "--json"]
    return args + (["--kv-dtype", r.kv_dtype] if r.kv_dtype else [])


# --- the API equals the CLI ---------------------------------------------------------------------------------
REQUESTS = [
    api.ViewRequest(model="llama-3.2-1b", batch=2, seq=7, past=5),
    api.ViewRequest(model="qwen3-30b-a3b", device="h100", phase="decode", batch=8, seq=1, past=4096,
                    kv_dtype="fp8"),
    api.ViewRequest(model="gpt2", phase="generate", batch=3, seq=64, new_tokens=9, lm_head="last", engine="hf-eager",
                    weight_dtype="int4"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: f"{r.model}-{r.phase}")
def test_api_parts_equal_cli_json(request_: api.ViewRequest) -> None:
    r = request_
    assert api.profile_json(r) == cli_json(["profile", r.model, *shape_args(r), "--json"])
    assert api.layers_json(r) == cli_json(["profile", r.model, *shape_args(r), "--per-layer", "--json"])
    assert api.roofline_json(r) == cli_json(roofline_args(r))
    usage = memory_usage(r.model, r.batch, r.seq, r.context, r.device, weight_dtype=r.weight_dtype,
                         act_dtype=r.act_dtype, kv_dtype=r.kv_dtype, lm_head=r.lm_head, engine=r.engine)
    assert api.memory_json(r) == usage.model_dump(mode="json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", r.model, "--metric", r.metric, "--scope", r.scope]) == 0
    assert api.formula_text(r) == out.getvalue()


def test_api_roofline_has_a_node_per_graph_node_and_generate_has_its_two_phases() -> None:
    from llm_profiler import profile_model

    r = REQUESTS[0]
    nodes = api.roofline_json(r)["nodes"]
    assert [n["path"] for n in nodes] == [n.path for n in profile_model(r.model).nodes]
    gen = api.roofline_json(REQUESTS[2])
    assert gen["nodes"] == [] and gen["prefill"]["seq"] == 64 and gen["decode"]["forwards"] == 9 - 1  # N - 1 steps


def test_view_context_is_the_cache_after_the_last_forward() -> None:
    assert api.ViewRequest(seq=2048, past=100).context == 2148  # prefill: past + seq
    assert api.ViewRequest(phase="decode", seq=1, past=4096).context == 4097  # decode: past + seq
    # generate: the prompt and N - 1 decode forwards fill the cache: 0 + 64 + 9 - 1 = 72
    assert api.ViewRequest(phase="generate", seq=64, new_tokens=9).context == 72


def test_view_request_parses_the_query_and_names_the_bad_field() -> None:
    r = api.ViewRequest.from_query({"model": "gpt2", "batch": "4", "seq": "16", "past": "0", "kv_dtype": "",
                                    "view": "memory"})
    assert (r.model, r.batch, r.seq, r.past, r.kv_dtype) == ("gpt2", 4, 16, 0, None)
    assert api.ViewRequest.from_query(r.query()) == r  # the URL form round-trips
    bad = [({"batch": "0"}, ShapeError, "batch must be >= 1"), ({"seq": "x"}, ShapeError, "seq must be an integer"),
           ({"past": "-1"}, ShapeError, "past must be >= 0"), ({"phase": "train"}, QueryError, "phase must be one of"),
           ({"lm_head": "first"}, QueryError, "lm_head must be"), ({"metric": "gflops"}, QueryError, "gflops"),
           ({"model": ""}, ConfigError, "model:"), ({"model": "x" * 500}, QueryError, "model: at most 200"),
           ({"phase": "generate", "new_tokens": "2000000"}, QueryError, "new_tokens")]
    for query, error, text in bad:
        with pytest.raises(error, match=re.escape(text)):
            api.ViewRequest.from_query(query)


def test_uploads_are_checked_and_bounded() -> None:
    uploads = api.Uploads(limit=2)
    config = read_preset(list_presets()[0])
    key = uploads.add(json.dumps(config).encode())
    assert key.startswith(api.UPLOAD_PREFIX) and uploads.get(key) == config
    assert uploads.add(json.dumps(config, indent=1).encode()) == key  # same content, same key
    for body, text in [(b"{not json", "not valid JSON"), (b"[1, 2]", "'model_type' string"),
                       (b" " * (api.MAX_UPLOAD_BYTES + 1), "at most 1,000,000")]:
        with pytest.raises((ConfigError, LimitError), match=re.escape(text)):
            uploads.add(body)
    uploads.add(b'{"model_type": "a"}')
    uploads.add(b'{"model_type": "b"}')  # the third upload drops the least recently used (the first)
    with pytest.raises(ConfigError, match="upload the config.json again"):
        uploads.get(key)


# --- the server -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[ExplorerServer]:
    srv = ExplorerServer(0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fetch(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_server_answers_the_cli_json_and_serves_the_bundled_page(server: ExplorerServer) -> None:
    r = REQUESTS[0]
    query = "&".join(f"{k}={v}" for k, v in r.query().items())
    status, kind, body = fetch(f"{server.url}api/profile?{query}")
    assert (status, kind) == (200, "application/json")
    assert json.loads(body) == cli_json(["profile", r.model, *shape_args(r), "--json"])
    status, _, body = fetch(f"{server.url}api/view?{query}")
    view = json.loads(body)
    assert view["roofline"] == cli_json(roofline_args(r)) and view["request"] == r.query()
    assert fetch(f"{server.url}api/formula?{query}")[2].decode() == api.formula_text(r)
    status, kind, page = fetch(server.url)
    assert status == 200 and kind.startswith("text/html") and b'src="/static/app.js"' in page
    for name in STATIC_FILES:
        assert fetch(f"{server.url}static/{name}")[2].decode() == static_text(name)
    meta = json.loads(fetch(f"{server.url}api/meta")[2])
    assert {p["alias"] for p in meta["presets"]} == {p.alias for p in list_presets()}
    assert "H100-SXM" in meta["devices"] and meta["phases"] == ["prefill", "decode", "generate"]


def test_server_errors_are_json_with_the_field_named(server: ExplorerServer) -> None:
    status, kind, body = fetch(f"{server.url}api/view?model=gpt2&batch=0")
    assert (status, kind) == (400, "application/json")
    assert json.loads(body) == {"error": "batch must be >= 1, got 0"}
    status, _, body = fetch(f"{server.url}api/profile?model=no-such-model-xyz")
    assert status == 400 and "no-such-model-xyz" in json.loads(body)["error"]
    assert fetch(f"{server.url}api/nothing")[0] == 404
    assert fetch(f"{server.url}static/../api.py")[0] == 404
    # DNS rebinding: a page of another site that resolves to 127.0.0.1 sends its own Host header
    status, _, body = fetch(f"{server.url}api/meta", headers={"Host": "attacker.example:80"})
    assert status == 403 and "Host header" in json.loads(body)["error"]


def test_server_upload_profiles_like_the_cli_on_that_file(server: ExplorerServer, tmp_path: Path) -> None:
    config = read_preset(next(p for p in list_presets() if p.alias == "llama-3.2-1b"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    status, _, body = fetch(f"{server.url}api/upload", body=path.read_bytes(),
                            headers={"Content-Type": "application/json"})
    assert status == 200
    model = json.loads(body)["model"]
    got = json.loads(fetch(f"{server.url}api/profile?model={model}&batch=3&seq=5")[2])
    want = cli_json(["profile", str(path), "--batch", "3", "--seq", "5", "--json"])
    assert got["totals"] == want["totals"] and got["model"] == model  # the name is where it came from
    status, _, body = fetch(f"{server.url}api/upload", body=b"[]")
    assert status == 400 and "model_type" in json.loads(body)["error"]


# --- the static report --------------------------------------------------------------------------------------
def embedded(html: str) -> Any:
    match = re.search(r'<script id="llmp-data" type="application/json">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_static_report_is_one_offline_file_with_the_cli_numbers(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["ui", "--html", str(out), "llama-3.2-1b", "--phase", "decode", "--batch", "4", "--past", "100"]) == 0
    html = out.read_text(encoding="utf-8")
    # nothing to fetch: no external script, style, image or link (the SVG namespace is an identifier only)
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', html)
    assert re.findall(r"https?://[^\s\"'<>]+", html) == ["http://www.w3.org/2000/svg"]
    view = embedded(html)["view"]
    # decode defaults to one new token per step (as `roofline --phase decode`)
    r = api.ViewRequest(model="llama-3.2-1b", phase="decode", batch=4, seq=1, past=100)
    assert view["profile"] == cli_json(["profile", r.model, *shape_args(r), "--json"])
    assert view["layers"] == cli_json(["profile", r.model, *shape_args(r), "--per-layer", "--json"])
    assert view["roofline"] == cli_json(roofline_args(r))
    assert view["memory"]["context"] == 101  # past + seq = 100 + 1


def test_static_report_escapes_its_data_and_needs_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = read_preset(next(p for p in list_presets() if p.alias == "gpt2"))
    folder = tmp_path / "<script>alert(1)<!--&"  # the model's name is its path: it lands in the data and title
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    html = build_html(api.ViewRequest(model=str(folder / "config.json"), seq=8))
    assert html.count("<script") == html.count("</script>") == 2  # the data element and the script, no more
    assert "<!--" not in html and "&lt;script&gt;alert(1)&lt;!--&amp;" in html  # the title, escaped
    assert embedded(html)["view"]["profile"]["model"] == str(folder / "config.json")  # the data, intact
    assert main(["ui", "--html", str(tmp_path / "x.html")]) == 2
    assert "--html needs MODEL" in capsys.readouterr().err


def test_ui_command_serves_the_page_and_prints_its_url() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "llm_profiler", "ui", "gpt2", "--no-browser", "--port", "0",
                             "--batch", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:(\d+)/)\?(\S+)", line)
        assert match is not None, line
        assert match.group(3) == "model=gpt2&batch=2"  # the initial view: what differs from the defaults
        status, _, body = fetch(match.group(1) + "api/profile?" + match.group(3))
        assert status == 200 and json.loads(body)["batch"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_assets_are_bundled_as_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"ui/static/*"' in text
    page = static_text("index.html")
    assert re.findall(r'(?:src|href)="([^"#]+)"', page) == ["/static/app.css", "/static/app.js"]


# --- a real headless browser ------------------------------------------------------------------------------
def _browser_skip_reason() -> str | None:
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; never `playwright install`)"
    return None


browser_test = pytest.mark.skipif(_browser_skip_reason() is not None, reason=_browser_skip_reason() or "")


@pytest.fixture(scope="module")
def ui_url() -> Iterator[str]:
    """``llm-profiler ui --no-browser --port 0`` as a real process; its URL."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "llm_profiler", "ui", "--no-browser", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline())
    assert match is not None
    yield match.group(0)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="llmp-chromium-") as profile_dir:
        context = pw.chromium.launch_persistent_context(profile_dir, executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        yield page
        context.close()
        assert errors == []


def wait_for(page: Any, request: str) -> None:
    """Until the page shows the answer to ``request`` (its API query string)."""
    page.wait_for_function("(want) => document.body.dataset.loading === '0' && "
                           "document.body.dataset.request === want", arg=request, timeout=30_000)


def page_request(**fields: Any) -> str:
    from urllib.parse import urlencode

    values = api.ViewRequest(**fields).query()
    order = ["model", "device", "phase", "engine", "batch", "seq", "past", "new_tokens", "lm_head", "weight_dtype",
             "act_dtype", "kv_dtype", "metric", "scope"]
    return urlencode([(k, values[k]) for k in order if k in values])


def integer(text: str) -> int:
    return int(text.replace(",", "").replace(" B", ""))


@browser_test
def test_browser_numbers_equal_the_cli_after_changing_model_and_batch(ui_url: str, browser_page: Any) -> None:
    page = browser_page
    page.goto(ui_url)
    wait_for(page, page_request())  # the defaults: llama-3.1-8b, batch 1, seq 2048
    page.fill("#model", "llama-2-7b")
    page.dispatch_event("#model", "change")
    page.fill("#batch", "16")  # a typed value; the slider moves to log2(16) = 4
    wait_for(page, page_request(model="llama-2-7b", batch=16))
    assert page.input_value("#batch-range") == "4"
    assert "model=llama-2-7b" in page.url and "batch=16" in page.url  # the state is in the URL

    # the summary: exact integers, as `profile --json` (scope transformer)
    want = json.loads(subprocess.run([sys.executable, "-m", "llm_profiler", "profile", "llama-2-7b", "--batch", "16",
                                      "--seq", "2048", "--json"], capture_output=True, text=True, check=True,
                                     cwd=ROOT).stdout)
    shown = {c.get_attribute("data-metric"): integer(c.inner_text())
             for c in page.query_selector_all("#summary-table td[data-metric]")}
    assert shown == want["totals"]

    # the per-layer table with exact integers, row by row as `profile --per-layer --json`
    page.check("#exact")
    layers = cli_json(["profile", "llama-2-7b", "--batch", "16", "--seq", "2048", "--per-layer", "--json"])
    rows = page.query_selector_all("#layer-table tr[data-label]")
    assert [r.get_attribute("data-label") for r in rows] == [r["label"] for r in layers["rows"]]
    for row, data in zip(rows, layers["rows"]):
        cells = [integer(c.inner_text()) for c in row.query_selector_all("td.num")]
        assert cells == [data["values"][m] for m in layers["metrics"]], data["label"]
    # one stacked bar per top row but the total (embed, ..., 32 layers, norm, lm_head), a segment per part
    tops = [r for r in layers["rows"] if r["level"] == 0 and r["label"] != "total"]
    bars = page.query_selector_all("#layer-svg g.bar")
    assert [b.get_attribute("data-label") for b in bars] == [r["label"] for r in tops]
    assert [int(b.get_attribute("data-total")) for b in bars] == [r["values"]["flops"] for r in tops]

    # the roofline: the totals and one point per node with FLOPs and bytes, as `roofline --json`
    page.click("#tabs button[data-view=roofline]")
    roof = cli_json(roofline_args(api.ViewRequest(model="llama-2-7b", batch=16)))
    stat = {s.get_attribute("data-key"): s for s in page.query_selector_all("#roofline-stats .stat")}
    assert integer(stat["flops"].query_selector("span").inner_text()) == roof["flops"]["total"]
    assert integer(stat["bytes"].query_selector("span").inner_text()) == roof["io"]["total"]
    assert float(stat["latency_s"].get_attribute("data-value")) == roof["latency_s"]
    points = page.query_selector_all("#roofline-points circle")
    assert len(points) == sum(1 for n in roof["nodes"] if n["flops"] > 0 and n["bytes"] > 0)
    assert "view=roofline" in page.url

    # memory against capacity, as memory_usage
    page.click("#tabs button[data-view=memory]")
    usage = memory_usage("llama-2-7b", 16, 2048, 2048, "A100-80GB")
    for key in ("weights", "kv_cache", "activations", "total", "capacity"):
        assert integer(page.inner_text(f"#memory-table tr[data-key={key}] td.num")) == getattr(usage, key)

    # the formula, as `export`
    page.click("#tabs button[data-view=formula]")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["export", "llama-2-7b", "--metric", "flops", "--scope", "transformer"])
    assert page.inner_text("#formula").strip() == out.getvalue().strip()


@browser_test
def test_browser_shared_link_decode_switch_and_error(ui_url: str, browser_page: Any) -> None:
    page = browser_page
    page.goto(ui_url + "?model=gpt2&seq=128&device=H100-SXM&view=memory")
    wait_for(page, page_request(model="gpt2", seq=128, device="H100-SXM"))
    assert page.is_visible("#memory-table") and page.input_value("#device") == "H100-SXM"
    page.select_option("#phase", "decode")  # a decode step after the prompt: past += seq, seq = 1
    wait_for(page, page_request(model="gpt2", seq=1, past=128, device="H100-SXM", phase="decode"))
    roof = api.roofline_json(api.ViewRequest(model="gpt2", device="H100-SXM", phase="decode", seq=1, past=128))
    assert float(page.get_attribute("#kpi-latency", "data-value") or "nan") == roof["latency_s"]
    assert int(page.get_attribute("#kpi-mem", "data-value") or "0") == api.memory_json(
        api.ViewRequest(model="gpt2", device="H100-SXM", phase="decode", seq=1, past=128))["total"]
    # an uploaded config.json: the page names it upload:<hash> and shows the CLI's numbers for that file
    config = read_preset(next(p for p in list_presets() if p.alias == "llama-3.2-1b"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        page.set_input_files("#upload", str(path))
        page.wait_for_function("() => document.body.dataset.loading === '0' && "
                               "document.body.dataset.request.startsWith('model=upload%3A')", timeout=30_000)
        want = cli_json(["profile", str(path), "--batch", "1", "--seq", "1", "--past", "128", "--json"])
    shown = {c.get_attribute("data-metric"): integer(c.inner_text())
             for c in page.query_selector_all("#summary-table td[data-metric]")}
    assert shown == want["totals"] and page.input_value("#model").startswith("upload:")
    page.fill("#past", "-3")
    page.wait_for_function("() => document.body.dataset.loading === 'error'", timeout=30_000)
    assert page.inner_text("#status") == "past must be >= 0, got -3"


@browser_test
def test_browser_static_report_shows_the_cli_numbers_offline(browser_page: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["ui", "--html", str(out), "mistral-7b", "--batch", "2", "--seq", "512"]) == 0
    page = browser_page
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.goto(out.as_uri())
    page.wait_for_function("() => document.body.dataset.loading === '0'", timeout=30_000)
    want = cli_json(["profile", "mistral-7b", "--batch", "2", "--seq", "512", "--json"])
    shown = {c.get_attribute("data-metric"): integer(c.inner_text())
             for c in page.query_selector_all("#summary-table td[data-metric]")}
    assert shown == want["totals"]
    page.click("#tabs button[data-view=roofline]")
    assert len(page.query_selector_all("#roofline-points circle")) > 0
    assert requests == [out.as_uri()]  # the file fetched nothing else
