"""The static single-file report: the explorer's page with its style, script and one state's data inline.

The file needs no server and no network: the script finds ``<script id="llmp-data">`` and draws the same views
(per-layer table and bars, roofline, memory, formula) for the one model and shape it holds; the controls show
that state, and only the tabs and the exact / human toggle stay live.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ProfilerError
from . import api
from .server import static_text

STYLE_TAG = '<link rel="stylesheet" href="/static/app.css">'
SCRIPT_TAG = '<script src="/static/app.js"></script>'


def _inline_json(data: Any) -> str:
    # Inside <script>, "</" could end the element early and "<!--" open a comment: escape them.
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_html(request: api.ViewRequest) -> str:
    """The report's HTML for one request (every view computed now, nothing fetched later)."""
    payload = {"meta": api.meta_json(), "view": api.view_json(request)}
    page = static_text("index.html")
    for tag in (STYLE_TAG, SCRIPT_TAG):
        if tag not in page:  # pragma: no cover - the bundled page and this module change together
            raise AssertionError(f"index.html lost {tag}")
    page = page.replace(STYLE_TAG, "<style>\n" + static_text("app.css") + "</style>")
    data = f'<script id="llmp-data" type="application/json">{_inline_json(payload)}</script>\n'
    script = "<script>\n" + static_text("app.js").replace("</script", "<\\/script") + "</script>"
    page = page.replace(SCRIPT_TAG, data + script)
    name = payload["view"]["profile"]["model"]
    return page.replace("<title>llm-profiler explorer</title>", f"<title>llm-profiler report: {_escape(name)}</title>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_html(request: api.ViewRequest, path: str | Path) -> Path:
    target = Path(path)
    text = build_html(request)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ProfilerError(f"--html: cannot write {str(path)!r}: {err.strerror or err}") from None
    return target


__all__ = ["build_html", "write_html"]
