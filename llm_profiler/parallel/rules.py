"""The tensor-parallel style of each linear module, by its leaf name: the one place the TP plan lives.

Read from transformers' own plans (``base_model_tp_plan`` of the configuration classes, transformers 5.23:
``LlamaConfig``, ``MistralConfig``, ``Qwen2Config``, ``Qwen3Config``, ``MixtralConfig``, ``Qwen3MoeConfig``,
``DeepseekV3Config``; ``_tp_plan = {"lm_head": "colwise_gather_output"}`` on the causal-LM classes):

- ``colwise``: ``q_proj``, ``k_proj``, ``v_proj``, ``gate_proj``, ``up_proj`` (and a shared expert's);
  MoE experts' ``gate_up_proj`` is ``packed_colwise`` (gate and up halves split alike);
- ``rowwise``: ``o_proj``, ``down_proj`` (and the experts' ``down_proj``, under ``moe_tp_experts``);
- the lm_head column-parallel with its logits gathered.

MLA's up-projections (``q_b_proj``, ``kv_b_proj``) are column-parallel and its down-projections
(``q_a_proj``, ``kv_a_proj_with_mqa``) replicated, as vLLM's DeepSeek model shards them
(``ColumnParallelLinear`` / ``ReplicatedLinear`` in vllm/model_executor/models/deepseek_v2.py); transformers'
DeepseekV3 plan leaves the attention replicated. Megatron-LM (Shoeybi et al., 2019, section 3) is the
origin of the column-then-row pairing: one all-reduce per attention block and one per MLP.
"""

from __future__ import annotations

COLUMN = "column"
ROW = "row"

STYLES: dict[str, str] = {
    "q_proj": COLUMN, "k_proj": COLUMN, "v_proj": COLUMN, "q_b_proj": COLUMN, "kv_b_proj": COLUMN,
    "gate_proj": COLUMN, "up_proj": COLUMN,
    "o_proj": ROW, "down_proj": ROW,
}
KV_PROJECTIONS = frozenset({"k_proj", "v_proj"})  # their output is kv_heads x head_dim wide


def leaf(path: str) -> str:
    """The module's own name: ``model.layers.3.self_attn.q_proj`` -> ``q_proj`` (a ``:part`` dropped)."""
    return path.partition(":")[0].rsplit(".", 1)[-1]


def style(path: str) -> str | None:
    """``column``, ``row`` or None (replicated) for the linear at ``path``."""
    return STYLES.get(leaf(path))


__all__ = ["COLUMN", "KV_PROJECTIONS", "ROW", "STYLES", "leaf", "style"]
