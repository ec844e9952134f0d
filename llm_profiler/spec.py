"""ArchSpec: every architectural fact that changes a count, explicit, validated and frozen.

A family module (``llm_profiler.families``) is the only place that reads a raw config; it produces an
ArchSpec (or a subclass with the family's own extra fields), and the graph is built from that alone.

Global facts (hidden size, heads, vocabulary, norms, ...) sit on the ArchSpec; what may differ from layer to
layer is one ``LayerSpec`` per layer: a typed token mixer (full, sliding-window or chunked attention,
attention with sinks, MLA, sparse attention with an indexer, linear attention, a state-space scan) and a
typed FFN (dense, gated, mixture of experts with shared experts). Heterogeneity across layers is data,
validated here, not a free-form string; the template builds one set of parts per distinct LayerSpec and
stamps it on every layer that has it.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION: Final = "sliding_attention"

MixerKind = Literal["attention", "sliding_attention", "chunked_attention", "mla", "sparse_attention",
                    "linear_attention", "state_space"]
FFNKind = Literal["dense", "gated", "moe", "none"]


class Mixer(BaseModel):
    """A layer's token mixer. ``window``: a sliding window's length; ``chunk``: chunked attention's (or a
    chunked scan's) chunk; ``sinks``: learned attention sinks; ``rope``: whether positions are rotated
    (NoPE layers have none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MixerKind = "attention"
    window: int | None = Field(default=None, gt=1)
    chunk: int | None = Field(default=None, gt=0)
    sinks: bool = False
    rope: bool = True

    @model_validator(mode="after")
    def _check(self) -> Mixer:
        if self.kind == "sliding_attention" and self.window is None:
            raise ValueError("a sliding_attention layer needs a window")
        if self.kind == "chunked_attention" and self.chunk is None:
            raise ValueError("a chunked_attention layer needs a chunk size")
        return self


class FFN(BaseModel):
    """A layer's feed-forward block: ``dense`` (up, act, down), ``gated`` (act(gate) * up, down), ``moe``
    (``experts`` routed experts of ``intermediate`` each, ``top_k`` per token, plus ``shared_intermediate``
    of shared experts), or ``none``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FFNKind = "gated"
    intermediate: int = Field(default=0, ge=0)
    experts: int = Field(default=0, ge=0)
    top_k: int = Field(default=0, ge=0)
    shared_intermediate: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> FFN:
        if self.kind == "moe" and not 1 <= self.top_k <= self.experts:
            raise ValueError(f"a moe layer needs 1 <= top_k ({self.top_k}) <= experts ({self.experts})")
        return self


class LayerSpec(BaseModel):
    """What one decoder layer is: its mixer and its FFN (hashable: equal layers share one template)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mixer: Mixer = Mixer()
    ffn: FFN = FFN()

    @property
    def sliding(self) -> bool:
        return self.mixer.kind == "sliding_attention"

    @property
    def moe(self) -> bool:
        return self.ffn.kind == "moe"


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
    lm_head_bias: bool = False  # the output projection adds a bias (phi, gptj, phimoe, ernie4_5_moe)
    notes: tuple[str, ...] = ()  # what the profiler decided that a user should know
    layers: tuple[LayerSpec, ...] = ()  # one per layer (derived from the fields above when not given)

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
        if not self.layers:
            object.__setattr__(self, "layers", self.derive_layers())
        elif len(self.layers) != self.num_layers:
            raise ValueError(f"layers has {len(self.layers)} entries for {self.num_layers} layers")
        return self

    def derive_layers(self) -> tuple[LayerSpec, ...]:
        """Every layer as the global fields describe it (subclasses add their FFN kinds)."""
        return tuple(self.default_layer(i) for i in range(self.num_layers))

    def default_layer(self, index: int) -> LayerSpec:
        """Layer ``index`` as the global fields describe it (a family spec may refine ``ffn`` / ``mixer``)."""
        if self.layer_type(index) == SLIDING_ATTENTION:
            mixer = Mixer(kind="sliding_attention", window=self.sliding_window)
        else:
            mixer = Mixer()
        ffn = FFN(kind="gated" if self.gated_mlp else "dense", intermediate=self.intermediate_size)
        return LayerSpec(mixer=mixer, ffn=ffn)

    def layer_type(self, layer: int) -> str:
        return self.layer_types[layer] if self.layer_types else FULL_ATTENTION
