"""The Qwen MoE family: qwen2_moe (Qwen1.5-MoE, Qwen2-57B-A14B) and qwen3_moe (Qwen3-30B-A3B, 235B-A22B).

A Qwen2 / Qwen3 decoder whose MLP is a softmax top-k sparse MoE block on most layers (graph/moe.py);
qwen2_moe adds a shared expert scaled by a sigmoid gate.
"""

from __future__ import annotations

from typing import Any

from ..checks import layer_set
from ..errors import ConfigError
from ..graph import blocks as blk
from ..graph.moe import MoESpec
from ..ops import Counts
from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec
from . import register
from .fields import Fields
from .mixtral import SparseMoEStyle
from .template import decoder_fields, tiny_dims


@register
class QwenMoE(SparseMoEStyle):
    """qwen2_moe, qwen3_moe. Quirks, all from the transformers 5.23 config and modeling classes:

    - MoE layers: layer i runs the sparse block unless i is in ``mlp_only_layers`` or (i+1) is not a
      multiple of ``decoder_sparse_step`` (or ``num_experts`` is 0); other layers run a dense gated MLP
      of ``intermediate_size``. Experts have ``moe_intermediate_size``; ``norm_topk_prob`` renormalises the
      top-k probabilities (default false).
    - qwen2_moe: a shared expert (gated MLP of ``shared_expert_intermediate_size``) on every MoE layer,
      scaled by sigmoid(``shared_expert_gate``: Linear(hidden, 1)); q/k/v biases per ``qkv_bias``
      (default true), never on o. head_dim = hidden / heads unless given.
    - qwen3_moe: per-head q_norm / k_norm; ``attention_bias`` on q, k, v and o; head_dim = hidden / heads
      unless given (the released configs give 128).
    - sliding windows are off unless ``use_sliding_window``. qwen2_moe then slides on the even layers
      below ``max_window_layers`` (or per ``layer_types``) and always builds both a full and a sliding
      mask; qwen3_moe slides on every layer (``max_window_layers`` is ignored by transformers).
    """

    name = "qwen_moe"
    model_types = ("qwen2_moe", "qwen3_moe")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        model_type = data["model_type"]
        f = Fields(data, model_type)
        layers = f.int("num_hidden_layers")
        qwen2 = model_type == "qwen2_moe"

        num_experts = f.int("num_experts", "num_local_experts", minimum=0)
        step = f.int("decoder_sparse_step", default=1)
        mlp_only = layer_set(f.raw("mlp_only_layers", default=[]), "mlp_only_layers")  # a set: O(1) per layer
        dense = tuple(i for i in range(layers) if num_experts == 0 or i in mlp_only or (i + 1) % step)
        moe_inter = f.int("moe_intermediate_size")
        # the dense MLP width matters only when some layer is dense
        common = decoder_fields(f, self.name, name, intermediate_default=None if dense else moe_inter)
        window, layer_types = self._sliding(f, layers, qwen2)
        if qwen2:
            qkv_bias, o_bias = f.bool("qkv_bias", default=True), False
        else:
            qkv_bias = o_bias = f.bool("attention_bias", default=False)
        shared = f.int("shared_expert_intermediate_size") if qwen2 and len(dense) < layers else 0
        return MoESpec(
            **{**common, "rotary_dim": common["head_dim"]}, qkv_bias=qkv_bias, o_bias=o_bias,
            sliding_window=window, layer_types=layer_types, qk_norm=not qwen2,
            num_experts=num_experts, experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=moe_inter, norm_topk_prob=f.bool("norm_topk_prob", default=False),
            shared_expert_intermediate_size=shared, shared_expert_gate=bool(shared), dense_layers=dense,
        )

    @staticmethod
    def _sliding(f: Fields, layers: int, qwen2: bool) -> tuple[int | None, tuple[str, ...]]:
        """(window, layer_types) as transformers 5.23 sets them up."""
        use = f.bool("use_sliding_window", default=False)
        # an explicit null window: transformers keeps None (qwen3_moe: no sliding; qwen2_moe: its mask fails)
        null_window = "sliding_window" in f.data and f.data["sliding_window"] is None
        if not qwen2:  # qwen3_moe: sliding_window = None unless use_sliding_window; then every layer slides
            if not use or null_window:
                return None, ()
            return f.int("sliding_window", default=4096, minimum=2), (SLIDING_ATTENTION,) * layers
        types = f.layer_types(layers)
        if types is not None:
            if SLIDING_ATTENTION in types and not use:
                raise ConfigError("qwen2_moe config has sliding_attention layers in 'layer_types' but "
                                  "use_sliding_window is false (transformers then sets the window to 0)")
        elif use:
            first = f.int("max_window_layers", default=28, minimum=0)
            # transformers: sliding when (i + 1) % 2 (even i) and i < max_window_layers
            types = tuple(SLIDING_ATTENTION if (i + 1) % 2 and i < first else FULL_ATTENTION for i in range(layers))
        else:
            types = ()
        if use and null_window:
            raise ConfigError("qwen2_moe config sets use_sliding_window but sliding_window is null; give a window")
        if SLIDING_ATTENTION not in types:
            return None, ()
        return f.int("sliding_window", default=4096, minimum=2), types

    def mask_counts(self, spec: ArchSpec) -> Counts:
        """qwen2_moe builds a full and a sliding mask every forward, used or not (its config sets the window
        to 0 without use_sliding_window); the sliding one spans the first sliding layer's keys, else the
        full layers'."""
        if spec.model_type != "qwen2_moe":
            return super().mask_counts(spec)
        window = spec.sliding_window
        sliding_keys = blk.keys_sliding(window) if window and SLIDING_ATTENTION in spec.layer_types else blk.keys_full()
        return (blk.position_ids() + blk.causal_mask(blk.keys_full())
                + blk.causal_mask(sliding_keys, spec.sliding_window or 0))

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims({k: v for k, v in data.items() if k not in ("num_local_experts", "layer_types")},
                        moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
        if data["model_type"] == "qwen2_moe":
            out["shared_expert_intermediate_size"] = 80
        step = data.get("decoder_sparse_step") or 1
        if step > 1 or data.get("mlp_only_layers"):
            out["num_hidden_layers"] = 4  # room for dense and MoE layers
            out["decoder_sparse_step"] = min(step, 2)
            out["mlp_only_layers"] = [0] if data.get("mlp_only_layers") else []
        if data.get("use_sliding_window"):
            out["max_window_layers"] = 1
        return out
