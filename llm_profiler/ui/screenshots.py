"""Screenshots of the explorer's views for the docs: ``python -m llm_profiler.ui.screenshots docs/images``.

A developer tool (nothing imports it): it starts the explorer on a free loopback port, opens each view in
headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright; never ``playwright install``) and writes
``ui-<view>.png`` (plus ``ui-report.png`` of a static report) into the folder.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from .api import ViewRequest
from .report import write_html
from .server import ExplorerServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# (file stem, query string): one per view, each a state a user might share.
SHOTS = (
    ("layers", "model=llama-3.1-8b&batch=4&seq=1024"),
    ("roofline", "model=llama-3.1-8b&batch=4&seq=1024&view=roofline"),
    ("roofline-decode", "model=qwen3-30b-a3b&device=H100-SXM&phase=decode&batch=16&seq=1&past=4096&view=roofline"),
    ("memory", "model=llama-3.1-70b&device=H100-SXM&phase=generate&batch=8&seq=4096&new_tokens=512&view=memory"),
    ("formula", "model=llama-3.1-8b&metric=macs&scope=attn&view=formula"),
)


def take(folder: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    server = ExplorerServer(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    written = []
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="llmp-shots-") as tmp:
            context = pw.chromium.launch_persistent_context(
                str(Path(tmp) / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900})
            page = context.new_page()
            for stem, query in SHOTS:
                page.goto(f"{server.url}?{query}")
                page.wait_for_function("() => document.body.dataset.loading === '0'", timeout=60_000)
                path = folder / f"ui-{stem}.png"
                page.screenshot(path=str(path))
                written.append(path)
            report = Path(tmp) / "report.html"
            write_html(ViewRequest(model="mistral-7b", batch=2, seq=512), report)
            page.goto(report.as_uri())
            page.wait_for_function("() => document.body.dataset.loading === '0'", timeout=60_000)
            path = folder / "ui-report.png"
            page.screenshot(path=str(path))
            written.append(path)
            context.close()
    finally:
        server.shutdown()
        server.server_close()
    return written


if __name__ == "__main__":
    for shot in take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")):
        print(f"wrote {shot}")
