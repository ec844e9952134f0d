"""Nemotron-H: a hybrid of Mamba-2 mixers, attention and MLP blocks, one kind per layer.

Every layer is ``norm -> mixer -> + residual``, the mixer one of: a Mamba-2 mixer (``M``: graph/ssm.py), a
GQA attention without positions (``*``: no rotary, no bias), or a non-gated relu2 MLP (``-``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..errors import ConfigError
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import NodeKind
from ..graph.ssm import Mamba2, mamba2_parts
from ..spec import FFN, ArchSpec, LayerSpec, Mixer
from . import register
from .fields import Fields
from .template import DecoderTemplate, part, plain_mlp, renamed, tiny_dims

KINDS = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}


class NemotronHSpec(ArchSpec):
    mamba: Mamba2
    block_types: tuple[str, ...]  # per layer: linear_attention / full_attention / mlp


@register
class NemotronH(DecoderTemplate):
    """nemotron_h. Quirks, from transformers' NemotronHConfig and modeling code:

    - layers from ``hybrid_override_pattern`` (M = Mamba-2, * = attention, - = MLP, E = MoE) or
      ``layers_block_type`` / ``layer_types``; ``num_hidden_layers`` is ignored (the list's length rules);
    - attention: ``head_dim`` (default 128; the checkpoints' ``attention_head_dim`` is not read by
      transformers), no rotary, no biases; the base model builds the causal mask every forward;
    - Mamba-2: ``mamba_num_heads`` x ``mamba_head_dim`` wide (``expand`` is not read), ``n_groups``,
      ``ssm_state_size``, ``conv_kernel``, ``chunk_size``, ``use_conv_bias``; ``use_bias`` on in/out_proj; the
      dt clamp is (time_step_min, inf) whatever ``time_step_limit`` says; the gated norm has n_groups groups;
    - MLP: up -> ``mlp_hidden_act`` (relu2) -> down, ``mlp_bias``; norms are RMSNorm (``layer_norm_epsilon``).
    MoE blocks (``E``, Nemotron-3) are not counted yet: a config with them is refused.
    """

    name = "nemotron_h"
    model_types = ("nemotron_h",)
    embed_name = "embeddings"
    final_norm_name = "norm_f"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "nemotron_h")
        types = self.block_types(f)
        if "moe" in types:
            raise ConfigError("nemotron_h config: MoE blocks ('E' in hybrid_override_pattern, 'moe' in "
                              "layers_block_type) are not supported yet; only M, * and - blocks are")
        hidden = f.int("hidden_size")
        heads = f.int("num_attention_heads", default=32)
        mamba = Mamba2(heads=f.int("mamba_num_heads", default=128), head_dim=f.int("mamba_head_dim", default=64),
                       groups=f.int("n_groups", "mamba_n_groups", default=8),
                       state=f.int("ssm_state_size", default=128),
                       conv_kernel=f.int("conv_kernel", "mamba_d_conv", default=4),
                       chunk=f.int("chunk_size", "mamba_chunk_size", default=128),
                       conv_bias=f.bool("use_conv_bias", "mamba_conv_bias", default=True),
                       proj_bias=f.bool("use_bias", default=False),
                       norm_groups=f.int("n_groups", "mamba_n_groups", default=8))
        f.divisible(mamba.heads, mamba.groups, "mamba_num_heads must be a multiple of n_groups")
        layers = tuple(self.layer_spec(t, mamba.chunk) for t in types)
        return NemotronHSpec(
            model_type="nemotron_h", family=self.name, name=name, hidden_size=hidden, num_layers=len(types),
            num_heads=heads, num_kv_heads=f.int("num_key_value_heads", default=8),
            head_dim=f.int("head_dim", default=128), intermediate_size=f.int("intermediate_size", default=21504),
            vocab_size=f.int("vocab_size", default=131072),
            activation=read_activation(f, "mlp_hidden_act", default="relu2"), gated_mlp=False, mlp_bias=f.bool("mlp_bias", default=False),
            tie_word_embeddings=f.bool("tie_word_embeddings", default=False), rotary_dim=0,
            layers=layers, mamba=mamba, block_types=types)

    @staticmethod
    def block_types(f: Fields) -> tuple[str, ...]:
        given = f.raw("layers_block_type", "layer_types")
        if given is None:
            pattern = f.str("hybrid_override_pattern", default="M*-")
            if not pattern or any(c not in KINDS for c in pattern):
                raise ConfigError("nemotron_h config field 'hybrid_override_pattern' must be a non-empty string of "
                                  f"{', '.join(KINDS)} (one per layer), got {pattern!r}")
            return tuple(KINDS[c] for c in pattern)
        if not isinstance(given, list) or not given or any(t not in KINDS.values() for t in given):
            raise ConfigError("nemotron_h config field 'layers_block_type' must be a non-empty list of "
                              f"{', '.join(repr(k) for k in KINDS.values())}")
        return tuple(given)

    @staticmethod
    def layer_spec(block_type: str, chunk: int) -> LayerSpec:
        if block_type == "linear_attention":
            return LayerSpec(mixer=Mixer(kind="state_space", chunk=chunk), ffn=FFN(kind="none"))
        if block_type == "full_attention":
            return LayerSpec(mixer=Mixer(rope=False), ffn=FFN(kind="none"))
        # an MLP block has no token mixer; the spec has no "none" mixer kind, so it keeps the default one
        return LayerSpec(ffn=FFN(kind="dense"))

    def layer_key(self, spec: ArchSpec, index: int, layer: LayerSpec) -> Hashable:
        assert isinstance(spec, NemotronHSpec)
        return spec.block_types[index]

    def keyed_layer_parts(self, spec: ArchSpec, key: Any) -> list[Part]:
        assert isinstance(spec, NemotronHSpec)
        if key == "linear_attention":
            mixer = mamba2_parts(spec.mamba, spec.hidden_size, ".mixer")
        elif key == "full_attention":
            attn = self.attention_parts(spec, LayerSpec(mixer=Mixer(rope=False)))
            mixer = [_under_mixer(p) for p in attn]
        else:
            mixer = plain_mlp(spec, ".mixer.up_proj", ".mixer.act_fn", ".mixer.down_proj")
        return [self.norm_part(spec, ".norm"), *mixer,
                part(":residual", NodeKind.RESIDUAL, blk.residual(spec.hidden_size, count=1))]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        types = self.block_types(Fields(data, "nemotron_h"))
        kinds = {v: k for k, v in KINDS.items()}
        pattern = "".join(kinds[t] for t in dict.fromkeys(types))  # one block of each kind, in order
        out = tiny_dims(data, head_dim=24, mamba_num_heads=4, mamba_head_dim=16, n_groups=2, ssm_state_size=8,
                        chunk_size=4, hybrid_override_pattern=pattern)
        out.pop("layers_block_type", None)
        out.pop("layer_types", None)
        out["num_hidden_layers"] = len(pattern)
        return out


def _under_mixer(p: Part) -> Part:
    return renamed([p], {p.suffix: p.suffix.replace(".self_attn", ".mixer", 1)})[0]


__all__ = ["NemotronH"]
