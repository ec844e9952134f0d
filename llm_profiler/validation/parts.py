"""Which part of a module's own forward an aten op belongs to: the one table of the measuring side.

A graph node's path is a module path (``model.layers.0.self_attn.q_proj``) or ``<module>:<part>`` for
computation a module does in its own forward (``model.layers.0.self_attn:scores``). The module stack
(``measure._ModuleStack``) gives the module; this table gives the part, from where in transformers' code
the op runs: the innermost Python frame that lies in the transformers package (its qualified function
name, its file, its source line) and the aten op. transformers structures that code by function, so the
function names the part: rope in ``apply_rotary_pos_emb`` / ``rotate_half``, masks in ``masking_utils``,
the attention math in ``eager_attention_forward``.

Inside one attention function (``ORDERED``) the order of the ops decides: everything before the softmax is
``scores`` (q @ k^T, the scaling, the mask, alibi), the ``_softmax`` op itself is ``softmax``, everything
after it in the same call is ``context`` (probs @ v). Rules are tried in order; the first that matches wins.

The table is consulted only for the ops of a module whose ``forward`` is transformers code (an op of an
``nn.Linear`` also has a transformers frame innermost: the caller's line, ``self.q_proj(x) * self.scaling``,
and is the Linear's, never its caller's). An op that no rule matches has no part: ``compare`` gives it to
the module's own node (a module path node) or to the module's only node; where the module has several part
nodes and none of its own, it stays on the module path, a row no graph node predicts: a loud mismatch.
"""

from __future__ import annotations

import linecache
import os
import re
from dataclasses import dataclass
from functools import cache
from types import CodeType

ORDERED = "<ordered>"  # a rule's part: scores / softmax / context by the op's order in the attention call
SCORES, SOFTMAX, CONTEXT = "scores", "softmax", "context"


@dataclass(frozen=True)
class Rule:
    part: str  # the part name (the text after ":" in a node path), or ORDERED
    function: str  # a regex the frame's qualified name (code.co_qualname) must match in full
    why: str  # which transformers code this is, and which families run it
    file: str | None = None  # a regex the file (relative to the transformers package) must match in full
    line: str | None = None  # a regex the source line must contain
    op: str | None = None  # a regex the aten op's name must match in full (two parts on one source line)

    def matches(self, qualname: str, file: str, line: str, op: str = "") -> bool:
        return (re.fullmatch(self.function, qualname) is not None
                and (self.file is None or re.fullmatch(self.file, file) is not None)
                and (self.line is None or re.search(self.line, line) is not None)
                and (self.op is None or re.fullmatch(self.op, op) is not None))


BASE_MODEL = r"\w+Model\.forward|OPTDecoder\.forward"  # the base model's forward (GPT2Model, LlamaModel, ...)

RULES: tuple[Rule, ...] = (
    Rule("rope", r"apply_rotary_pos_emb|rotate_half",
         "the rotary embedding applied to q and k, x * cos + rotate_half(x) * sin: llama, mistral, qwen2, "
         "qwen3, mixtral, qwen2_moe, qwen3_moe, gemma, gemma2, gemma3, phi, phi3, starcoder2, olmo2, falcon, "
         "gpt_neox, deepseek_v3"),
    Rule("rope", r"apply_rotary_pos_emb_interleave", "deepseek_v3 with rope_interleave"),
    Rule("rope", r"apply_rotary_emb", "deepseek_v2: complex rotary, q_pe * freqs_cis"),
    Rule("rope", r"rotate_every_two", "gptj, codegen: interleaved rotary (rotate every two)"),
    Rule("sincos", r"GPTJAttention\.forward|CodeGenAttention\.forward", "gptj, codegen: the sin / cos rows of "
         "the positions gathered from the fixed table", line=r"sincos"),
    Rule("q_scaling", r"XGLMAttention\.forward", "xglm scales q after q_proj", line=r"\* self\.scaling"),
    Rule("rope", r"_apply_rotary_emb", "gpt_oss: q and k rotated by halves (first * cos - second * sin, ...)"),
    Rule("swiglu", r"GptOssExperts\._apply_gate", "gpt_oss: the clamped SwiGLU of the experts "
         "((clamp(up) + 1) * clamp(gate) * sigmoid(alpha * gate))"),
    Rule("temperature", r"Llama4TextAttention\.forward", "llama4 NoPE layers: attention temperature tuning "
         "(log1p(floor((positions + 1) / floor_scale)) * attn_scale + 1, times q)",
         line=r"positions|attn_scales"),
    Rule("temperature", r"get_llama_4_attn_scale|Ministral3Attention\.forward", "ministral3: the Llama-4-style "
         "query scaling, 1 + beta * log(1 + floor(positions / original_max_position_embeddings)), times q",
         line=r"get_llama_4_attn_scale|floor"),
    Rule("entry_positions", r"DeepseekV4(HCA|CSA)Compressor\.forward|DeepseekV4Indexer\.forward", "deepseek_v4: "
         "the compressed entries' positions (arange * ratio + first), the queries' causal threshold "
         "((position_ids + 1) // ratio) and entry >= threshold, once per position (not per sequence)",
         line=r"^positions = |^causal_threshold = |entry_indices\.view"),
    Rule("longrope", r".*longrope_frequency_update",
         "phi3 longrope: the long or short inv_freq chosen every forward (dynamic_rope_update), "
         "run by the rotary embedding module", file=r"modeling_rope_utils\.py"),
    Rule("positions", r".*", "the causal / sliding-window mask (create_causal_mask and the mask functions it "
         "composes), built once per forward by the base model: every family", file=r"masking_utils\.py"),
    Rule("embed_add", BASE_MODEL, "gpt2, opt, xglm: token embeddings + position embeddings, in the base model",
         line=r"inputs_embeds \+ (pos(ition)?_embeds|self\.embed_positions)"),
    Rule("ids", r"XGLMSinusoidalPositionalEmbedding\.forward", "xglm: position ids + the padding offset, in the "
         "sinusoidal position embedding", line=r"position_ids \+ self\.offset"),
    Rule("embedding_multiplier", BASE_MODEL, "granite, granitemoe(shared): the embeddings times "
         "embedding_multiplier, in the base model", line=r"embedding_multiplier"),
    Rule("positions", BASE_MODEL, "position ids in the base model: arange(S) + past_seen_tokens (every "
         "family), opt's cumsum of the attention mask", line=r"position_ids|past_seen_tokens"),
    Rule("positions", r"build_alibi_tensor|.*_get_alibi_slopes", "alibi slopes and biases, built by the base "
         "model: bloom, falcon with alibi"),
    Rule("residual", r"dropout_add", "bloom, falcon: residual + dropout(x) (bloom's inside attention and MLP)"),
    Rule("residual_multiplier", r"\w+DecoderLayer\.forward", "granite, granitemoe(shared), minicpm3: the block "
         "output times residual_multiplier (minicpm3: residual_scale), on the residual add's line",
         line=r"residual_multiplier|residual_scale", op=r"mul"),
    Rule("residual", r"\w+DecoderLayer\.forward", "granite, granitemoe(shared), minicpm3: residual + (block output "
         "x residual_multiplier)", line=r"residual_multiplier|residual_scale", op=r"add"),
    Rule("shared_mix", r"GraniteMoe(Shared|SWA)DecoderLayer\.forward", "granitemoeshared, granitemoe_swa: the routed experts' "
         "output + the shared MLP's", line=r"shared_mlp"),
    Rule("q_scale", r"OPTAttention\.forward", "opt scales q after q_proj, before the attention call",
         line=r"\* self\.scaling"),
    Rule("final_softcap", r"\w+ForCausalLM\.forward", "gemma2, gemma3: final logit soft-capping, "
         "tanh(logits / cap) * cap", line=r"final_logit_softcapping|tanh"),
    Rule("softcap", r"eager_attention_forward", "gemma2, gemma3: attention logit soft-capping between the "
         "scaled scores and the mask, tanh(scores / cap) * cap", line=r"softcap|tanh"),
    Rule("sinks", r"eager_attention_forward", "gpt_oss: the sink logit column joined to the scores and the row "
         "maximum subtracted before the softmax", file=r"models/gpt_oss/.*", line=r"combined_logits\.max"),
    Rule("sink_scale", r"eager_attention_forward", "granite_swa, granitemoe_swa: the sink scale sigmoid(logsumexp("
         "scores) - sink) and the attention output times it", file=r"models/granite(moe)?_swa/.*",
         line=r"logsumexp|sink_scale"),
    Rule("output_gate", r"Qwen3(Next|_5|_5Moe)Attention\.forward", "qwen3_next, qwen3_5(_moe): the attention "
         "output times sigmoid(gate), the gate being the second half of q_proj", line=r"sigmoid\(gate\)"),
    Rule("conv", r"causal_conv1d_fn|causal_conv1d_update", "qwen3_next, qwen3_5(_moe) gated DeltaNet: the short "
         "causal depthwise conv1d (F.conv1d; its activation, through ACT2FN, is the module's own node)",
         file=r"models/qwen3_(next|5|5_moe)/.*"),
    Rule("gates", r"Qwen3(Next|_5|_5Moe)GatedDeltaNet\.forward", "qwen3_next, qwen3_5(_moe) gated DeltaNet: "
         "beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias)", line=r"sigmoid\(\)|softplus"),
    Rule("l2norm", r"l2norm", "qwen3_next, qwen3_5(_moe) gated DeltaNet: q and k l2-normalised in the delta rule",
         file=r"models/qwen3_(next|5|5_moe)/.*"),
    Rule("delta_rule", r"torch_chunk_gated_delta_rule|torch_recurrent_gated_delta_rule", "qwen3_next, "
         "qwen3_5(_moe): the gated delta rule's torch path (chunked scan for a prefill, recurrent for a decode step)"),
    Rule("topk", r"DeepseekV32Indexer\.forward|GlmMoeDsaIndexer\.forward", "deepseek_v32, glm_moe_dsa: the "
         "lightning indexer's top index_topk keys per query", line=r"\.topk\("),
    Rule("scores", r"DeepseekV32Indexer\.forward|GlmMoeDsaIndexer\.forward", "deepseek_v32, glm_moe_dsa: the "
         "lightning indexer's scores (q @ k^T, the scale, ReLU, the head weights' scale, their weighted sum, "
         "the mask)"),
    Rule("combine", r"Gemma4TextDecoderLayer\.forward", "gemma4: the dense MLP's and the experts' outputs "
         "summed, in the decoder layer", line=r"hidden_states_1 \+ hidden_states_2"),
    Rule("layer_scalar", r"Gemma4TextDecoderLayer\.forward", "gemma4: the layer output times its "
         "layer_scalar buffer", line=r"layer_scalar"),
    Rule("residual", r"Gemma4TextDecoderLayer\.forward", "gemma4: the residual additions of the decoder "
         "layer (beside its combine and layer_scalar parts)", line=r"residual \+"),
    Rule("per_layer_input", r"Gemma4TextDecoderLayer\.forward", "gemma4 with per-layer embeddings: the gated "
         "hidden states times the layer's per-layer input", line=r"\* per_layer_input\b"),
    Rule("per_layer_inputs", r"Gemma4TextModel\.project_per_layer_inputs", "gemma4 with per-layer embeddings: "
         "the projection's scale and the average of the projected and looked-up per-layer inputs, in the base "
         "model"),
    Rule("row_max", r"eager_attention_forward", "mimo_v2_flash: the row maximum (over the keys and, on sliding "
         "layers, the sink column) subtracted before the softmax", file=r"models/mimo_v2_flash/.*",
         line=r"attn_weights\.max"),
    Rule("v_scale", r"MiMoV2FlashAttention\.forward", "mimo_v2_flash: the values times attention_value_scale",
         line=r"v_scale"),
    Rule(ORDERED, r"eager_attention_forward", "the eager attention function of every family that has one"),
    Rule(ORDERED, r"GPT2Attention\._upcast_and_reordered_attn", "gpt2 with reorder_and_upcast_attn (baddbmm)"),
    Rule(ORDERED, r"FalconAttention\.forward", "falcon computes attention in its forward (rotary or alibi)"),
    Rule(ORDERED, r"BloomAttention\.forward", "bloom computes attention in its forward (alibi baddbmm)"),
    Rule(ORDERED, r"\w+Attention\._attn", "gptj, codegen, gpt_neo: the attention math in the attention's _attn"),
    Rule(ORDERED, r"MptAttention\.forward|XGLMAttention\.forward", "mpt, xglm compute attention in their forward"),
)

# State-space mixers (llm_profiler/graph/ssm.py): the torch fallbacks transformers runs without the mamba_ssm /
# causal_conv1d kernels, module-level functions of the same name in every Mamba-2 hybrid's modeling file.
RULES = RULES + (
    Rule("decay", r"\w*Mixer\.forward|\w*MambaLayer\.forward", "A = -exp(A_log), the state decay rates, once per "
         "forward in the mixer's own forward: nemotron_h, mamba2, falcon_h1, granitemoehybrid, jamba, mamba",
         line=r"-torch\.exp\(self\.A_log"),
    Rule("conv", r"causal_conv1d_fn|causal_conv1d_update", "the short causal depthwise conv1d of a state-space "
         "mixer (F.conv1d, its bias): nemotron_h, mamba2, falcon_h1, granitemoehybrid, jamba, mamba"),
    Rule("dt", r"mamba2_chunk_scan|mamba2_selective_state_update|mamba_selective_scan|mamba_selective_state_update",
         "the time step: dt + dt_bias, softplus and (Mamba-2's chunked scan) the clamp to the time-step limits, "
         "in the scan functions: nemotron_h, mamba2, falcon_h1, granitemoehybrid, jamba, mamba",
         line=r"dt_bias|delta_bias|softplus|torch\.clamp\(dt"),
    Rule("dt", r"\w*MambaMixer\.forward", "Mamba-1's dt = dt_proj.weight @ dt (the mixer's own matmul with the "
         "dt_proj module's weight): jamba, mamba", line=r"dt_proj\.weight @"),
    Rule("scan", r"mamba2_chunk_scan|mamba2_selective_state_update|segment_sum", "Mamba-2's selective scan: the "
         "chunked SSD form (segment sums, the four einsums, D skip) or the one-token state update: nemotron_h, "
         "mamba2, falcon_h1, granitemoehybrid"),
    Rule("shared_mix", r"GraniteMoeHybridDecoderLayer\.forward", "granitemoehybrid: the routed experts' output + "
         "the shared MLP's", line=r"shared_mlp"),
    Rule("scan", r"mamba_selective_scan|mamba_selective_state_update", "Mamba-1's selective scan: the sequential "
         "torch loop over the tokens or the one-token state update (D skip, * silu(z)): jamba, mamba"),
)


# MiniMax's lightning attention (llm_profiler/graph/lightning_attention.py): its own forward computes the block /
# recurrent linear attention and the output gate.
RULES = RULES + (
    Rule("output_gate", r"MiniMaxLightningAttention\.forward", "minimax: the lightning output times "
         "sigmoid(output_gate(x))", line=r"sigmoid\(self\.output_gate"),
    Rule("lightning", r"MiniMaxLightningAttention\.forward", "minimax: lightning attention, the block form "
         "(intra-block decayed q @ k^T @ v, inter-block q @ state, the state update) or the token-by-token "
         "recurrent form after a prefill, with the decay factors"),
)


_TRANSFORMERS_DIR: str | None = None


def transformers_dir() -> str:
    """The transformers package directory, with a trailing separator."""
    global _TRANSFORMERS_DIR
    if _TRANSFORMERS_DIR is None:
        import transformers

        _TRANSFORMERS_DIR = os.path.dirname(os.path.abspath(transformers.__file__)) + os.sep
    return _TRANSFORMERS_DIR


def _relative(filename: str) -> str:
    root = transformers_dir()
    return filename[len(root):].replace(os.sep, "/") if filename.startswith(root) else filename


@cache
def rule_for(code: CodeType, lineno: int, op: str = "") -> Rule | None:
    """The first rule matching a transformers source line and aten op (cached: the same line runs in every
    layer)."""
    qualname = getattr(code, "co_qualname", code.co_name)
    line = linecache.getline(code.co_filename, lineno).strip()
    file = _relative(code.co_filename)
    for rule in RULES:
        if rule.matches(qualname, file, line, op):
            return rule
    return None


def describe(code: CodeType, lineno: int) -> str:
    """``function (file:line)`` of a frame in transformers, for reports."""
    return f"{getattr(code, 'co_qualname', code.co_name)} ({_relative(code.co_filename)}:{lineno})"

# Experts that scatter back by index (llm_profiler/graph/scatter_experts.py) and DBRX's clamp.
RULES = RULES + (
    Rule("moa_map", r"JetMoeMoA\.map", "jetmoe: the mixture-of-attention experts' query projections scattered back "
         "to token order (zeros.index_add), run by the attention (JetMoeMoA.map is not a forward)"),
    Rule("moa_reduce", r"JetMoeMoA\.reduce", "jetmoe: the attention experts' outputs times their gates, scattered "
         "back (index_add), plus the MoA bias, run by the attention (JetMoeMoA.reduce)"),
    Rule("clip_qkv", r"DbrxAttention\.forward", "dbrx: the fused q / k / v projection clamped to [-clip_qkv, clip_qkv]",
         line=r"\.clamp\("),
)
