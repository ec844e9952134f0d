"""Activations saved for backward, per node: the tensors autograd keeps from the forward until the backward
uses them, for the eager transformers code: the DecoderTemplate layout (llama, mistral, qwen2, qwen3; the rules
below), and, with rules of their own (``rule_saved``: one per node kind or part, read from the node's facts,
each kept tensor with the dtype it is kept in, ``Saved``), MoE routers and batched_mm experts, MLA, LayerNorm and
GPT-style blocks, float32 norm products, soft-capping, sinks (tests/test_training_saved_families.py):

- a softmax top-k router keeps its input (when it reads the norm's output first), its float32 scores T*E,
  the int64 indices T*k, and, normalizing in place, the sum T and a clone of the top values T*k (autograd
  copies what an in-place op overwrites); float32 routers keep float32 copies of x and of the weight below
  float32; top-k-then-softmax routers their softmax over the k; phimoe's sparsemixer its masks per round;
- the experts over N = T*k pairs, by kernel (``EXPERTS``): batched_mm (what the op counters validate, the
  reference's) keeps each bmm's two operands, and so the expert weights gathered per pair
  (``gate_up_proj[expert_ids]``: N*2I*h, ``down_proj[expert_ids]``: N*h*I: copies, not parameters, the bulk of
  an MoE layer's saved bytes at any real size), act(gate), the routing weights and the output; grouped_mm (what
  training runs: ``training.step``) reads the weights in place and keeps the sorted tokens N*h, act(gate) and
  the gate product N*I each, the down output N*h, the sorted routing weights N, three int64 index tensors of N
  and the E int32 offsets;
- MLA: the latent norm of a slice (a float32 model keeps the whole kv_a output as its x), v a slice of kv_b's
  output; at B = 1 the matmuls take such head views without copying and keep the whole fused output (MLA's
  kv_b, a fused qkv, gemma's multi-query expand), for B > 1 a copy (``fmin(B - 1, 1)``);
- nn.LayerNorm keeps x, mean and rstd; a linear keeps its input when it is the first to read a norm's output
  or reads a block's own tensor; gelu_new and gelu_fast op by op keep 4 and 7 tensors; relu its output;
- the GPT-era layouts: float32 LayerNorms (olmo), LayerNorm1P's weight + 1 (nemotron), CohereLayerNorm op by op,
  per-head norms on fused views (persimmon), bool score masks (mpt's masked_fill, gpt_neo's causal buffer),
  xglm's max(scores, min), float32 q / k (gpt_neo, gptj, codegen), bloom's GeLUFunction, falcon's list-indexed
  k / v (``module_saved``: kept by the attention's own ops, no node).

What each forward op saves follows ``derivatives.yaml`` (an op saves the operands its gradient formulas
read); a tensor saved by several ops is stored once and is charged to the first node that saves it:

- the embedding: the token ids (B*S, int64);
- RMSNorm over n, rows r: x (for x.pow(2) and x * rstd), rstd (r) and y = x * rstd (for weight * y):
  2*r*n + r; the weight is a parameter, not an activation;
- a linear saves its input (for the weight's gradient): the first linear reading a tensor (q_proj,
  gate_proj, o_proj, down_proj, lm_head) stores it; k_proj, v_proj and up_proj read the same tensor;
- rope: cos and sin (x * cos, rotate_half(x) * sin save the factor): 2*S*rotary_dim once per model (every
  layer reads the same tables; helium's and ernie4_5's interleaved rope re-derives them in every layer);
  q and k themselves are not saved by rope;
- scores: q and the (GQA-repeated) keys, B*H*S*D + B*H*K*D; the scaling (a constant) and the mask (an add)
  save nothing;
- softmax: its output, B*H*S*K (context's probs @ v reuses it); context: the repeated values, B*H*K*D;
- the activation: its input (silu_backward reads x); the gate product: both factors, 2*T*I;
- the residual adds: nothing;
- the loss: log_softmax's output (B*S*V) and the targets (B*S) and nll_loss's total weight (1).

Recomputation (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"):
``selective`` recomputes the attention core from q, k and v, which stay saved: the softmax output
(B*H*S*K, the term quadratic in S) is not stored. ``full`` stores each layer's input (B*S*h, the
checkpoint) and recomputes the layer in the backward: the layers' saved tensors are replaced by one
checkpoint per layer, and one layer's saved tensors are live again while it is recomputed.

Bytes (``saved_bytes_by_node``, exact per node against ``saved_tensors_hooks`` in bf16 and fp32:
``validation.saved_bytes``): the eager code keeps some tensors in float32 in a bf16 model. RMSNorm computes
``x.to(float32)``, ``rstd = rsqrt(mean(x^2) + eps)`` and ``x * rstd`` in float32, then ``weight * y.to(bf16)``:
it keeps x (4 bytes), rstd (4) and y (2): 6*r*n + 4*r bytes, not 2 * (2*r*n + r) (helium multiplies by the
weight in float32 too: y at 4 bytes and the weight's float32 copy, n * 4). The softmax runs with
``dtype=float32``: its output (4 bytes) is kept by the softmax's backward, and the context keeps the bf16
copy ``.to(query.dtype)`` makes for probs @ v: 6 bytes per probability. ernie4_5's rotary tables stay float32.
The loss is transformers' ``ForCausalLMLoss``, which upcasts the logits: log_softmax's float32 output
4*B*S*V, the int64 targets, nll_loss's float32 total weight. Token ids are int64; the rest at the dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..formula import ZERO, B, Formula, S, fmin
from ..graph.node import Node, NodeKind
from ..metrics import DIV, EXP, MULT, PARAMS
from ..profile import ModelProfile
from .backward import LOSS, BackwardUnsupportedError
from .backward_mla import moe_view

TOKENS = B * S
RECOMPUTE = ("none", "selective", "full")
# the DecoderTemplate layouts validated exact per node, LoRA's saved set included (training.lora)
LORA_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3", "seed_oss", "helium", "ernie4_5",
                              "granite"})
# MoE layouts with the batched_mm experts (``MOE_SAVED``)
MOE_MODEL_TYPES = frozenset({"mixtral", "qwen3_moe", "qwen2_moe", "olmoe", "dots1", "glm4_moe", "solar_open",
                             "exaone_moe", "minimax_m2", "granitemoe", "gpt_oss", "ernie4_5_moe", "phimoe",
                             "hunyuan_v1_moe", "llama4_text", "mimo_v2_flash"})
# model types whose saved activations are validated exact per node (tests/test_training_activations.py,
# tests/test_training_saved_families.py)
# MLA attention (with their MoE layers): q/kv latents, the latent norm of a slice, v a slice of kv_b's output
MLA_MODEL_TYPES = frozenset({"deepseek_v3", "glm4_moe_lite", "deepseek_v2", "deepseek_v32", "glm_moe_dsa"})
# MLA with dense MLPs (the MLA rules, no experts)
MLA_DENSE_MODEL_TYPES = frozenset({"minicpm3"})
# dense layouts beyond the template: LayerNorm and GPT-style blocks (fused qkv, gelu_new, learned positions,
# parallel blocks sharing one norm), float32 norm products, post-norms, q/k norms, relu2 MLPs
DENSE_MODEL_TYPES = frozenset({"gpt2", "phi", "starcoder2", "stablelm", "jais2", "arcee", "ministral", "olmo2",
                               "hunyuan_v1_dense", "exaone4", "cwm", "gemma", "gemma2", "gemma3_text", "vaultgemma",
                               "glm", "glm4", "phi3", "olmo3", "opt", "gpt_neox", "ministral3", "olmo", "nemotron",
                               "persimmon", "mpt", "xglm", "cohere", "cohere2", "gpt_neo", "gptj", "codegen",
                               "gpt_bigcode", "bloom",
                               "falcon", "RefinedWeb", "RefinedWebModel"})
VALIDATED_MODEL_TYPES = LORA_MODEL_TYPES | MOE_MODEL_TYPES | MLA_MODEL_TYPES | DENSE_MODEL_TYPES | MLA_DENSE_MODEL_TYPES
# llama4's experts run every token through every expert (``_DENSE_EXPERTS``): transformers gives them no
# experts implementation to choose, one rule for both kernels
_DENSE_EXPERTS = frozenset({"llama4_text"})
# the MoE types whose experts' saved set under grouped_mm is validated exact per node too (``grouped_saved``;
# tests/test_training_saved_families.py builds the reference with experts="grouped_mm")
GROUPED_MM_MODEL_TYPES = (MOE_MODEL_TYPES | MLA_MODEL_TYPES) - _DENSE_EXPERTS
# interleaved rope: each layer's apply_rotary_pos_emb re-derives cos / sin (repeat_interleave), a new pair
_TABLES_PER_LAYER = frozenset({"helium", "ernie4_5", "glm", "glm4", "ernie4_5_moe", "gptj", "codegen"})
# the first linear reading each tensor (MLA: q_a_proj reads the normed input with kv_a_proj_with_mqa, q_b_proj
# and kv_b_proj the normed latents)
_SAVING_LINEARS = ("q_proj", "gate_proj", "o_proj", "down_proj", "q_a_proj", "q_b_proj", "kv_b_proj")
# the linears reading a block's own tensor (the context, the activation's output), each the only reader: they
# keep it; any other linear keeps its input when it is the first to read a norm's output (right after the norm)
_OUTPUT_LINEARS = frozenset({"c_proj", "dense", "out_proj", "fc2", "dense_4h_to_h", "wo", "w2", "fc_out"})
# activation -> tensors of its input's size it keeps: gelu_new op by op, 0.5 * x * (1 + tanh(c * (x + a x^3))):
# x (pow), tanh's output, 0.5 * x and 1 + tanh (their product); a one-op activation keeps its input (or output)
# gelu_fast, 0.5 * x * (1 + tanh(x * c * (1 + a * x * x))): seven products and tanh's output keep 7 of them
_ACTIVATION_SAVES = {"gelu_new": 4, "gelu_fast": 7}
# activations run as a custom autograd Function in training (bloom's GeLUFunction): it keeps its input, which
# saved_tensors_hooks packs after the Function's forward returns, at the next node (the linear reading its output)
_FUNCTION_ACTIVATIONS = frozenset({"bloom_gelu"})
# falcon's code, under its own model type and the legacy RefinedWeb keys
_FALCON = frozenset({"falcon", "RefinedWeb", "RefinedWebModel"})
# fused q/k/v projections: q, k and v are slices of one output
_FUSED_QKV = frozenset({"c_attn", "qkv_proj", "query_key_value", "Wqkv", "W_pack"})
# multi-query types measured taking the expanded K / V views at B = 1 (gemma-2b); a tensor-parallel rank with
# one KV head would do the same, not yet measured: its keys are counted repeated (tests/test_training_plan.py)
_MQA_VIEWS = frozenset({"gemma", *_FALCON})
# multi-query with q, k and v views of one fused output (gpt_bigcode's c_attn): the fused rule below, as for MHA
_MQA_FUSED = frozenset({"gpt_bigcode"})
# learned positions shared by the batch, ``wpe(position_ids)`` of shape (1, S): their S int64 ids
_SHARED_POSITIONS = frozenset({"gpt2", "gpt_neo", "gpt_bigcode"})
FP32 = 4  # the eager code's float32 intermediates
INT64 = 8
# the dtype a saved tensor is kept in: the model's activation dtype, or float32 / int64 whatever the model runs in
AT_ACT, AT_FP32, AT_INT64, AT_COMPLEX64, AT_BOOL = "act", "fp32", "int64", "complex64", "bool"
AT_INT32 = "int32"
# routers whose top-k weights stay float32 into the experts (mixtral's router has no ``.to(logits.dtype)``)
_ROUTING_WEIGHTS_FP32 = frozenset({"mixtral", "dots1", "glm4_moe", "solar_open", "exaone_moe", "minimax_m2",
                                   "deepseek_v3", "glm4_moe_lite", "deepseek_v2", "deepseek_v32", "glm_moe_dsa",
                                   "mimo_v2_flash"})
# top-k of the logits then a softmax over the k at the activation dtype (gpt_oss; granitemoe's is float32)
_TOPK_SOFTMAX_AT_ACT = frozenset({"gpt_oss"})
# rope by halves (gpt_oss): cos and sin of rotary_dim / 2 each
_HALF_TABLES = frozenset({"gpt_oss"})
# complex rope, ``view_as_complex(x) * freqs_cis``: one complex64 table of S * rotary_dim / 2 (8 bytes each)
_COMPLEX_TABLES = frozenset({"deepseek_v2", "llama4_text"})
# the experts kernels with a saved rule (``experts_saved``): batched_mm (what the op counters see, the validation
# reference's) and grouped_mm (what training runs: the weights read in place)
EXPERTS = ("batched_mm", "grouped_mm")
# experts with biases, gathered per pair under grouped_mm (``gate_up_proj_bias[expert_ids_g]``: its indices kept)
_EXPERT_BIASES = frozenset({"gpt_oss"})
# llama4's NoPE-layer temperature scales are computed in float32
_TEMPERATURE_FP32 = frozenset({"llama4_text"})
# attention softmax at the activation dtype (``softmax(x, dtype=x.dtype)``): no float32 output, no copy for p @ v
_SOFTMAX_AT_ACT = frozenset({"gpt_oss", "gpt2", "llama4_text", "mimo_v2_flash", "xglm", *_FALCON})
# RMSNorm ``weight * y`` with y float32 (gpt_oss: ``(self.weight * hidden_states).to(input_dtype)``): y at 4 bytes
_NORM_Y_FP32 = frozenset({"gpt_oss", "olmo2", "olmo3"})
# a rotary table per layer type (gemma3_text: sliding layers' local base, full layers' global one)
_ROPE_PER_LAYER_TYPE = frozenset({"gemma3_text", "olmo3", "mimo_v2_flash"})
# gemma's RMSNorm, ``norm(x.float()) * (1.0 + weight.float())``: x, rstd, y and the new (1 + w) tensor (n), all
# float32 whatever the model's dtype; its embedding is scaled by a tensor, ``embeds * normalizer`` (kept: 1)
_GEMMA_NORM = frozenset({"gemma", "gemma2", "gemma3_text", "vaultgemma"})
# routers computing their logits in float32, ``F.linear(x.type(float32), weight.type(float32))``: below float32
# they keep float32 copies of x and of the weight, and the original x is kept by the next linear reading it
_ROUTER_FP32 = frozenset({"dots1", "glm4_moe", "solar_open", "exaone_moe", "deepseek_v3", "glm4_moe_lite",
                          "deepseek_v2", "deepseek_v32", "glm_moe_dsa", "ernie4_5_moe", "mimo_v2_flash"})
# olmo's LayerNorm runs on ``x.to(float32)``: x, mean and rstd kept in float32 whatever the model's dtype
_LAYERNORM_FP32 = frozenset({"olmo"})
_LAYERNORM_1P = frozenset({"nemotron"})
# scores masked by ``masked_fill`` with a bool mask (kept for the backward) rather than an additive one
_MASKED_SCORES = frozenset({"mpt"})
# scores masked by ``where`` with a slice of a per-layer causal buffer (gpt_neo)
_BUFFER_MASKED_SCORES = frozenset({"gpt_neo"})
# scores of q and k cast to float32 (gptj's and codegen's ``_attn``)
_SCORES_FP32 = frozenset({"gptj", "codegen"})
# rope tables re-derived per call, once for q and once for k (gptj's repeat_interleave of sin and cos)
_TABLES_PER_CALL = frozenset({"gptj", "codegen"})
# k and v indexed out of the fused qkv with lists (``module_saved``)
_LIST_INDEXED_KV = _FALCON
# scores clamped from below by ``torch.max(scores, tensor(min))`` (xglm)
_CLAMPED_SCORES = frozenset({"xglm"})
# sinusoidal positions: rows selected from a buffer (no gradient: nothing kept)
_SINUSOIDAL_POSITIONS = frozenset({"xglm"})
# cohere's parallel blocks normalize with a LayerNorm op by op (``CohereLayerNorm``)
_LAYERNORM_OPS = frozenset({"cohere", "cohere2"})
# embeddings scaled by a tensor like gemma's (minicpm3: ``embed_tokens(ids) * scale_emb``): kept, one element
_EMBED_SCALE_TENSOR = frozenset({"minicpm3"})
# ernie4_5_moe normalizes by clamp(sum, min): clamp keeps the sum, the division the clamped sum and the weights
_NORMALIZE_CLAMP = frozenset({"ernie4_5_moe"})
# phimoe's sparsemixer (eval), k rounds: each keeps its mask (T*E bool), its softmax (T*E) and the
# chosen expert's index (T int64); the experts' ids are a new tensor (P int64)
_SPARSEMIXER = frozenset({"phimoe"})


@dataclass(frozen=True)
class Saved:
    """Tensors a node keeps for backward, of one dtype: their elements and the dtype they are kept in;
    ``below_fp32``: True: kept only when the model runs below float32 (a float32 copy, or an original whose
    float32 copy another node keeps; in a float32 model the copy is the original, kept once); False: only in a
    float32 model (a view kept whole where a float32 copy of the slice is kept below float32); None: always.
    Elements (``saved_by_node``) are a float32 run's."""

    elements: Formula
    dtype: str = AT_ACT
    below_fp32: bool | None = None

    @property
    def at_fp32(self) -> bool:
        return self.below_fp32 is not True

    def nbytes(self, act_bytes: int) -> Formula:
        if self.at_fp32 != (act_bytes == FP32) and self.below_fp32 is not None:
            return ZERO
        return self.elements * {AT_ACT: act_bytes, AT_FP32: FP32, AT_INT64: INT64, AT_COMPLEX64: 8, AT_BOOL: 1,
                                AT_INT32: 4}[self.dtype]


def router_saved(node: Node, spec: Any, first_reader: bool, logits: Node | None = None) -> tuple[Saved, ...]:
    """A softmax top-k router (``logits = x W^T``; ``softmax(logits, dtype=float32)``; ``topk``; optionally
    ``top /= top.sum()``) over T tokens, E experts, k chosen: the input T*h (when it is the first reader of the
    norm's output), the float32 scores T*E, topk's int64 indices T*k; normalizing in place, ``div_`` keeps the
    sum (T, float32) and a clone of the top values from before the division (T*k, float32): autograd copies
    an input an in-place op overwrites but its gradient needs. A sigmoid router (scores = sigmoid(logits), a
    correction bias for the choice only, the weights gathered from the scores) keeps the same: its float32
    scores T*E, the gather's int64 indices T*k (top-k's own are freed with the choice branch), the
    normalization's sum and clone; a routed scaling by a constant keeps nothing. A float32 router
    (``_ROUTER_FP32``) keeps x as float32 (a copy below float32, with the weight's float32 copy E*h)."""
    # (T x h) @ (h x E); hunyuan_v1_moe's logits are a linear of their own (``gate.wg``, keeping its input there)
    mm = node.facts.matmuls[0] if node.facts.matmuls else (logits or node).facts.matmuls[0]
    tokens = mm.batch * mm.m
    k = spec.layers[node.layer].ffn.top_k
    router = _router(spec)
    normalize = router.normalize if router is not None else getattr(spec, "norm_topk_prob", False)
    if spec.model_type in _ROUTER_FP32:  # x and the weight cast to float32 (copies below float32)
        # (when another linear read x first, a float32 model keeps it there: the router's copy only below)
        out = [Saved(tokens * mm.k, AT_FP32, below_fp32=None if first_reader else True),
               Saved(mm.k * mm.n, AT_FP32, below_fp32=True)]
    else:
        out = [Saved(tokens * mm.k)] if first_reader else []
    if spec.model_type in _SPARSEMIXER:
        return (*out, *(Saved(tokens * mm.n, AT_BOOL), Saved(tokens * mm.n), Saved(tokens, AT_INT64)) * k)
    if _scoring(spec) == "topk_softmax":  # top-k of the logits, then softmax over the k: its output
        probs = AT_ACT if spec.model_type in _TOPK_SOFTMAX_AT_ACT else AT_FP32
        return (*out, Saved(tokens * k, AT_INT64), Saved(tokens * k, probs))
    out += [Saved(tokens * mm.n, AT_FP32), Saved(tokens * k, AT_INT64)]
    if getattr(spec, "router", None) == "softmax_group":  # deepseek_v2 group_limited_greedy: the scores are
        out.append(Saved(tokens * mm.n, AT_BOOL))  # masked to the chosen groups (masked_fill keeps the mask)
    if normalize:
        out += [Saved(tokens, AT_FP32), Saved(tokens * k, AT_FP32)]
        if spec.model_type in _NORMALIZE_CLAMP:
            out.append(Saved(tokens, AT_FP32))
    return tuple(out)


def _router(spec: Any) -> Any:
    """The spec's ``graph.routers.Router`` (DeepSeek's spec names its router: ``moe_view`` reads it), or None."""
    router = getattr(spec, "router", None)
    return moe_view(spec).router if isinstance(router, str) else router


def _scoring(spec: Any) -> str:
    router = _router(spec)
    if spec.model_type in _TOPK_SOFTMAX_AT_ACT:
        return "topk_softmax"
    return router.scoring if router is not None else "softmax"


def experts_saved(node: Node, spec: Any, gate_product: bool = True, experts: str = "batched_mm") -> tuple[Saved, ...]:
    """The experts over N = T*k (token, expert) pairs, run by ``experts`` (``EXPERTS``).

    batched_mm: each bmm keeps both operands, the weights gathered per pair (``gate_up_proj[expert_ids]``:
    N*2I*h, ``down_proj[expert_ids]``: N*h*I, not parameters but copies) and its input (the repeated tokens N*h,
    the gate product N*I); the gate product ``act(gate) * up`` keeps act(gate) (N*I; up is a view of gate_up's
    output, kept by the activation); ``out * w`` keeps the routing weights (N, float32 where the router leaves
    them so) and the down projection's output (N*h).

    grouped_mm (``grouped_saved``): the weights are the parameters themselves, read in place (not kept).
    ``gate_product=False``: the gating is a node of its own (gpt_oss's ``:swiglu``), as are its tensors."""
    up, down = node.facts.matmuls[0], node.facts.matmuls[-1]  # N x (2I x h) @ (h x 1); N x (h x I) @ (I x 1)
    if spec.model_type in _DENSE_EXPERTS:  # (E, T, h) @ (E, h, 2I): the routed input, act(gate), the product
        return (Saved(up.batch * up.m * up.k + 2 * down.batch * down.m * down.k),)
    if experts == "grouped_mm":
        return grouped_saved(node, spec, gate_product)
    operands = sum((mm.batch * (mm.m * mm.k + mm.k * mm.n) for mm in (up, down)), ZERO)
    kept = Saved(operands + (down.batch * down.k if gate_product else ZERO) + down.outputs)
    if spec.model_type in _TOPK_SOFTMAX_AT_ACT:  # the router's softmax output is the weights, at the dtype
        return (kept,)
    if spec.model_type in _SPARSEMIXER:
        return kept, Saved(down.batch, AT_INT64), Saved(down.batch)
    if _scoring(spec) == "topk_softmax":  # the router's float32 softmax output cast: a copy below float32
        return kept, Saved(down.batch, below_fp32=True)
    return kept, Saved(down.batch, AT_FP32 if spec.model_type in _ROUTING_WEIGHTS_FP32 else AT_ACT)


def grouped_saved(node: Node, spec: Any, gate_product: bool = True) -> tuple[Saved, ...]:
    """transformers' ``grouped_mm_experts_forward`` over N = T*k pairs sorted by expert, E experts: the two
    gathers' indices ``perm // k`` (the sorted tokens) and ``perm`` (the sorted routing weights), and the
    un-sort's ``inv_perm``, N int64 each (gpt_oss's biases gathered per pair: ``expert_ids_g``, N more); the
    offsets, E int32 (both grouped_mms keep the same); each grouped_mm its input, the sorted tokens N*h and the
    gate product N*I (its weight is the parameter, a view: not an activation); act(gate) N*I (the gate product's
    other factor; up is a view of gate_up's output, kept whole by the activation); ``out * w`` the down output
    N*h and the sorted routing weights N (a new tensor, at the dtype the router leaves them)."""
    up, down = node.facts.matmuls[0], node.facts.matmuls[-1]
    pairs = down.batch
    biased = spec.model_type in _EXPERT_BIASES
    # the experts this rank holds (all of them, or E / ep): its expert weights over one expert's two matrices
    # (gpt_oss's biases add less than one expert's worth)
    per_expert = int(Formula.of(up.k * up.m * up.n + down.k * down.m * down.n))
    num_experts = sum(w.numel for w in node.facts.weights) // per_expert
    kept = Saved(up.batch * up.k + (2 if gate_product else 1) * pairs * down.k + down.outputs)
    weights = AT_FP32 if spec.model_type in _ROUTING_WEIGHTS_FP32 else AT_ACT
    return (kept, Saved((4 if biased else 3) * pairs, AT_INT64), Saved(Formula.of(num_experts), AT_INT32),
            Saved(pairs, weights))


def _last(node: Node) -> str:
    return node.path.rsplit(".", 1)[-1]


def _fused_qkv(model: ModelProfile, attn: str) -> Node | None:
    """The fused q/k/v projection of attention module ``attn``, or None."""
    return next((n for n in model.nodes if n.module == f"{attn}.{_last(n)}" and _last(n) in _FUSED_QKV), None)


def _parent(node: Node) -> str:
    return node.module.rsplit(".", 1)[0]


def rule_saved(node: Node, model: ModelProfile, prev: Node | None, fresh: bool = False,
               experts: str = "batched_mm") -> tuple[Saved, ...] | None:
    """What ``node`` keeps, by dtype, for the node kinds with rules of their own (MoE, its experts run by
    ``experts``), else None (``node_saved``)."""
    kind = node.kind
    if kind == NodeKind.ROUTER:
        own = bool(node.facts.matmuls)
        return router_saved(node, model.spec, first_reader=own and prev is not None and prev.kind == NodeKind.NORM,
                            logits=None if own else prev)
    if kind == NodeKind.EXPERTS:
        own_gate = any(n.path == f"{node.path}:swiglu" for n in model.nodes)
        return experts_saved(node, model.spec, gate_product=not own_gate, experts=experts)
    if node.part == "swiglu" and prev is not None and prev.kind == NodeKind.EXPERTS:
        # gpt_oss: the clamps keep gate_up's output (N*2I; gate and up are strided views of it); per element
        # of N*I: sigmoid's output, the clamped gate (gate * sigmoid), up + 1 and glu ((up + 1) * glu)
        return (Saved(prev.facts.matmuls[0].outputs + 4 * Formula.of(node.counts[DIV])),)
    spec = model.spec
    if ".indexer." in node.path or node.path.endswith(".indexer"):
        return ()  # a DSA indexer: only top-k indices leave it, its graph (and what it saved) is freed
    if kind == NodeKind.NORM and spec.model_type in _LAYERNORM_OPS:
        # cohere's LayerNorm op by op in float32: x - mean computed twice (pow's input, then the product's), rstd
        # and y (weight * y's), T*n each; below float32 the weight's float32 copy (n)
        rows, n = Formula.of(node.counts["sqrt"]), int(Formula.of(node.counts[PARAMS]))
        return Saved(3 * rows * n + rows, AT_FP32), Saved(Formula.of(n), AT_FP32, below_fp32=True)
    if kind == NodeKind.LINEAR and _last(node) == "gate_proj" and spec.model_type in _LAYERNORM_OPS:
        return ()  # a parallel block: gate_proj reads the norm output q_proj keeps
    if kind == NodeKind.NORM and spec.norm == "layernorm" and node.counts.get("sqrt"):
        # nn.LayerNorm (native_layer_norm): its input and the per-row mean and rstd, at the activation dtype; a
        # parallel block's second norm (gpt_neox's use_parallel_residual) reads the layer input the first keeps
        rows = 2 * Formula.of(node.counts["sqrt"])
        second = getattr(spec, "parallel_residual", False) and _last(node) == "post_attention_layernorm"
        second = second or _last(node) == "ln_mlp"  # falcon's second parallel norm reads the input ln_attn keeps
        # olmo's weightless LayerNorm records no fused reads: its input is the rows of the hidden size
        x = Formula.of(node.facts.fused_reads) if node.facts.fused_reads is not None else rows / 2 * spec.hidden_size
        # nemotron's LayerNorm1P normalizes with ``weight + 1``: a new tensor of n (its parameters: weight, bias)
        one_p = Formula.of(node.counts[PARAMS] // 2) if spec.model_type in _LAYERNORM_1P else ZERO
        if prev is not None and _last(prev) in _FUSED_QKV:  # persimmon's per-head q norm: q is a view of the
            x = prev.facts.matmuls[0].outputs  # fused qkv output, kept whole (k's norm and v read the same storage)
        elif prev is not None and prev.kind == NodeKind.NORM and _parent(prev) == _parent(node) \
                and _fused_qkv(model, _parent(node)) is not None:
            second = True  # the k norm: its rows only
        return (Saved((rows if second else x + rows) + one_p,
                      AT_FP32 if spec.model_type in _LAYERNORM_FP32 else AT_ACT),)
    if kind == NodeKind.LINEAR and node.facts.matmuls:
        mm = node.facts.matmuls[0]
        name = node.path.rsplit(".", 1)[-1]
        kept = fresh or name in _SAVING_LINEARS or name in _OUTPUT_LINEARS
        if name == "dense_h_to_4h" and spec.model_type in _LIST_INDEXED_KV:
            # falcon lists a layer's norms first: with two (sequential, or ln_attn and ln_mlp) the MLP reads the
            # second's output, its own tensor; with one it reads the tensor query_key_value keeps
            kept = sum(1 for n in model.nodes if n.layer == node.layer and n.kind == NodeKind.NORM) == 2
        if prev is not None and prev.kind == NodeKind.ACTIVATION and spec.activation == "relu":
            kept = False  # relu keeps its output (threshold_backward reads the result): the same tensor
        if prev is not None and prev.kind == NodeKind.ACTIVATION and spec.activation in _FUNCTION_ACTIVATIONS:
            # the activation's input, packed once its autograd Function returns: the hooks see it at this node
            return (Saved(mm.batch * mm.m * mm.k + _input(prev)),)
        return (Saved(mm.batch * mm.m * mm.k),) if kept else ()
    if kind == NodeKind.ACTIVATION and prev is not None and _last(prev) == "gate_up_proj":
        # a fused gate_up_proj chunked into gate and up, views of its output: the activation keeps it whole (T*2I)
        return (Saved(prev.facts.matmuls[0].outputs),)
    if node.part == "gate_mul" and prev is not None and prev.kind == NodeKind.ACTIVATION \
            and any(n.path == f"{node.module}.gate_up_proj" for n in model.nodes):
        return (Saved(_input(prev)),)  # act(gate), T*I; up is a view of gate_up's output, kept whole already
    if kind == NodeKind.ACTIVATION and spec.activation in _FUNCTION_ACTIVATIONS:
        return ()  # its input: charged to the next linear (above)
    if kind == NodeKind.ACTIVATION and spec.activation in _ACTIVATION_SAVES:
        return (Saved(_ACTIVATION_SAVES[spec.activation] * _input(node)),)
    if kind == NodeKind.EMBEDDING and spec.model_type in _SHARED_POSITIONS and prev is not None \
            and prev.kind == NodeKind.POSITIONS:
        return (Saved(S, AT_INT64),)
    if kind == NodeKind.NORM and spec.model_type in _GEMMA_NORM:
        rows_n, n = Formula.of(node.facts.fused_reads), int(Formula.of(node.counts[PARAMS]))
        return (Saved(2 * rows_n + rows_n / n + n, AT_FP32),)
    if node.part == "routing":  # llama4: x.repeat(E, 1) * scores: the E*T*h copies and the E*T scores
        routed = next(n for n in model.nodes if n.path == f"{node.module}.experts")
        up = routed.facts.matmuls[0]
        return (Saved(up.batch * up.m * up.k + up.batch * up.m),)
    if node.part == "temperature":  # q * scale, the scale per position (S, computed with one div each) kept
        return (Saved(Formula.of(node.counts[DIV]), AT_FP32 if spec.model_type in _TEMPERATURE_FP32 else AT_ACT),)
    if kind == NodeKind.NORM and node.path.endswith(".qk_norm") and spec.model_type in _DENSE_EXPERTS:
        # llama4's weightless L2 norm of q and k after rope, over T*(H + KV) rows of D: x.float() and rstd, float32
        rows = TOKENS * (spec.num_heads + spec.num_kv_heads)
        return (Saved(rows * spec.head_dim + rows, AT_FP32),)
    if node.part in ("softcap", "final_softcap"):  # tanh(x / cap) * cap: tanh's output (the scalings keep nothing)
        return (Saved(Formula.of(node.counts[EXP])),)
    if kind == NodeKind.EMBEDDING and spec.model_type in _SINUSOIDAL_POSITIONS and _last(node) == "embed_positions":
        return ()
    if kind == NodeKind.EMBEDDING and spec.model_type in _GEMMA_NORM | _EMBED_SCALE_TENSOR:
        return Saved(TOKENS, AT_INT64), Saved(Formula.of(1))
    if kind == NodeKind.NORM and prev is not None and node.path.endswith("kv_a_layernorm"):
        # MLA: the norm of the latent, a slice of kv_a_proj_with_mqa's output (the rope key the rest): a float32
        # model keeps x as a view of the whole output, below float32 x.to(float32) copies the slice
        rows_n = Formula.of(node.facts.fused_reads)
        whole = prev.facts.matmuls[0].outputs
        return (Saved(rows_n, AT_FP32), Saved(whole - rows_n, AT_FP32, below_fp32=False),
                Saved(rows_n / int(Formula.of(node.counts[PARAMS])), AT_FP32), Saved(rows_n))
    if kind in (NodeKind.ATTN_SCORES, NodeKind.ATTN_CONTEXT) and (spec.num_heads == spec.num_kv_heads
                                                                  or spec.model_type in _MQA_FUSED):
        fused = _fused_qkv(model, node.module)
        if fused is not None:
            # q, k, v are head views of one fused output (no GQA copies): the matmuls copy them for B > 1; at
            # B = 1 they take the views and keep the fused output whole: the scores (the context then nothing),
            # or, where rope made q and k new tensors, the context through v
            mm = node.facts.matmuls[0]
            many = fmin(B - 1, 1)  # 0 at B = 1, 1 above
            whole = fused.facts.matmuls[0].outputs
            rope = any(n.kind == NodeKind.ROPE and n.module == node.module for n in model.nodes)
            if any(n.kind == NodeKind.NORM and _parent(n) == node.module for n in model.nodes):
                whole = ZERO  # per-head q / k norms read the fused output first and keep it (persimmon)
            if kind == NodeKind.ATTN_SCORES:
                qk = mm.batch * mm.m * mm.k + mm.batch * mm.n * mm.k
                return (Saved(qk),) if rope else (Saved(many * qk + (1 - many) * whole),)
            v = mm.batch * mm.k * mm.n
            return (Saved(many * v + (1 - many) * whole),) if rope else (Saved(many * v),)
    if kind in (NodeKind.ATTN_SCORES, NodeKind.ATTN_CONTEXT) and spec.num_kv_heads == 1 < spec.num_heads \
            and node.facts.states and spec.model_type in _MQA_VIEWS:
        # multi-query: repeat_kv's expand of the one KV head is a view; probs @ v and q @ k^T copy it out for
        # B > 1 (B*H*K*D) and take it as is at B = 1 (the cached K or V, B*K*D: the states the node reads)
        mm = node.facts.matmuls[0]
        many = fmin(B - 1, 1)
        kv = sum((st.read for st in node.facts.states), ZERO)
        if kind == NodeKind.ATTN_SCORES:
            return (Saved(mm.batch * mm.m * mm.k + many * mm.batch * mm.n * mm.k + (1 - many) * kv),)
        return (Saved(many * mm.batch * mm.k * mm.n + (1 - many) * kv),)
    if kind == NodeKind.ATTN_CONTEXT and prev is not None:
        kv_b = next((n for n in model.nodes if n.path == f"{node.module}.kv_b_proj"), None)
        if kv_b is not None:
            # MLA: v is a slice of kv_b_proj's output (k_nope the rest). probs @ v folds the (B, H, K, Dv) view
            # into one bmm without a copy at B = 1, keeping v's storage, the whole output; for B > 1 it copies v
            mm = node.facts.matmuls[0]  # (S x K) @ (K x Dv), batch B*H
            many = fmin(B - 1, 1)  # 0 at B = 1, 1 above
            return (Saved(many * mm.batch * mm.k * mm.n + (1 - many) * kv_b.facts.matmuls[0].outputs),)
    if node.part in ("sinks", "row_max") and prev is not None and prev.kind == NodeKind.ATTN_SCORES:
        # the row max subtracted before the softmax (``max(dim=-1).values``): its int64 indices, one per row
        mm = prev.facts.matmuls[0]
        return (Saved(mm.batch * mm.m, AT_INT64),)
    if kind == NodeKind.ACTIVATION and prev is not None and prev.kind == NodeKind.EXPERTS:  # the experts' act_fn
        return (Saved(prev.facts.matmuls[0].outputs),)  # the whole gate_up output: gate is a view of it
    if kind == NodeKind.ELEMENTWISE and node.part == "shared_mix":
        # sigmoid(gate logit) * shared: the sigmoid's output (T, kept by its backward and the product) and the
        # shared expert's output (T*h); an ungated routed + shared add keeps nothing
        gate = Formula.of(node.counts.get(EXP, 0))
        return (Saved(gate + Formula.of(node.counts[MULT])),) if gate else ()
    return None


def _input(node: Node) -> Formula:
    """The elements an elementwise node reads (its fused chain's inputs, or its recorded reads)."""
    return Formula.of(node.facts.fused_reads if node.facts.fused_reads is not None else node.facts.reads)


def node_saved(node: Node) -> Formula:
    """Elements node ``node`` saves for backward (see the module docstring; rope and the layouts with rules of
    their own: ``saved_rules``)."""
    kind, facts = node.kind, node.facts
    name = node.path.rsplit(".", 1)[-1]
    if kind == NodeKind.EMBEDDING:
        return TOKENS
    if kind == NodeKind.NORM:
        n = int(Formula.of(node.counts.get(PARAMS, 0)))
        elems = Formula.of(facts.fused_reads)
        return 2 * elems + elems / n
    if (kind == NodeKind.LM_HEAD and facts.matmuls) or (kind == NodeKind.LINEAR and name in _SAVING_LINEARS):
        mm = facts.matmuls[0]
        return mm.batch * mm.m * mm.k
    if kind == NodeKind.ATTN_SCORES:
        mm = facts.matmuls[0]  # (S x D) @ (D x K), batch B*H
        return mm.batch * mm.m * mm.k + mm.batch * mm.n * mm.k
    if kind == NodeKind.ATTN_SOFTMAX:
        return Formula.of(node.counts[EXP])
    if kind == NodeKind.ATTN_CONTEXT:
        mm = facts.matmuls[0]  # (S x K) @ (K x D), batch B*H
        return mm.batch * mm.k * mm.n
    if kind == NodeKind.ACTIVATION:
        return _input(node)
    if kind == NodeKind.ELEMENTWISE and node.part == "gate_mul":
        return _input(node)  # both factors
    return ZERO


def rope_tables(spec: Any) -> tuple[Saved, ...]:
    """cos and sin (x * cos, rotate_half(x) * sin keep the factor), S * rotary_dim each at the activation dtype
    (ernie4_5: float32); gpt_oss's rope by halves: rotary_dim / 2 each; complex rope: one complex64 table."""
    if spec.model_type in _COMPLEX_TABLES:
        return (Saved(S * spec.rotary_dim / 2, AT_COMPLEX64),)
    width = spec.rotary_dim if spec.model_type in _HALF_TABLES else 2 * spec.rotary_dim
    width = 2 * width if spec.model_type in _TABLES_PER_CALL else width  # a pair for q, a pair for k
    return (Saved(S * width, AT_FP32 if spec.model_type in _ROPE_FP32 else AT_ACT),)


def saved_rules(model: ModelProfile, experts: str = "batched_mm") -> dict[str, tuple[Saved, ...] | None]:
    """node path -> what it keeps by dtype (``rule_saved``, MoE experts run by ``experts``), or None where
    ``node_saved`` and ``node_saved_bytes`` say it."""
    out: dict[str, tuple[Saved, ...] | None] = {}
    prev = None
    router_read: Node | None = None  # a router that read the current norm's output first
    rope_seen: set[str] = set()
    fresh = False  # a stream norm's output no linear has read yet
    mask_seen = False
    model_type = model.spec.model_type
    for node in model.nodes:
        rule = rule_saved(node, model, fresh=fresh and node.kind == NodeKind.LINEAR, prev=prev, experts=experts)
        if node.kind in (NodeKind.LINEAR, NodeKind.ROUTER):
            fresh = False
        elif node.kind == NodeKind.NORM:  # a norm of a head or latent sits in its linear's module
            # (a norm after a block's own residual add, bloom's, reads a new stream tensor too)
            fresh = fresh or prev is None or _parent(prev) != _parent(node) or prev.kind == NodeKind.RESIDUAL
        name = node.path.rsplit(".", 1)[-1]
        if node.kind == NodeKind.ROPE:  # the tables, once (or per layer where each layer re-derives them)
            per_type = model_type in _ROPE_PER_LAYER_TYPE and node.layer is not None
            table = model.spec.layer_types[node.layer] if per_type and node.layer is not None else ""
            rule = () if table in rope_seen and model_type not in _TABLES_PER_LAYER else rope_tables(model.spec)
            rope_seen.add(table)
        elif node.kind == NodeKind.NORM:
            router_read = None
        elif node.kind == NodeKind.ROUTER and prev is not None and prev.kind == NodeKind.NORM:
            router_read = node
        elif router_read is not None and node.kind == NodeKind.LINEAR and name == "gate_proj":
            # a shared expert after the router: the router kept its input (below float32 a float32 copy of it)
            mm = node.facts.matmuls[0]
            fp32_copy = model.spec.model_type in _ROUTER_FP32
            rule = (Saved(mm.batch * mm.m * mm.k, below_fp32=True),) if fp32_copy else ()
            router_read = None
        if node.kind == NodeKind.ATTN_SCORES and model_type in _BUFFER_MASKED_SCORES:
            # gpt_neo: q and k cast to float32 (copies below float32) and ``where(bias, scores, min)``, whose
            # condition is a slice of the layer's (max_positions x max_positions) bool buffer: kept whole
            positions: int = model.spec.max_positions  # type: ignore[attr-defined]  # gpt_neo's spec field
            rule = (Saved(node_saved(node), AT_FP32), Saved(Formula.of(positions ** 2), AT_BOOL))
        elif node.kind == NodeKind.ATTN_SCORES and model_type in _SCORES_FP32:
            # q and k cast to float32: float32 copies below float32
            rule = tuple(Saved(t.elements, AT_FP32, t.below_fp32) for t in rule or (Saved(node_saved(node)),))
        elif node.kind == NodeKind.ATTN_SCORES and model_type in _MASKED_SCORES:
            # ``masked_fill(mask, min)`` on the scores keeps the bool mask, (B, 1, S, K): the scores over the
            # heads; every layer reads the same mask, kept once (by the first)
            mm = node.facts.matmuls[0]
            mask = Saved(ZERO if mask_seen else mm.batch * mm.m * mm.n / model.spec.num_heads, AT_BOOL)
            rule = (*(rule if rule is not None else (Saved(node_saved(node)),)), mask)
            mask_seen = True
        elif node.kind == NodeKind.ATTN_SCORES and model_type in _CLAMPED_SCORES:
            # ``torch.max(scores, tensor(min))``: maximum keeps both, the masked scores B*H*S*K and the float32
            # scalar
            mm = node.facts.matmuls[0]
            rule = (*(rule if rule is not None else (Saved(node_saved(node)),)), Saved(mm.batch * mm.m * mm.n),
                    Saved(Formula.of(1), AT_FP32))
        out[node.path] = rule
        prev = node
    return out


def module_saved(model: ModelProfile) -> dict[str, tuple[Saved, ...]]:
    """Tensors kept by a module's own ops outside its nodes, keyed by the module's path (what the hooks see
    there): falcon's ``_split_heads`` indexes k and v out of the fused qkv with lists (``[..., [-2], :]``,
    ``[..., [-1], :]``; multi-query or the new decoder architecture), and each index op keeps its index tensor,
    1 int64: 2 per layer."""
    spec = model.spec
    if spec.model_type not in _LIST_INDEXED_KV or not (spec.num_kv_heads == 1 < spec.num_heads
                                                         or getattr(spec, "new_decoder_architecture", False)):
        return {}
    modules = dict.fromkeys(n.module for n in model.nodes if n.kind == NodeKind.ATTN_SCORES)
    return {module: (Saved(Formula.of(2), AT_INT64),) for module in modules}


def saved_by_node(model: ModelProfile, recompute: str = "none", experts: str = "batched_mm") -> dict[str, Formula]:
    """node path -> elements saved for backward (and ``loss``), under ``recompute`` (none, selective, full), MoE
    experts run by ``experts`` (``EXPERTS``)."""
    spec = model.spec
    if spec.model_type not in VALIDATED_MODEL_TYPES:
        raise BackwardUnsupportedError(
            f"saved activations are derived for the model types {', '.join(sorted(VALIDATED_MODEL_TYPES))} only, "
            f"not {spec.model_type!r}")
    if recompute not in RECOMPUTE:
        raise BackwardUnsupportedError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}")
    if experts not in EXPERTS:
        raise BackwardUnsupportedError(f"experts must be one of {', '.join(EXPERTS)}, got {experts!r}")
    out: dict[str, Formula] = {}
    rules = saved_rules(model, experts)
    for node in model.nodes:
        terms = rules[node.path]
        if terms is not None:
            out[node.path] = sum((t.elements for t in terms if t.at_fp32), ZERO)
        else:
            out[node.path] = node_saved(node)
    for path, terms in module_saved(model).items():
        out[path] = ZERO if recompute == "full" else sum((t.elements for t in terms if t.at_fp32), ZERO)
    out[LOSS] = TOKENS * spec.vocab_size + TOKENS + 1
    if recompute == "selective":
        for node in model.nodes:
            if node.kind == NodeKind.ATTN_SOFTMAX:
                out[node.path] = ZERO
    elif recompute == "full":
        for node in model.nodes:
            if node.layer is not None:
                out[node.path] = ZERO
        first = {n.layer: n.path for n in reversed(model.nodes) if n.layer is not None}
        for path in first.values():
            out[path] = TOKENS * spec.hidden_size  # the layer's input, its checkpoint
    return out


def layer_saved(model: ModelProfile, layer: int = 0, experts: str = "batched_mm") -> Formula:
    """Elements one layer saves without recomputation (what full recomputation holds again, one layer at a
    time, during the backward)."""
    saved = saved_by_node(model, experts=experts)
    return sum((saved[path] for path in _layer_paths(model, layer)), ZERO)


def _layer_paths(model: ModelProfile, layer: int) -> list[str]:
    """The paths of layer ``layer``'s nodes and of its modules' own saves (``module_saved``)."""
    own = [m for m in module_saved(model) if any(n.module == m and n.layer == layer for n in model.nodes)]
    return [n.path for n in model.nodes if n.layer == layer] + own


# below float32: helium's RMSNorm multiplies in float32, ``(weight.to(float32) * y).to(input_dtype)``: y stays
# float32 and the weight's float32 copy (not a parameter) is kept for y's gradient
_NORM_FP32_PRODUCT = frozenset({"helium"})
# ernie4_5's rotary tables stay float32 (its rotary embedding does not cast them; q.float() * cos)
_ROPE_FP32 = frozenset({"ernie4_5", "olmo", "olmo2", "olmo3", "ernie4_5_moe"})


def node_saved_bytes(node: Node, elements: Formula, act_bytes: int, model_type: str = "llama") -> Formula:
    """Bytes of what ``node`` saves (``elements`` of them) when the model runs in a dtype of ``act_bytes`` per
    element, as the eager transformers code keeps them (module docstring, "Bytes"): RMSNorm's x upcast to
    float32 and its float32 rstd, the float32 softmax output, the token ids at 8 bytes; the rest at
    ``act_bytes``."""
    kind = node.kind
    if kind == NodeKind.EMBEDDING:
        return elements * INT64
    if kind == NodeKind.NORM:
        n = int(Formula.of(node.counts.get(PARAMS, 0)))
        rows_n = Formula.of(node.facts.fused_reads)
        if model_type in _NORM_FP32_PRODUCT and act_bytes != FP32:
            return rows_n * FP32 + rows_n / n * FP32 + rows_n * FP32 + n * FP32  # y and the weight in fp32
        y = FP32 if model_type in _NORM_Y_FP32 else act_bytes
        return rows_n * FP32 + rows_n / n * FP32 + rows_n * y  # x (fp32), rstd (fp32), y = x * rstd
    if kind == NodeKind.ATTN_SOFTMAX and model_type not in _SOFTMAX_AT_ACT:
        return elements * FP32
    return elements * act_bytes


def saved_bytes_by_node(model: ModelProfile, recompute: str = "none", act_bytes: int = 2,
                        loss: bool = True, experts: str = "batched_mm") -> dict[str, Formula]:
    """node path -> bytes saved for backward in a model run at ``act_bytes`` per element (2: bf16 / fp16, 4:
    fp32), exact against ``saved_tensors_hooks`` (``validation.saved_bytes``). Below float32 the context saves
    the softmax's probabilities again, cast down (the float32 output stays saved by the softmax); the loss is
    transformers' ``ForCausalLMLoss``: log_softmax of the float32-upcast logits (4*B*S*V), the targets (int64)
    and nll_loss's float32 total weight. ``loss=False``: a pipeline stage that does not compute it."""
    saved = saved_by_node(model, recompute, experts)
    nodes = {n.path: n for n in model.nodes}
    rules = saved_rules(model, experts)
    own = module_saved(model)
    out: dict[str, Formula] = {}
    for path, elements in saved.items():
        if path == LOSS:
            if loss:
                out[path] = TOKENS * model.spec.vocab_size * FP32 + TOKENS * INT64 + FP32
            continue
        if path in own:  # a module's own ops (``module_saved``), within its layer
            out[path] = ZERO if recompute == "full" else sum((t.nbytes(act_bytes) for t in own[path]), ZERO)
            continue
        node = nodes[path]
        if recompute == "full" and node.layer is not None:
            out[path] = elements * act_bytes  # the layer's input, its checkpoint (or nothing)
            continue
        terms = rules[path]
        if recompute == "selective" and node.kind == NodeKind.ATTN_SOFTMAX:
            out[path] = ZERO  # recomputed with the attention core
        elif terms is not None:
            out[path] = sum((t.nbytes(act_bytes) for t in terms), ZERO)
        else:
            out[path] = node_saved_bytes(node, elements, act_bytes, model.spec.model_type)
        if node.kind == NodeKind.ATTN_CONTEXT and act_bytes != FP32 and recompute == "none" \
                and model.spec.model_type not in _SOFTMAX_AT_ACT:
            probs = next(n for n in model.nodes if n.kind == NodeKind.ATTN_SOFTMAX and n.layer == node.layer
                         and n.counts.get(EXP))  # the softmax, not a row max or sink column beside it
            out[path] = out[path] + Formula.of(probs.counts[EXP]) * act_bytes
    return out


def layer_saved_bytes(model: ModelProfile, act_bytes: int = 2, layer: int = 0,
                      experts: str = "batched_mm") -> Formula:
    """Bytes one layer saves without recomputation (held again while full recomputation reruns it)."""
    saved = saved_bytes_by_node(model, "none", act_bytes, experts=experts)
    return sum((saved[path] for path in _layer_paths(model, layer)), ZERO)


class SavedActivations(BaseModel):
    """Saved-for-backward activations of one micro-batch."""

    recompute: str
    elements: int  # saved tensors (one copy each), at the end of the forward
    bytes: int  # exact at the activation dtype (``saved_bytes_by_node``)
    recompute_peak_elements: int  # full recomputation: one layer's tensors live again during its backward
    recompute_peak_bytes: int = 0


def saved_activations(model: ModelProfile, batch: int, seq: int, recompute: str = "none",
                      act_bytes: int = 2, loss: bool = True, experts: str = "batched_mm") -> SavedActivations:
    """Saved activations at (``batch``, ``seq``): elements per ``saved_by_node``, bytes per
    ``saved_bytes_by_node`` at ``act_bytes`` per element, MoE experts run by ``experts``; ``loss=False`` leaves
    the loss's out (a pipeline stage before the last)."""
    saved = saved_by_node(model, recompute, experts)
    if not loss:
        saved.pop(LOSS)
    env = {"B": batch, "S": seq, "P": 0}
    elements = sum(int(f.evaluate(env)) for f in saved.values())
    nbytes = sum(int(f.evaluate(env)) for f in saved_bytes_by_node(model, recompute, act_bytes, loss,
                                                                   experts).values())
    first = min((n.layer for n in model.nodes if n.layer is not None), default=0)
    extra = int(layer_saved(model, first, experts).evaluate(env)) if recompute == "full" else 0
    extra_b = int(layer_saved_bytes(model, act_bytes, first, experts).evaluate(env)) if recompute == "full" else 0
    return SavedActivations(recompute=recompute, elements=elements, bytes=nbytes, recompute_peak_elements=extra,
                            recompute_peak_bytes=extra_b)


__all__ = ["EXPERTS", "GROUPED_MM_MODEL_TYPES", "RECOMPUTE", "SavedActivations", "layer_saved_bytes", "node_saved_bytes", "saved_activations",
           "saved_bytes_by_node", "saved_by_node"]
