"""One config resolved for a measurement: the graph that predicts and the config transformers builds.

Every measuring entry point (``validate``, ``compare_peak``, measured runs, the tests) starts here, so the
full-size / tiny choice, the tiny config's clean-up and the device are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import load_config
from ..families import build_spec
from ..profile import ModelProfile, profile_from_data


def without_out_of_vocab_ids(data: dict[str, Any]) -> dict[str, Any]:
    """Tiny configs shrink the vocabulary: drop special-token ids it no longer holds."""
    vocab = data.get("vocab_size") or 0
    out = dict(data)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = out.get(key)
        if isinstance(value, list) or (isinstance(value, int) and value >= vocab):
            out[key] = None
    return out


@dataclass(frozen=True)
class Reference:
    name: str  # the config's name (preset hub id, path, ...)
    profile: ModelProfile  # the graph of ``data``: what the formulas predict
    data: dict[str, Any]  # the raw config profiled (the family's tiny variant when ``tiny``)
    hf_config: dict[str, Any]  # what transformers builds the reference model from
    tiny: bool

    @property
    def device(self) -> str:
        """Full size on the meta device (shapes only), tiny with real random weights on the CPU."""
        return "cpu" if self.tiny else "meta"

    def build(self, device: str | None = None, seed: int = 0) -> Any:
        """The transformers model (eager attention, batched MoE experts), float32."""
        from .measure import build_model

        return build_model(self.hf_config, device=device or self.device, seed=seed)


def reference(config: Any, *, tiny: bool = False, as_family: str | None = None) -> Reference:
    cfg = load_config(config)
    family, _ = build_spec(cfg.data, cfg.name, as_family)
    data = without_out_of_vocab_ids(family.tiny(cfg.data)) if tiny else dict(cfg.data)
    profile = profile_from_data(data, cfg.name, as_family=as_family)
    return Reference(name=cfg.name, profile=profile, data=data, hf_config=family.hf_config(data), tiny=tiny)
