"""Shared pieces of the dense decoder families (olmo3, exaone4, cohere, glm, granite, ...).

Not a family module (the leading underscore keeps the registry from loading it as one): a spec with the
few global facts these families add, and a template mixin that honours them.
"""

from __future__ import annotations

from typing import Any

from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..ops import Counts
from ..spec import SLIDING_ATTENTION, ArchSpec, LayerSpec
from .fields import Fields
from .template import DecoderTemplate


class DenseSpec(ArchSpec):
    """ArchSpec plus: ``rope_tables`` (rotary_emb calls per forward: one per distinct layer type in
    olmo3 / gemma3-style models), ``both_masks`` (the base model builds the full and the sliding mask
    whatever the layer types), ``norm_bias`` (LayerNorm with a bias; false for cohere / olmo)."""

    rope_tables: int = 1
    both_masks: bool = False
    norm_bias: bool = True
    nope_layers: tuple[int, ...] = ()  # layers whose q / k are not rotated (NoPE)

    def default_layer(self, index: int) -> LayerSpec:
        layer = super().default_layer(index)
        if index in self.nope_layers:
            return layer.model_copy(update={"mixer": layer.mixer.model_copy(update={"rope": False})})
        return layer


class DenseTemplate(DecoderTemplate):
    """The template with ``DenseSpec``'s extras: the masks the base model builds, the rotary tables it
    computes, LayerNorm with or without bias."""

    def mask_counts(self, spec: ArchSpec) -> Counts:
        """position ids; the full causal mask always (over what the first full layer's cache holds, or with none
        the first sliding layer's); the sliding one when a layer slides (or always, ``both_masks``)."""
        if not isinstance(spec, DenseSpec):
            return super().mask_counts(spec)
        w = spec.sliding_window
        any_sliding = any(layer.sliding for layer in spec.layers)
        all_sliding = all(layer.sliding for layer in spec.layers)
        full_keys = blk.keys_sliding(w) if all_sliding and w is not None else blk.keys_full()
        out = blk.position_ids() + blk.causal_mask(full_keys)
        if w is not None and (spec.both_masks or any_sliding):
            # sized by the first sliding cache layer; with none, by layer 0's full cache (masking_utils'
            # create_sliding_window_causal_mask picks that layer_idx)
            out = out + blk.causal_mask(blk.keys_sliding(w) if any_sliding else blk.keys_full(), w)
        return out

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        parts = super().head_of_model_parts(spec)
        tables = spec.rope_tables if isinstance(spec, DenseSpec) else 1
        if tables != 1:
            b = self.base
            parts = [Part(p.suffix, p.module_suffix, p.kind, blk.rotary_table(spec.rotary_dim) * tables)
                     if p.suffix == f"{b}.rotary_emb" else p for p in parts]
        return parts

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        parts = super().attention_parts(spec, layer)
        return parts if layer.mixer.rope else [p for p in parts if p.kind != NodeKind.ROPE]

    def norm(self, spec: ArchSpec, rows: Any, n: int) -> Counts:
        if spec.norm == "layernorm" and isinstance(spec, DenseSpec) and not spec.norm_bias:
            return blk.layer_norm(rows, n, bias=False)
        return super().norm(spec, rows, n)


def sliding_types(f: Fields, layers: int, default: tuple[str, ...] | None) -> tuple[str, ...]:
    """``layer_types`` as given, else ``default``; () when no layer slides."""
    types = f.layer_types(layers) or default or ()
    return types if SLIDING_ATTENTION in types else ()


def norm_part(spec: ArchSpec, template: DecoderTemplate, suffix: str, width: int | None = None) -> Part:
    """A norm over the hidden size (or ``width``) on every token, at module ``suffix``."""
    n = spec.hidden_size if width is None else width
    return Part(suffix, suffix, NodeKind.NORM, template.norm(spec, blk.TOKENS, n))


def post_norm_layer(template: DecoderTemplate, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
    """OLMo-2-style layer: no input norm; ``post_attention_layernorm`` and ``post_feedforward_layernorm``
    normalise the attention and MLP outputs before their residual additions."""
    return [
        *template.attention_parts(spec, layer),
        norm_part(spec, template, ".post_attention_layernorm"),
        Part(":residual", "", NodeKind.RESIDUAL, blk.residual(spec.hidden_size)),
        *template.ffn_parts(spec, layer),
        norm_part(spec, template, ".post_feedforward_layernorm"),
    ]
