"""One config resolved for a measurement: the graph that predicts and the config transformers builds.

Every measuring entry point (``validate``, ``compare_peak``, measured runs, the tests) starts here, so the
full-size / tiny choice, the tiny config's clean-up and the device are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import families
from ..config import load_config
from ..families import build_spec
from ..profile import ModelProfile, profile_from_data
from .guard import refusing


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

    def build(self, device: str | None = None, seed: int = 0, attention: str = "eager",
              experts: str = "batched_mm") -> Any:
        """The transformers model (``attention``: eager, or sdpa; ``experts``: the MoE experts kernel), float32."""
        from .measure import build_model

        return build_model(self.hf_config, device=device or self.device, seed=seed, attention=attention,
                           experts=experts)


def reference(config: Any, *, tiny: bool = False, as_family: str | None = None) -> Reference:
    """Read the config as the profile does (``as_family`` included: the reference is then built as that
    family's ``model_type``) and derive what transformers builds. A tiny variant that cannot be derived is a
    ``ValidationBuildError``."""
    cfg = load_config(config)
    family, _ = build_spec(cfg.data, cfg.name, as_family)  # the profile's own checks (ConfigError)
    # as_family: the family reads the config as its own model_type, and transformers builds that type
    fields = dict(cfg.data) if as_family is None else {**cfg.data, "model_type": as_family}
    by_class = None if as_family is not None else families.model_type_of_architecture(cfg.data)
    if by_class is not None and not families.is_supported(str(cfg.data.get("model_type"))):
        fields["model_type"] = by_class[1]  # Kimi-K2's kimi_k2 is built as its DeepseekV3ForCausalLM class
    if tiny:
        with refusing("making the tiny variant of the config (use full size: tiny=False, no --tiny)", fields):
            data = without_out_of_vocab_ids(family.tiny(fields))
    else:
        data = fields
    with refusing("profiling the tiny variant of the config" if tiny else "profiling the config", data):
        profile = profile_from_data(data, cfg.name, as_family=as_family)
    with refusing("making the transformers config", data):
        hf_config = family.hf_config(data)
    return Reference(name=cfg.name, profile=profile, data=data, hf_config=hf_config, tiny=tiny)
