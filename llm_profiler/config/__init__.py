"""Config loading: any source (preset, file, folder, dict, PretrainedConfig, hub id) -> ``ModelConfig``."""

from __future__ import annotations

from .loader import ModelConfig, load_config
from .presets import Preset, find_preset, list_presets, read_preset

__all__ = ["ModelConfig", "Preset", "find_preset", "list_presets", "load_config", "read_preset"]
