"""The Nemotron (dense, Nemotron-3 / Minitron) family: LayerNorm1P, partial rotary, a non-gated relu2 MLP."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import Formula
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..ops import Counts
from ..spec import ArchSpec
from . import register
from ._dense import DenseSpec
from .fields import Fields
from .llama_variants import Arcee
from .phi import rotary_dim
from .template import decoder_fields


@register
class Nemotron(Arcee):
    """nemotron. Quirks, all from transformers' NemotronConfig / modeling_nemotron:

    - every norm is NemotronLayerNorm1P: F.layer_norm with weight (1 + w) and bias: the ``weight + 1.0`` is an
      ADD over the hidden size on every call; ``norm_eps``.
    - partial rotary: int(head_dim * ``partial_rotary_factor``) dims (default 0.5) rotate, the rest pass.
    - ``num_key_value_heads`` is required (the config class leaves it null and the attention fails).
    - MLP up_proj -> ``hidden_act`` (relu2) -> down_proj with ``mlp_bias``; ``attention_bias`` on q/k/v/o.
    """

    name = "nemotron"
    model_types = ("nemotron",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "nemotron")
        if not f.has("num_key_value_heads"):  # NemotronConfig leaves it None and the attention divides by it
            raise ConfigError("nemotron config is missing the field 'num_key_value_heads' (transformers fails "
                              "without it); set it to num_attention_heads for multi-head attention")
        common = decoder_fields(f, self.name, name)
        bias = f.bool("attention_bias", default=False)
        return DenseSpec(**{**common, "rotary_dim": rotary_dim(f, common["head_dim"], 0.5),
                            "activation": read_activation(f, "hidden_act", default="relu2")},
                         norm="layernorm", gated_mlp=False, qkv_bias=bias, o_bias=bias,
                         mlp_bias=f.bool("mlp_bias", default=False))

    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        return blk.layer_norm(rows, n) + ops.elementwise("add", n)  # weight + 1.0, then F.layer_norm
