"""The explorer's server: the standard library's threading HTTP server on loopback, a JSON API and the page.

Routes (GET unless noted; the query string is the page's state, ``ViewRequest``'s fields):

- ``/``: the page (``static/index.html``); ``/static/<name>``: its script and style, bundled in the package
- ``/api/meta``: the controls' choices (presets, variants, devices, phases, dtypes, metrics, scopes)
- ``/api/view``: every view of one state in one answer (``api.view_json``)
- ``/api/profile``, ``/api/layers``, ``/api/roofline``, ``/api/memory``: one part each, equal to the CLI's
  ``--json`` for the same request (see ``llm_profiler.ui.api``); ``/api/formula``: the export text
- POST ``/api/upload``: a config.json body; answers ``{"model": "upload:<hash>"}`` to use as ``model=``

Errors are JSON ``{"error": message}``: 400 for a ``ProfilerError`` (the message names the field), 404 for an
unknown path, 403 for a request whose Host header is not this loopback server (DNS rebinding), 500 for a bug.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import ProfilerError
from . import api

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".html": "text/html; charset=utf-8"}
STATIC_FILES = ("index.html", "app.js", "app.css")


def static_text(name: str) -> str:
    """One bundled asset (``llm_profiler/ui/static/<name>``)."""
    if name not in STATIC_FILES:
        raise KeyError(name)
    return (resources.files("llm_profiler.ui") / "static" / name).read_text(encoding="utf-8")


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    protocol_version = "HTTP/1.1"
    server_version = "llm-profiler-ui"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    # --- replies ------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        port = self.server.server_address[1]
        return host in {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    def _guarded(self, fn: Callable[[], None]) -> None:
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this server answers only http://127.0.0.1 (Host header refused)")
            return
        try:
            fn()
        except ProfilerError as err:
            self._error(HTTPStatus.BAD_REQUEST, " ".join(str(err).split()))
        except Exception as err:  # a bug: say so in the page instead of hanging up
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"internal error ({type(err).__name__}: {err}); this is a bug in llm-profiler")

    # --- routes ---------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _get(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, static_text("index.html").encode("utf-8"), STATIC_TYPES[".html"])
            return
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name not in STATIC_FILES:
                self._error(HTTPStatus.NOT_FOUND, f"no static file {name!r}")
                return
            self._send(HTTPStatus.OK, static_text(name).encode("utf-8"), STATIC_TYPES["." + name.rsplit(".", 1)[1]])
            return
        if path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            return
        if path == "/api/meta":
            self._json(HTTPStatus.OK, self.server.meta)
            return
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        uploads = self.server.uploads
        parts: dict[str, Callable[[api.ViewRequest, api.Uploads], Any]] = {
            "/api/view": api.view_json, "/api/profile": api.profile_json, "/api/layers": api.layers_json,
            "/api/roofline": api.roofline_json, "/api/memory": api.memory_json,
        }
        if path in parts:
            self._json(HTTPStatus.OK, parts[path](api.ViewRequest.from_query(query), uploads))
        elif path == "/api/formula":
            text = api.formula_text(api.ViewRequest.from_query(query), uploads)
            self._send(HTTPStatus.OK, text.encode("utf-8"), "text/plain; charset=utf-8")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such path {url.path!r}")

    def _post(self) -> None:
        if urlsplit(self.path).path != "/api/upload":
            self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}")
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= api.MAX_UPLOAD_BYTES:
            self.close_connection = True  # the body (if any) is left unread
            self._error(HTTPStatus.BAD_REQUEST,
                        f"upload: send a config.json body of 1 to {api.MAX_UPLOAD_BYTES:,} bytes (Content-Length)")
            return
        key = self.server.uploads.add(self.rfile.read(length))
        self._json(HTTPStatus.OK, {"model": key})


class ExplorerServer(ThreadingHTTPServer):
    """The explorer on ``(host, port)``; port 0 picks a free one (``.url`` says which)."""

    daemon_threads = True

    def __init__(self, port: int = DEFAULT_PORT, host: str = HOST, verbose: bool = False) -> None:
        super().__init__((host, port), _Handler)
        self.host = host
        self.verbose = verbose
        self.uploads = api.Uploads()
        self._meta: dict[str, Any] | None = None
        self._meta_lock = threading.Lock()

    @property
    def meta(self) -> dict[str, Any]:
        with self._meta_lock:
            if self._meta is None:
                self._meta = api.meta_json()
            return self._meta

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server_address[1]}/"


__all__ = ["DEFAULT_PORT", "HOST", "ExplorerServer", "STATIC_FILES", "static_text"]
