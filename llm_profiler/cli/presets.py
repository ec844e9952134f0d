"""``llm-profiler presets``: the bundled model configs and their instruct / chat variants."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import list_presets, read_preset
from ..config.presets import Preset, list_variants
from ..errors import ProfilerError
from ..report.export import presets_table, render_table, to_json
from ..results import PresetInfo, PresetList
from ._common import add_format_args, add_subcommand, emit

ORDER = 40

EPILOG = """\
examples:
  llm-profiler presets                 # alias, hub id, model_type, params (human units), then the variants
  llm-profiler presets --exact         # exact parameter counts
  llm-profiler presets --json
  llm-profiler presets --recount       # count the parameters again from each config (builds every graph)
  llm-profiler presets --no-params     # leave the params column empty

params is what the profiler counts (tied weights once, lm_head included; the text model of a multimodal
checkpoint), kept in the preset table (a test recounts every one); published is the total published for the
checkpoint. The variants (instruct / chat checkpoints with the base's architecture) load the base's config;
any name in either table works as MODEL.
"""


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "presets", help="list the bundled model configs",
                            description="The bundled configs: any alias or hub id here works as MODEL.",
                            epilog=EPILOG)
    params = parser.add_mutually_exclusive_group()
    params.add_argument("--no-params", action="store_true", help="do not show parameter counts")
    params.add_argument("--recount", action="store_true",
                        help="count the parameters from each config instead of reading the preset table (slow)")
    add_format_args(parser)
    parser.set_defaults(handler=run)


def _model_type(data: dict[str, Any]) -> str:
    model_type = data.get("model_type")
    return model_type if isinstance(model_type, str) else "?"


def _params(preset: Preset, args: argparse.Namespace) -> int | None:
    if args.no_params:
        return None
    if not args.recount:
        return preset.params
    from ..profile import profile_model  # builds the graph: only when asked

    try:
        return profile_model(preset.hub_id).count("params", "model")
    except ProfilerError:  # no family for this model_type (yet)
        return None


def run(args: argparse.Namespace) -> int:
    infos = [
        PresetInfo(alias=p.alias, hub_id=p.hub_id, model_type=_model_type(read_preset(p)),
                   params=_params(p, args), published_params=p.published_params, reconstructed=p.reconstructed)
        for p in list_presets()
    ]
    result = PresetList(presets=infos)
    if args.fmt in ("json", "csv"):  # machine formats: the preset files, one row each
        emit(to_json(result) if args.fmt == "json" else presets_table(result, args.fmt, args.exact))
        return 0
    aliases = {p.hub_id: p.alias for p in list_presets()}
    variants = [[v.alias, v.hub_id, aliases[v.variant_of or ""], "yes" if v.overrides else "", v.note]
                for v in list_variants()]
    text = presets_table(result, args.fmt, args.exact)
    text += ("\ninstruct / chat variants (the base's architecture and config; fields in 'overrides' set to the "
             "variant's published values):\n\n" if args.fmt == "text" else "\n")
    text += render_table(["alias", "hub id", "base", "overrides", "note"], variants, args.fmt, left=5)
    emit(text)
    return 0
