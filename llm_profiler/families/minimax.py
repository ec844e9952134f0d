"""MiniMax-Text-01 / MiniMax-M1: lightning attention layers, softmax attention every eighth layer, MoE everywhere.

The lightning mixer is ``graph/lightning_attention.py``; the MoE block is Mixtral's (``graph/moe.py``); this
module holds the config quirks of transformers' ``minimax`` (``MiniMaxConfig`` / ``modeling_minimax``, 5.23), and
reads the published remote-code configs (``minimax_text_01``, ``minimax_m1``) as that model.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.lightning_attention import Lightning, LightningMoESpec, lightning_parts
from ..graph.linear_attention import LINEAR_ATTENTION
from ..ops import Counts
from ..spec import FULL_ATTENTION, ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .mixtral import SparseMoEStyle
from .template import decoder_fields, part, tiny_dims


@register
class MiniMax(SparseMoEStyle):
    """minimax. Quirks (transformers 5.23 MiniMaxConfig / modeling_minimax):

    - ``layer_types``: ``linear_attention`` (lightning, ``block_size`` tokens per block, default 256) or
      ``full_attention``; absent, even layers are full and odd ones lightning (the class default; the
      released models put a full layer after every 7 lightning ones, so layer 0 is lightning).
    - full attention: Mixtral's (GQA, no biases, head_dim explicit or hidden / heads). RoPE over the whole
      head_dim: transformers' MiniMax rotary ignores ``rotary_dim`` / ``partial_rotary_factor`` (the original
      code rotates half the head, ``rotary_dim`` 64 of 128); the counts follow transformers.
    - ``sliding_window`` (null in the released configs) only swaps the mask for a sliding one: the cache keeps
      every token and eager attention scores them all.
    - decoder layer: post-norm residuals, ``residual * alpha + out * beta`` with the residual taken *after*
      the norm, twice per layer (``full_attn_*`` / ``linear_attn_*`` / ``mlp_*`` ``alpha_factor`` /
      ``beta_factor``: two MULT and an ADD per element even when a factor is 1).
    - MoE on every layer: ``num_local_experts`` (alias ``num_experts``) experts of ``intermediate_size``, top
      ``num_experts_per_tok``, softmax router always renormalised (Mixtral's).
    - the cache: K / V on full layers; on lightning layers the B x H x D x D state (``linear_cache``).
    - the published configs (MiniMax-Text-01, MiniMax-M1: ``minimax_text_01`` / ``minimax_m1``, remote code) are
      read as transformers' converted ``-hf`` checkpoints read them (``_converted``): ``attn_type_list`` (0
      lightning, 1 softmax) -> ``layer_types``, ``layernorm_{full_attention,linear_attention,mlp}_{alpha,beta}``
      -> the factors; ``postnorm`` must be true and ``shared_intermediate_size`` 0 (transformers has neither
      branch).
    """

    name = "minimax"
    model_types = ("minimax", "minimax_text_01", "minimax_m1")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        notes: list[str] = []
        data = self._converted(data, notes)
        f = Fields(data, "minimax")
        common = decoder_fields(f, self.name, name)
        layers = common["num_layers"]
        types = f.layer_types(layers, allowed=(FULL_ATTENTION, LINEAR_ATTENTION)) or tuple(
            FULL_ATTENTION if i % 2 == 0 else LINEAR_ATTENTION for i in range(layers))
        rope = f.raw("rope_parameters") or {}
        if "rotary_dim" in data or "partial_rotary_factor" in data or "partial_rotary_factor" in rope:
            notes.append("minimax: transformers 5.23 applies RoPE to the whole head_dim, ignoring rotary_dim / "
                         "partial_rotary_factor (MiniMax's own code rotates half of it); counted as transformers runs it")
        return LightningMoESpec(
            **{**common, "rotary_dim": common["head_dim"]}, layer_types=types, notes=tuple(notes),
            num_experts=f.int("num_local_experts", "num_experts"), experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=common["intermediate_size"], norm_topk_prob=True,
            lightning=Lightning(heads=common["num_heads"], head_dim=common["head_dim"],
                                block_size=f.int("block_size", default=256)),
            mask_window=f.int("sliding_window", default=None, minimum=2))

    _FACTORS = {f"layernorm_{old}_{ab}": f"{new}_{ab}_factor" for old, new in
                (("full_attention", "full_attn"), ("linear_attention", "linear_attn"), ("mlp", "mlp"))
                for ab in ("alpha", "beta")}

    @classmethod
    def _converted(cls, data: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """A remote-code ``minimax_text_01`` / ``minimax_m1`` config in transformers' ``minimax`` form."""
        legacy = data.get("model_type")
        if legacy == "minimax":
            return data
        kinds = data.get("attn_type_list")
        if not isinstance(kinds, list) or any(k not in (0, 1) or isinstance(k, bool) for k in kinds):
            raise ConfigError(f"{legacy} config field 'attn_type_list' must list 0 (lightning) or 1 (softmax "
                              f"attention) per layer, got {kinds!r}")
        if data.get("postnorm", True) is not True:
            raise ConfigError(f"{legacy} config field 'postnorm' must be true: transformers' minimax takes the "
                              "residual after the norm only")
        shared = data.get("shared_intermediate_size", 0)
        if shared not in (0, [0], None):
            raise ConfigError(f"{legacy} config field 'shared_intermediate_size' must be 0: transformers' minimax "
                              f"has no shared expert, got {shared!r}")
        out = {k: v for k, v in data.items() if k not in cls._FACTORS and k != "attn_type_list"}
        out.update({new: data[old] for old, new in cls._FACTORS.items() if old in data})
        out.update(model_type="minimax", layer_types=["full_attention" if k else "linear_attention" for k in kinds])
        notes.append(f"remote-code '{legacy}' config read as transformers' minimax (attn_type_list -> layer_types, "
                     "layernorm_*_alpha / _beta -> *_alpha_factor / *_beta_factor); no remote code is run")
        return out

    # --- graph ------------------------------------------------------------------------------------
    def mask_counts(self, spec: ArchSpec) -> Counts:
        """position ids, then the one mask the base model builds over the P + S cached keys (sliding when
        ``sliding_window`` is set); the lightning layers' mask needs no ops without padding."""
        assert isinstance(spec, LightningMoESpec)
        return blk.position_ids() + blk.causal_mask(blk.keys_full(), spec.mask_window)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        if layer.mixer.kind == "linear_attention":
            assert isinstance(spec, LightningMoESpec)
            return lightning_parts(spec.lightning, spec.hidden_size, spec.activation)
        return super().attention_parts(spec, layer)

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        n = 2 * blk.TOKENS * spec.hidden_size  # two combines: residual * alpha + out * beta
        combine = blk.fusable(ops.elementwise("mul", 2 * n) + ops.elementwise("add", n), 2 * n, n)
        residual = part(":residual", NodeKind.RESIDUAL, combine)
        return [residual if p.suffix == ":residual" else p for p in super().layer_parts(spec, layer)]

    # --- for the validation module -------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """A remote-code config validates as the transformers minimax model it converts to."""
        return self._converted(dict(data), [])

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        # the real pattern (7 lightning, 1 full) keeps its 8 layers; lightning blocks of 4 tokens bind
        rest = {k: v for k, v in self._converted(data, []).items() if k != "num_experts"}
        return tiny_dims(rest, num_local_experts=4, num_experts_per_tok=2, block_size=4)
