"""Pure state-space models: mamba and falcon_mamba (Mamba-1 mixers) and mamba2 (Mamba-2 mixers), no attention,
no MLP.

Every layer of ``backbone.layers`` is ``norm -> mixer -> + residual`` (graph/ssm.py builds the mixer); the
base model builds no position ids and no causal mask (only the recurrent padding mask, no arithmetic without
padding).
"""

from __future__ import annotations

from math import ceil
from typing import Any

from ..errors import ConfigError
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import NodeKind
from ..graph.ssm import Mamba1, Mamba2, mamba1_parts, mamba2_parts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, part


class MambaSpec(ArchSpec):
    mixer: Mamba1 | Mamba2


def _spec(f: Fields, family: str, name: str, mixer: Mamba1 | Mamba2, tie: bool) -> MambaSpec:
    """The ArchSpec of a stack of state-space blocks (attention fields are unused placeholders: one head)."""
    hidden, layers = f.int("hidden_size"), f.int("num_hidden_layers")
    chunk = mixer.chunk if isinstance(mixer, Mamba2) else None
    return MambaSpec(model_type=f.model_type, family=family, name=name, hidden_size=hidden, num_layers=layers,
                     num_heads=1, num_kv_heads=1, head_dim=hidden, intermediate_size=hidden,
                     vocab_size=f.int("vocab_size"), activation=read_activation(f, "hidden_act", default="silu"),
                     tie_word_embeddings=f.bool("tie_word_embeddings", default=tie),
                     layers=(LayerSpec(mixer=Mixer(kind="state_space", chunk=chunk), ffn=FFN(kind="none")),) * layers,
                     mixer=mixer)


class _StateSpaceStack(DecoderTemplate):
    base = "backbone"
    layer_prefix = "backbone.layers."
    embed_name = "embeddings"
    final_norm_name = "norm_f"

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        return super().head_of_model_parts(spec)[:1]  # the embedding: no positions, no mask, no rotary

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, MambaSpec)
        m, h = spec.mixer, spec.hidden_size
        mixer = (mamba2_parts(m, h, ".mixer", act=spec.activation) if isinstance(m, Mamba2)
                 else mamba1_parts(m, h, ".mixer", act=spec.activation))
        return [self.norm_part(spec, ".norm"), *mixer,
                part(":residual", NodeKind.RESIDUAL, blk.residual(h, count=1))]


@register
class Mamba(_StateSpaceStack):
    """mamba (MambaConfig): inner = ``intermediate_size`` when the config gives it (the checkpoints do: it
    overrides the class's ``expand`` x hidden), else ``expand`` x hidden, ``state_size``, ``conv_kernel``, ``time_step_rank``
    ("auto" = ceil(hidden / 16)), ``use_conv_bias``, ``use_bias`` (in/out_proj), conv activation ``hidden_act``;
    embeddings tied by default. transformers' torch scan is a sequential loop from a zero state."""

    name = "mamba"
    model_types = ("mamba", "falcon_mamba")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        # falcon_mamba (Falcon-Mamba-7B, FalconMambaMixer): Mamba-1 plus weightless RMSNorms (eps
        # ``mixer_rms_eps``) on dt, B and C right after x_proj; everything else is MambaConfig's
        falcon = data.get("model_type") == "falcon_mamba"
        f = Fields(data, "falcon_mamba" if falcon else "mamba")
        hidden = f.int("hidden_size")
        rank = f.raw("time_step_rank", default="auto")
        inner = f.int("intermediate_size", default=f.int("expand", default=2) * hidden)  # a given one wins
        mixer = Mamba1(inner=inner, state=f.int("state_size", default=16),
                       conv_kernel=f.int("conv_kernel", default=4),
                       dt_rank=ceil(hidden / 16) if rank == "auto" else f.int("time_step_rank"),
                       conv_bias=f.bool("use_conv_bias", default=True), proj_bias=f.bool("use_bias", default=False),
                       dt_norms=falcon, dt_norms_weight=False)
        return _spec(f, self.name, name, mixer, tie=True)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 128,
                "state_size": 8, "time_step_rank": 6}


@register
class Mamba2Family(_StateSpaceStack):
    """mamba2 (Mamba2Config): ``num_heads`` x ``head_dim`` (= ``expand`` x hidden, which transformers checks),
    ``n_groups``, ``state_size``, ``conv_kernel``, ``chunk_size``, ``use_conv_bias``, ``use_bias``; the dt clamp
    takes ``time_step_limit`` (two bounds, inf included); the gated RMSNorm has n_groups groups."""

    name = "mamba2"
    model_types = ("mamba2",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "mamba2")
        groups = f.int("n_groups", default=8)
        mixer = Mamba2(heads=f.int("num_heads", default=128), head_dim=f.int("head_dim", default=64), groups=groups,
                       state=f.int("state_size", default=128), conv_kernel=f.int("conv_kernel", default=4),
                       chunk=f.int("chunk_size", default=256), conv_bias=f.bool("use_conv_bias", default=True),
                       proj_bias=f.bool("use_bias", default=False), norm_groups=groups)
        if mixer.inner != f.int("expand", default=2) * f.int("hidden_size"):
            raise ConfigError(f"mamba2 config: num_heads x head_dim ({mixer.inner}) must equal expand x hidden_size")
        f.divisible(mixer.heads, groups, "num_heads must be a multiple of n_groups")
        return _spec(f, self.name, name, mixer, tie=False)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128, "num_heads": 8,
                "head_dim": 16, "expand": 2, "n_groups": 2, "state_size": 8, "chunk_size": 4}
