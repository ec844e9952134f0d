"""The Cohere families: cohere (Command-R, Aya-23) and cohere2 (Command R7B, Command A).

One bias-free LayerNorm (written out op by op) feeds attention and MLP in parallel; the logits are scaled.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import Formula
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..ops import Counts
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import decoder_fields, tiny_dims


def cohere_layer_norm(rows: Formula, n: int, params: int | None = None) -> Counts:
    """CohereLayerNorm.forward over n features for ``rows`` rows (float32, no bias), op by op:
    mean: n-1 ADD + 1 DIV; (x - mean): n ADD; pow(2): n MULT; mean: n-1 ADD + 1 DIV; + eps: 1 ADD;
    rsqrt: 1 SQRT + 1 DIV; (x - mean) again: n ADD; * rstd: n MULT; weight *: n MULT."""
    out = (ops.reduce_mean(rows, n) + ops.elementwise("sub", rows * n) + ops.elementwise("square", rows * n)
           + ops.reduce_mean(rows, n) + ops.elementwise("add", rows) + ops.elementwise("rsqrt", rows)
           + ops.elementwise("sub", rows * n) + ops.elementwise("mul", rows * n) + ops.elementwise("mul", rows * n))
    return blk.with_params(out, n if params is None else params)


class CohereSpec(DenseSpec):
    logit_scale: float = 0.0625  # logits * logit_scale, in the CausalLM's forward


@register
class Cohere(DenseTemplate):
    """cohere, cohere2. Quirks, all from transformers' CohereConfig / Cohere2Config and their modeling code:

    - ``input_layernorm`` (CohereLayerNorm: weight, no bias, ``layer_norm_eps``) feeds attention and MLP in
      parallel: out = x + attn(ln(x)) + mlp(ln(x)); the final ``model.norm`` is the same LayerNorm.
    - the logits are multiplied by ``logit_scale`` (default 0.0625): one MULT per logit.
    - rotary over interleaved pairs (repeat_interleave, rotate_half on even / odd lanes): same counts as Llama's.
    - cohere: optional ``use_qk_norm``: CohereLayerNorms over head_dim with a (heads, head_dim) weight.
    - cohere2: ``layer_types`` (else from ``sliding_window_pattern``,
      default 4: three sliding, one full) with ``sliding_window`` (default 4096); only sliding layers rotate
      q / k (full layers are NoPE); the base model builds both masks.
    - tied embeddings by default; ``attention_bias`` on q/k/v/o; gated SiLU MLP without bias.
    """

    name = "cohere"
    model_types = ("cohere", "cohere2")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        model_type = data["model_type"]
        f = Fields(data, model_type)
        common = decoder_fields(f, self.name, name, tie_default=True)
        layers = common["num_layers"]
        bias = f.bool("attention_bias", default=False)
        extra: dict[str, Any] = {}
        if model_type == "cohere2":
            window = f.int("sliding_window", default=4096, minimum=2) if data.get("sliding_window", 0) is not None \
                else None
            if window is None:
                raise ConfigError("cohere2 config field 'sliding_window' must be a number (null is not supported: "
                                  "transformers would rotate no layer and build no sliding mask)")
            pattern = f.int("sliding_window_pattern", default=4)
            types = f.layer_types(layers) or tuple(
                SLIDING_ATTENTION if (i + 1) % pattern else FULL_ATTENTION for i in range(layers))
            extra = {"sliding_window": window, "layer_types": types if SLIDING_ATTENTION in types else (),
                     "both_masks": True, "nope_layers": tuple(i for i, t in enumerate(types) if t == FULL_ATTENTION)}
        else:
            extra = {"qk_norm": f.bool("use_qk_norm", default=False)}
        scale = f.float("logit_scale", default=0.0625)
        return CohereSpec(**{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias,
                          norm="layernorm", norm_bias=False, logit_scale=scale, **extra)

    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        return cohere_layer_norm(rows, n)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        # q_norm / k_norm normalise each head over head_dim; their weight is (heads, head_dim)
        D, t = spec.head_dim, blk.TOKENS
        heads = {".self_attn.q_norm": spec.num_heads, ".self_attn.k_norm": spec.num_kv_heads}
        return [Part(p.suffix, p.module_suffix, p.kind, cohere_layer_norm(t * heads[p.suffix], D, heads[p.suffix] * D),
                     p.block) if p.suffix in heads else p for p in super().attention_parts(spec, layer)]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h = spec.hidden_size
        return [
            Part(".input_layernorm", ".input_layernorm", NodeKind.NORM, self.norm(spec, blk.TOKENS, h)),
            *self.attention_parts(spec, layer),
            *self.ffn_parts(spec, layer),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(h)),  # x + attn + mlp
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        scale = ops.elementwise("mul", blk.TOKENS * spec.vocab_size)  # logits * logit_scale
        return [*super().tail_parts(spec), Part(":logit_scale", "", NodeKind.LM_HEAD, scale)]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data)
        if data["model_type"] == "cohere2":
            out.pop("sliding_window_pattern", None)
            f = Fields(data, "cohere2")
            if "layer_types" not in out:
                pattern = f.int("sliding_window_pattern", default=4)
                out["layer_types"] = [SLIDING_ATTENTION] * (pattern - 1) + [FULL_ATTENTION]
                out["num_hidden_layers"] = pattern
            out["sliding_window"] = 4
        return out
