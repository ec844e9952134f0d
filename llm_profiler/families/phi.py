"""The Phi family: phi (phi-1 / phi-1.5 / phi-2): one LayerNorm feeds attention and MLP in parallel, partial
rotary, biased dense / fc1 / fc2, gelu_new, final_layernorm and an lm_head with bias. (Phi-3 / Phi-4: phi3.py.)
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, part, plain_mlp, renamed


def rope_parameters(f: Fields) -> dict[str, Any]:
    """``rope_parameters`` (transformers 5) or the legacy ``rope_scaling``, as transformers reads them."""
    for key in ("rope_parameters", "rope_scaling"):
        value = f.raw(key)
        if value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{f.model_type} config field {key!r} must be an object, got {value!r}")
            return value
    return {}


def rotary_dim(f: Fields, head_dim: int, default_factor: float) -> int:
    """int(head_dim * partial_rotary_factor), the factor read where transformers reads it first:
    inside rope_parameters, then at the top level."""
    rope = rope_parameters(f)
    factor = rope.get("partial_rotary_factor")
    if factor is None:
        factor = f.float("partial_rotary_factor", default=default_factor)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ConfigError(f"{f.model_type} config field 'partial_rotary_factor' must be in (0, 1], got {factor!r}")
    dim = int(head_dim * factor)
    if dim % 2:
        raise ConfigError(f"{f.model_type} config: rotary dimension int({head_dim} * {factor}) = {dim} must be even")
    return dim


@register
class Phi(DecoderTemplate):
    """phi. Quirks, all from transformers' PhiConfig / modeling_phi:

    - one ``input_layernorm`` (LayerNorm with bias) feeds attention and MLP in parallel:
      out = attn(ln(x)) + mlp(ln(x)) + x (two additions).
    - partial rotary: int(head_dim * ``partial_rotary_factor``) dims (default 0.5; phi-2 0.4 -> 32 of 80;
      the tiny head_dim 16 keeps it binding: 6 of 16).
    - q / k / v / dense / fc1 / fc2 all have biases; ``hidden_act`` gelu_new is eight Python ops.
    - optional ``qk_layernorm``: LayerNorms over each head of q and k.
    - ``model.final_layernorm``; the lm_head has a bias (kept when the weight is tied).
    """

    name = "phi"
    model_types = ("phi",)
    final_norm_name = "final_layernorm"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "phi")
        common = decoder_fields(f, self.name, name, activation_default="gelu_new")
        qk_norm = f.bool("qk_layernorm", default=False)
        if qk_norm and common["head_dim"] != common["hidden_size"] // common["num_heads"]:
            raise ConfigError("phi config: qk_layernorm needs head_dim == hidden_size // num_attention_heads")
        return ArchSpec(**{**common, "rotary_dim": rotary_dim(f, common["head_dim"], 0.5)}, norm="layernorm",
                        gated_mlp=False, qkv_bias=True, o_bias=True, mlp_bias=True, qk_norm=qk_norm,
                        lm_head_bias=True)  # tied: the weight is the embedding's, the bias the head's

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        # Llama's parts with phi's names: dense for o_proj, q_layernorm / k_layernorm (LayerNorm per head).
        a = ".self_attn"
        names = {f"{a}.o_proj": f"{a}.dense", f"{a}.q_norm": f"{a}.q_layernorm", f"{a}.k_norm": f"{a}.k_layernorm"}
        return renamed(super().attention_parts(spec, layer), names)

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".mlp.fc1", ".mlp.activation_fn", ".mlp.fc2")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return [self.norm_part(spec, ".input_layernorm"), *self.attention_parts(spec, layer),
                *self.ffn_parts(spec, layer),
                part(":residual", NodeKind.RESIDUAL, blk.residual(spec.hidden_size))]  # attn + mlp + x

