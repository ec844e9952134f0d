"""What granite_swa and granitemoe_swa add to granite / granitemoe(shared) (transformers' GraniteSWA /
GraniteMoeSWA modeling): sliding-window layers, learned per-head attention sinks applied after the attention,
and a RoPE base per layer. (A helper module, not a family: the registry skips names starting with an underscore.)

- ``layer_types`` (default: full attention on every fourth layer from layer 0, sliding elsewhere) with
  ``sliding_window`` (default 128); the base model builds the full and the sliding mask on every forward.
- the sinks (eager_attention_forward): lse = logsumexp(scores) over the keys, sink_scale = sigmoid(lse -
  sinks), and after probs @ v the output times sink_scale: a ``:sink_scale`` node of logsumexp over the keys, a SUB
  and a sigmoid per (batch, head, query) row and a MULT per output element; the sinks are ``heads`` parameters.
- ``layer_rope_theta`` (default: the global rope_theta on every layer): one rotary embedding per distinct
  non-zero theta, each computing its cos / sin tables every forward; a layer whose theta is 0 is NoPE.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..facts import TensorClass, Weight
from ..formula import B, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..ops import Counts
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from .fields import Fields
from .template import DecoderTemplate


def swa_fields(f: Fields, layers: int) -> dict[str, Any]:
    """The spec fields the SWA variants add: ``layer_types``, ``sliding_window``, and ``rope_tables`` (the
    distinct non-zero RoPE thetas) with ``nope_layers`` (theta 0)."""
    if "sliding_window" in f.data and f.data["sliding_window"] is None:  # the sliding mask is built every forward
        raise ConfigError(f"{f.model_type} config field 'sliding_window' must be an integer >= 2, got null: "
                          "transformers builds the sliding-window mask on every forward")
    window = f.int("sliding_window", default=128, minimum=2)
    types = f.layer_types(layers) or tuple(FULL_ATTENTION if i % 4 == 0 else SLIDING_ATTENTION for i in range(layers))
    thetas = f.raw("layer_rope_theta")
    if thetas is None:
        thetas = [1.0] * layers  # the global rope_theta everywhere: one table, no NoPE layer
    if (not isinstance(thetas, list) or len(thetas) != layers
            or any(isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0 for t in thetas)):
        raise ConfigError(f"{f.model_type} config field 'layer_rope_theta' must list {layers} numbers >= 0 "
                          "(0: a NoPE layer)")
    return {"sliding_window": window, "layer_types": types, "rope_tables": len({t for t in thetas if t}),
            "nope_layers": tuple(i for i, t in enumerate(thetas) if not t)}


def with_sinks(spec: ArchSpec, nope_layers: tuple[int, ...]) -> ArchSpec:
    """``spec`` with every layer's mixer carrying sinks and the NoPE layers not rotating q / k."""
    layers = tuple(layer.model_copy(update={"mixer": layer.mixer.model_copy(
        update={"sinks": True, "rope": i not in nope_layers})}) for i, layer in enumerate(spec.layers))
    return spec.model_copy(update={"layers": layers})


def sink_scale(heads: int, head_dim: int, keys: Any) -> Counts:
    """logsumexp of every (batch, head, query) row of scores over the keys, minus the head's sink, its
    sigmoid, and the attention output (B, heads, S, head_dim) times it."""
    rows = B * heads * S
    out = (ops.logsumexp(rows, keys) + ops.elementwise("sub", rows) + ops.elementwise("sigmoid", rows)
           + ops.elementwise("mul", rows * head_dim))
    return blk.with_params(out, heads).with_facts(weights=(Weight("sinks", (heads,), TensorClass.VECTOR),))


class SlidingSinks(DecoderTemplate):
    """The template pieces of the SWA variants: both masks on every forward, ``rope_tables`` rotary
    embeddings (the spec's), the sinks node on every attention, no rope on NoPE layers."""

    def mask_counts(self, spec: ArchSpec) -> Counts:
        """Both masks every forward, each sized by the first layer of its kind (else layer 0), as
        masking_utils picks the cache layer."""
        window = spec.sliding_window
        assert window is not None
        full = next((layer for layer in spec.layers if not layer.sliding), spec.layers[0])
        sliding = next((layer for layer in spec.layers if layer.sliding), spec.layers[0])
        return (blk.position_ids() + blk.causal_mask(self.keys(spec, full))
                + blk.causal_mask(self.keys(spec, sliding), window))

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        """``model.rotary_emb`` is built but never run; ``model.rotary_embs.<i>`` computes its tables."""
        b, out = self.base, []
        for p in super().head_of_model_parts(spec):
            if p.suffix != f"{b}.rotary_emb":
                out.append(p)
                continue
            for i in range(int(getattr(spec, "rope_tables", 1))):
                path = f"{b}.rotary_embs.{i}"
                out.append(Part(path, path, NodeKind.ROTARY, blk.rotary_table(spec.rotary_dim)))
        return out

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        a, out = ".self_attn", []
        for p in super().attention_parts(spec, layer):
            if p.kind == NodeKind.ROPE and not layer.mixer.rope:
                continue
            out.append(p)
            if p.suffix == f"{a}:softmax":
                out.append(Part(f"{a}:sink_scale", a, NodeKind.ATTN_SOFTMAX,
                                sink_scale(spec.num_heads, spec.head_dim, self.keys(spec, layer)), ATTN,
                                label="sinks"))
        return out

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        """The family's tiny config with ``layer_rope_theta`` cut to its layers (and the sinks' layer kinds)."""
        out = super().tiny(data)
        if isinstance(data.get("layer_rope_theta"), list):
            out["layer_rope_theta"] = data["layer_rope_theta"][:out["num_hidden_layers"]]
        return out
