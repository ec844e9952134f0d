"""``llm-profiler presets``: the bundled model configs."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import list_presets, read_preset
from ..errors import ProfilerError
from ..profile import profile_model
from ..report.export import presets_table, to_json
from ..results import PresetInfo, PresetList
from ._common import add_format_args, add_subcommand, emit

ORDER = 40

EPILOG = """\
examples:
  llm-profiler presets                 # alias, hub id, model_type, params (human units)
  llm-profiler presets --exact         # exact parameter counts
  llm-profiler presets --json
  llm-profiler presets --no-params     # skip building the graphs (instant)

params is what the profiler counts (tied weights once, lm_head included); published is the total published
for the checkpoint; "-" means no family handles the model_type yet.
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "presets", help="list the bundled model configs",
                            description="The bundled configs: any alias or hub id here works as MODEL.",
                            epilog=EPILOG)
    parser.add_argument("--no-params", action="store_true", help="do not count parameters")
    add_format_args(parser)
    parser.set_defaults(handler=run)


def _model_type(data: dict[str, Any]) -> str:
    model_type = data.get("model_type")
    return model_type if isinstance(model_type, str) else "?"


def _params(alias: str) -> int | None:
    try:
        return profile_model(alias).count("params", "model")
    except ProfilerError:  # no family for this model_type (yet)
        return None


def run(args: argparse.Namespace) -> int:
    infos = [
        PresetInfo(alias=p.alias, hub_id=p.hub_id, model_type=_model_type(read_preset(p)),
                   params=None if args.no_params else _params(p.alias), published_params=p.published_params,
                   reconstructed=p.reconstructed)
        for p in list_presets()
    ]
    result = PresetList(presets=infos)
    emit(to_json(result) if args.fmt == "json" else presets_table(result, args.fmt, args.exact))
    return 0
