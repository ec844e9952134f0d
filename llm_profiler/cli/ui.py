"""``llm-profiler ui``: the local web explorer on 127.0.0.1, or (``--html FILE``) a static single-file report."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from ..errors import ProfilerError
from ..phases import DECODE, PHASES, PREFILL
from ._common import add_subcommand, dtype_arg, int_arg, metric_arg, note

ORDER = 90
DEFAULT_PORT = 8765  # = llm_profiler.ui.server.DEFAULT_PORT (not imported: `--help` stays light)

EPILOG = """\
examples:
  llm-profiler ui                                   # serve http://127.0.0.1:8765/ and open a browser
  llm-profiler ui llama-3.1-8b --device h100 --no-browser --port 9000
  llm-profiler ui --html report.html llama-2-7b --phase decode --batch 8 --past 4096
  llm-profiler ui --html report.html ./my-model/config.json --seq 512

The explorer is offline: the page, its script and style are bundled in the package, and the server listens on
127.0.0.1 only. Its state lives in the URL (share a view by its link). --html writes one self-contained file
with the same views for one model and shape. See docs/ui.md.
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "ui", help="the web explorer (local server) or a static HTML report",
                            description="Explore a model in the browser: per-layer table and bars, roofline, "
                                        "memory against capacity, symbolic formula.", epilog=EPILOG)
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="the model to open (preset alias or hub id, config.json path); needed with --html")
    serve = parser.add_argument_group("server")
    serve.add_argument("--port", type=int_arg(0, 65535, name="port"), default=DEFAULT_PORT, metavar="PORT",
                       help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the URL")
    serve.add_argument("--html", metavar="FILE", help="write a static single-file HTML report and exit")
    shape = parser.add_argument_group("the initial view (or the report's)")
    shape.add_argument("--device", default="A100-80GB", metavar="NAME", help="device spec (default A100-80GB)")
    shape.add_argument("--phase", choices=PHASES, default=PREFILL, help="default prefill")
    shape.add_argument("-b", "--batch", type=int_arg(1, name="batch"), default=1, metavar="B", help="default 1")
    shape.add_argument("-s", "--seq", type=int_arg(1, name="seq"), default=None, metavar="S",
                       help="prompt tokens (prefill, generate; default 2048) or tokens per decode step (default 1)")
    shape.add_argument("-p", "--past", type=int_arg(0, name="past"), default=0, metavar="P", help="default 0")
    shape.add_argument("-n", "--new-tokens", type=int_arg(1, None, name="new_tokens"), default=128, metavar="N",
                       help="tokens to generate (generate; default 128)")
    shape.add_argument("--lm-head", choices=("all", "last"), default="all", help="default all")
    shape.add_argument("--weight-dtype", type=dtype_arg, default="bf16", metavar="DT", help="default bf16")
    shape.add_argument("--act-dtype", type=dtype_arg, default="bf16", metavar="DT", help="default bf16")
    shape.add_argument("--kv-dtype", type=dtype_arg, default=None, metavar="DT",
                       help="default: the activation dtype")
    shape.add_argument("--metric", type=metric_arg, default="flops", metavar="METRIC",
                       help="metric of the per-layer bars and the formula (default flops)")
    shape.add_argument("--scope", default="transformer", metavar="SCOPE", help="scope of the formula (default transformer)")
    parser.set_defaults(handler=run)


def _request(args: argparse.Namespace) -> Any:
    from ..ui.api import ViewRequest

    seq = args.seq if args.seq is not None else (1 if args.phase == DECODE else 2048)
    values = {"device": args.device, "phase": args.phase, "batch": args.batch, "seq": seq, "past": args.past,
              "new_tokens": args.new_tokens, "lm_head": args.lm_head, "weight_dtype": args.weight_dtype,
              "act_dtype": args.act_dtype, "kv_dtype": args.kv_dtype, "metric": args.metric, "scope": args.scope}
    if args.model is not None:
        values["model"] = args.model
    request = ViewRequest(**values)
    request.check()
    return request


def _warm(request: Any) -> None:
    """Build the initial model's formulas while the browser opens, so that the first view answers fast."""
    from ..ui.api import view_json

    try:
        view_json(request)
    except ProfilerError:  # the page shows the same error when it asks
        pass


def run(args: argparse.Namespace) -> int:
    if args.html:
        if args.model is None:
            raise ProfilerError("--html needs MODEL (e.g. `llm-profiler ui --html report.html llama-3.1-8b`)")
        from ..ui.report import write_html

        note(f"wrote {write_html(_request(args), args.html)}")
        return 0
    from urllib.parse import urlencode

    from ..ui.api import ViewRequest
    from ..ui.server import ExplorerServer

    request = _request(args)
    defaults = ViewRequest().query()
    query = {k: v for k, v in request.query().items() if defaults.get(k) != v}
    try:
        server = ExplorerServer(args.port)
    except OSError as err:
        raise ProfilerError(f"--port {args.port}: cannot listen on 127.0.0.1 ({err.strerror or err}); "
                            "pick another port, or 0 for any free one") from None
    url = server.url + ("?" + urlencode(query) if query else "")
    threading.Thread(target=_warm, args=(request,), daemon=True, name="llm-profiler-ui-warm").start()
    print(f"llm-profiler explorer at {url}  (Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
