"""ArchSpec: every architectural fact that changes a count, explicit, validated and frozen.

A family module (``llm_profiler.families``) is the only place that reads a raw config; it produces an
ArchSpec (or a subclass with the family's own extra fields), and the graph is built from that alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


class ArchSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_type: str
    family: str
    name: str = ""
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    activation: str = "silu"  # a Hugging Face activation name (llm_profiler.graph.activations.HF_ACTIVATIONS)
    gated_mlp: bool = True
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    rotary_dim: int = Field(default=0, ge=0)  # 0: no rotary embedding
    sliding_window: int | None = Field(default=None, gt=0)
    layer_types: tuple[str, ...] = ()  # per layer: full_attention / sliding_attention
    qk_norm: bool = False
    notes: tuple[str, ...] = ()  # what the profiler decided that a user should know

    @model_validator(mode="after")
    def _check(self) -> ArchSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads ({self.num_kv_heads})"
            )
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        if SLIDING_ATTENTION in self.layer_types and self.sliding_window is None:
            raise ValueError("sliding_attention layers need a sliding_window")
        if self.rotary_dim % 2:
            raise ValueError(f"rotary dimension {self.rotary_dim} must be even: check head_dim (and the partial rotary factor)")
        return self

    def layer_type(self, layer: int) -> str:
        return self.layer_types[layer] if self.layer_types else FULL_ATTENTION
