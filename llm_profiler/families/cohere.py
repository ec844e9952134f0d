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
from ..graph.moe import expert_activation, gated_mlp_parts, routed_experts
from ..graph.node import MLP
from ..graph.routers import Router, topk_router
from ..ops import Counts
from ..spec import FFN, FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec, LayerSpec, Mixer
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import decoder_fields, gated_mlp, tiny_dims


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


class Cohere2MoeSpec(CohereSpec):
    num_experts: int = 0
    experts_per_token: int = 0
    sigmoid_router: bool = False  # expert_selection_fn "sigmoid": sigmoid of the k chosen logits (else a softmax)
    norm_topk_prob: bool = True  # with the sigmoid router: the k weights divided by their sum
    shared_average: bool = True  # shared_expert_combination_strategy "average": (routed + shared) / 2, else a sum

    # what the MoE backward rules (training.backward's router / experts) read
    @property
    def moe_intermediate_size(self) -> int:
        return self.intermediate_size

    @property
    def router(self) -> Router:
        return Router(scoring="topk_softmax")  # the sigmoid router has its own rule (training.backward_dense)


@register
class Cohere2Moe(Cohere):
    """cohere2_moe (transformers Cohere2MoeConfig / modeling): cohere2's parallel block and logit scale with
    quirks of its own:

    - the norms are RMSNorms when ``rms_norm_eps`` is set, else cohere's LayerNorm (``layer_norm_eps``).
    - ``mlp_layer_types`` ("dense" / "sparse"; default: the first ``first_k_dense_replace`` dense): a dense
      layer's MLP is ``prefix_dense_intermediate_size`` wide (default ``intermediate_size``); a sparse one is
      ``mlp.gate`` (F.linear to ``num_experts``, top-k of the logits, then a softmax over the k, or with
      ``expert_selection_fn`` "sigmoid" their sigmoid, divided by its sum under ``norm_topk_prob``),
      ``mlp.experts`` (Mixtral's batched experts) and ``num_shared_experts`` > 0: ``mlp.shared_experts`` (a
      gated MLP of intermediate_size * num_shared_experts) combined by sum or ``average`` (sum, / 2).
    - rope on sliding layers, and on dense layers too when ``prefix_dense_sliding_window_pattern`` is 1.
    - ``layer_types`` default: the dense prefix by ``prefix_dense_sliding_window_pattern``, the rest by
      ``sliding_window_pattern`` (each: every n-th layer full).
    """

    name = "cohere2_moe"
    model_types = ("cohere2_moe",)  # type: ignore[assignment]  # Cohere's holds two

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "cohere2_moe")
        common = decoder_fields(f, self.name, name, tie_default=True)
        layers = common["num_layers"]
        if "sliding_window" in data and data["sliding_window"] is None:
            raise ConfigError("cohere2_moe config field 'sliding_window' must be a number (null is not supported: "
                              "transformers builds the sliding mask on every forward)")
        window = f.int("sliding_window", default=4096, minimum=2)
        prefix = f.int("first_k_dense_replace", default=0, minimum=0)
        dense_pattern = f.int("prefix_dense_sliding_window_pattern", default=1, minimum=1)
        pattern = f.int("sliding_window_pattern", default=4, minimum=1)
        types = f.layer_types(layers) or tuple(  # the dense prefix's pattern, then the rest's from 0
            SLIDING_ATTENTION if (i + 1) % n else FULL_ATTENTION
            for n, count in ((dense_pattern, prefix), (pattern, layers - prefix)) for i in range(count))
        mlp_types = f.layer_types(layers, ("dense", "sparse"), "mlp_layer_types") or tuple(
            "dense" if i < prefix else "sparse" for i in range(layers))
        selection = f.str("expert_selection_fn", default="softmax")
        combine = f.str("shared_expert_combination_strategy", default="average")
        if selection not in ("softmax", "sigmoid") or combine not in ("sum", "average"):
            raise ConfigError("cohere2_moe config fields 'expert_selection_fn' (softmax / sigmoid) and "
                              "'shared_expert_combination_strategy' (sum / average): transformers raises otherwise")
        inter = common["intermediate_size"]
        experts, top_k = f.int("num_experts"), f.int("num_experts_per_tok")
        moe = FFN(kind="moe", intermediate=inter, experts=experts, top_k=top_k,
                  shared_intermediate=inter * f.int("num_shared_experts", default=0, minimum=0))
        dense = FFN(kind="gated", intermediate=f.int("prefix_dense_intermediate_size", default=inter))
        force_rope = dense_pattern == 1  # a dense layer rotates q / k even when full
        specs = tuple(LayerSpec(
            mixer=Mixer(kind="sliding_attention", window=window) if t == SLIDING_ATTENTION
            else Mixer(rope=force_rope and m == "dense"),
            ffn=moe if m == "sparse" else dense) for t, m in zip(types, mlp_types))
        rms = data.get("rms_norm_eps") is not None
        bias = f.bool("attention_bias", default=False)
        return Cohere2MoeSpec(
            **{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias,
            norm="rmsnorm" if rms else "layernorm", norm_bias=False, logit_scale=f.float("logit_scale", default=0.0625),
            sliding_window=window, layer_types=types if SLIDING_ATTENTION in types else (), both_masks=True,
            layers=specs, num_experts=experts, experts_per_token=top_k, sigmoid_router=selection == "sigmoid",
            norm_topk_prob=f.bool("norm_topk_prob", default=True), shared_average=combine == "average")

    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        return blk.rms_norm(rows, n) if spec.norm == "rmsnorm" else cohere_layer_norm(rows, n)

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return gated_mlp(spec, intermediate=layer.ffn.intermediate)

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, Cohere2MoeSpec)
        h, t, ffn, m = spec.hidden_size, blk.TOKENS, layer.ffn, ".mlp"
        E, k, inter = ffn.experts, ffn.top_k, ffn.intermediate
        if spec.sigmoid_router:  # top-k of the logits, their sigmoid, / their sum
            router = blk.linear(t, h, E, bias=False) + ops.topk(t, E, k) + ops.elementwise("sigmoid", t * k)
            if spec.norm_topk_prob:
                router = router + ops.reduce_sum(t, k) + ops.elementwise("div", t * k)
        else:
            router = topk_router(h, E, k, Router(scoring="topk_softmax"))
        parts = [
            Part(f"{m}.gate", f"{m}.gate", NodeKind.ROUTER, router, MLP),
            Part(f"{m}.experts", f"{m}.experts", NodeKind.EXPERTS, routed_experts(h, inter, E, k), MLP),
            Part(f"{m}.experts.act_fn", f"{m}.experts.act_fn", NodeKind.ACTIVATION,
                 expert_activation(spec.activation, inter, k), MLP),
        ]
        if ffn.shared_intermediate:
            mix = ops.elementwise("add", t * h)
            if spec.shared_average:
                mix = mix + ops.elementwise("div", t * h)
            parts += [*gated_mlp_parts(f"{m}.shared_experts", h, ffn.shared_intermediate, spec.activation),
                      Part(f"{m}:shared_mix", m, NodeKind.ELEMENTWISE, mix, MLP)]
        return parts

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, num_experts=4, num_experts_per_tok=2)
        if isinstance(data.get("layer_types"), list):  # tiny_dims kept a prefix holding each layer kind
            layers = out["num_hidden_layers"]
        else:
            layers = out["num_hidden_layers"] = int(data.get("sliding_window_pattern") or 4)
        if isinstance(data.get("mlp_layer_types"), list):
            out["mlp_layer_types"] = data["mlp_layer_types"][:layers]
        if data.get("prefix_dense_intermediate_size"):
            out["prefix_dense_intermediate_size"] = 80
        return out
