"""Backward counts of gemma4_text and gemma3n_text (and the multimodal gemma4 / gemma3n, profiled as their text
models): the rules of ``training.backward`` where they hold, and what these layouts do differently.

transformers 5.23, modeling_gemma4.py, eval mode with use_cache=True, per layer and T = B*S tokens, hidden h,
H heads; a sliding layer has ``head_dim`` D and ``num_key_value_heads`` KV, a full layer ``global_head_dim`` and
(with ``attention_k_eq_v``) ``num_global_key_value_heads``. Backward as autograd runs it
(``tools/autograd/derivatives.yaml`` and the CPU kernels):

- Gemma4RMSNorm, ``x * pow(mean(x^2) + eps, -0.5)`` (then ``* w`` when it has a scale), r rows of n: the eager
  RMSNorm's backward (``training.backward.rms_norm_backward``) with the rsqrt replaced by pow's:
  ``g * -0.5 * pow(m, -1.5)``, one aten pow (1 EXP) and 2 MULT per row instead of rsqrt's r^3 and two muls
  (4 MULT): MULT 6rn + 2r, EXP rn + r, DIV rn, ADD n(r - 1) + r(n - 1). Without a scale (``v_norm``, the
  router's norm) the weight's two products go (g*w: rn MULT; sum_rows(g*y): rn MULT, n(r - 1) ADD);
- ``q_norm`` / ``k_norm`` over D, on the projection's output (read twice by the norm: one add of it on the
  projection), then rope's fan-out on the norm (x * cos and rotate_half's two halves: 2 adds of q / k);
  ``v_norm`` (weightless) on v_proj's output, or, on a full layer with ``attention_k_eq_v``, on k_proj's: k_proj's
  output then read by both norms, four reads, 3 adds;
- KV sharing (``num_kv_shared_layers``): the last non-shared layer of each type stores its keys (rope's output)
  and values (v_norm's), and every KV-shared layer of that type reads them again (their GQA sums in the shared
  layer's scores / context): one add of T*KV*D each, on rope and on v_norm of the storing layer;
- the scaling (1.0, still one mul per score) and GQA sums as ``training.backward``, with each layer's own group
  (H / its KV heads);
- the layer: ``residual + post_attention_layernorm(attn)``: the stream after it is read by the feed-forward's
  pre-norm (twice), the MLP's residual add, and, with the MoE block, by the router's norm and
  ``pre_feedforward_layernorm_2`` (twice each); the MLP's residual output by the per-layer input gate and its
  residual add (with per-layer inputs); ``hidden_states *= layer_scalar`` (a buffer, in place): one mul back,
  and it writes the stream the next layer reads (input norm twice, residual once: 2 adds; the last layer's,
  read by the final norm, 1);
- the MoE block beside the dense MLP: the router, ``norm(x) * scale * h**-0.5``, proj, softmax over E, top-k,
  ``w /= w.sum()`` (in place), ``w * per_expert_scale[idx]``: the scale's product (two muls, its gradient summed
  over the T rows), the constant's mul, ``softmax_backward`` over T rows of E, the division's gradients
  (``router_backward``'s normalize: 3 DIV, 1 MULT, 2 ADD per pair and the k-sum), the per-expert scale's product
  (two muls per pair) and its gather scattered back (index_put with accumulate: one ADD per pair); the experts
  as ``training.backward.experts_backward`` (batched_mm), their output read twice by
  ``post_feedforward_layernorm_2``; ``:combine`` (an add) writes what ``post_feedforward_layernorm`` reads twice;
- per-layer inputs: ``embed_tokens_per_layer`` (``embedding_dense_backward`` and its * sqrt(d)),
  ``per_layer_model_projection`` (a linear reading the scaled embedding: one more read of it), and
  ``:per_layer_inputs``, (norm(proj * h**-0.5) + emb) * 2**-0.5: two muls by constants back; the scaled projection
  is read twice by the norm (1 add of T*L*d), and the result is sliced by every layer (L reads: L - 1 adds of
  T*L*d); in each layer ``act(gate(x)) * slice``: two muls;
- final logit soft-capping, ``tanh(x / cap) * cap``: ``training.backward``'s rule.

gemma3n_text (modeling_gemma3n.py), A = ``altup_num_inputs`` streams of n = T*h, L layers of per-layer inputs of
Hp, the same Gemma3nRMSNorm (pow) and attention (q / k / v norms, KV sharing) as gemma4's; per layer:

- AltUp predict: ``router_norm(X[0]) * 1/h``, ``modality_router``, tanh, ``prediction_coefs``, then
  ``X.permute(1, 2, 3, 0) @ coefs`` (a batched T x (h x A)(A x A): grad X h*A*A MACs per token, grad coefs A*A*h),
  ``+= X``, ``.contiguous()`` (a copy); correct: the router again on the layer's output, ``innovation =
  activated - predictions[0]`` (-g: n ADD), ``innovation.repeat(A)`` (the copies summed: (A - 1)*n ADD),
  ``correction_coefs(m) + 1``, ``innovation * coefs`` (2*A*n MULT; coefs' gradient summed over h: A*T*(h - 1)
  ADD), ``+= predictions``; ``corrected[0].clone() * correct_output_scale`` (altup.forward called as a method:
  the layer's op; both gradients, the scale's summed over T); ``act(gate(x)) * per_layer_input`` (two muls);
  ``corrected[1:] += x`` (x broadcast over A - 1 streams: (A - 2)*n ADD). The router norm and modality router
  run twice (predict, correct): each call's backward, and their weights' two gradients added (one ADD each).
  Laurel: ``x + norm(right(left(x)))``, then ``(attn_gated + laurel) / sqrt(2)``: one DIV per element;
- accumulations on the layer's own node (``:residual``): the active prediction (input norm twice, the attention
  residual), ``(.) / sqrt(2)`` (the feed-forward's pre-norm twice, its residual) and the corrected input
  (correct's router norm twice, the subtraction): 2 adds of n each; the predictions (two selects and the
  in-place add: 2 adds of A*n), the corrected streams (``corrected[0]`` and the in-place slice add: 1) and the
  source of ``__setitem__``'s copy (Python runs ``x[1:] += y`` as ``x[1:] = x[1:].__iadd__(y)``: the base read by
  the copy's view and the slice: 1); the layer's output streams, read by the next layer's select (its router norm
  twice: 1 add of n), matmul and in-place add (2 adds of A*n), or, after the last layer, by the base model's
  A + 1 selects (A adds of A*n). The normed active prediction is read by Laurel's left linear, Laurel's add and
  q, k, v (q only on a KV-shared layer);
- activation sparsity (layers with ``activation_sparsity_pattern`` > 0), ``relu(x - (mean(x) + std(x) * c))`` over
  T rows of I: threshold_backward (1 CMP), the subtraction's -g (1 ADD) summed over I (I - 1 ADD per row),
  ``std * c`` (1 MULT per row), std_backward (``g / (2 * std)`` masked where std == 0: 2 MULT, 1 DIV, 1 CMP per row;
  ``(x - mean(x)) * (2/I * g)``: the mean (I - 1 ADD, 1 DIV per row), 1 ADD and 1 MULT per element), mean's
  backward (1 DIV per element); the gate read three times (mean, std, the subtraction): 2 adds of T*I on gate_proj;
- the base model: the embeddings read by the per-layer projection, their square, the A - 1 AltUp projections and
  the stack (A + 1 adds of n); each AltUp (un)projection's output read by its square and the rescaling (1 add);
  per round (start, end) the target magnitude ``mean(x^2) ** 0.5`` (pow(x, 1): EXP, 2 MULT; mean: DIV per element;
  ** 0.5: ``g * 0.5 * x ** -0.5``, SQRT, DIV, 2 MULT per token; read by A - 1 rescalings: A - 2 adds of T) and A - 1
  rescalings ``x * target / sqrt(clamp(mean(x^2)))`` (the division's two gradients: 3 DIV, 1 MULT, 1 neg per
  element, the sum over h; the product's two: 2 MULT and the sum over h; sqrt: 1 MULT, 1 DIV; clamp: 1 CMP per
  token); the mean of the A streams (A*n DIV), read twice by the final norm (n ADD); the per-layer inputs as
  gemma4's (two muls by constants, L adds of T*L*Hp).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import ops
from ..formula import Formula
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, DIV, EXP, MULT, PARAMS
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base

GEMMA4_TYPES: frozenset[str] = frozenset({"gemma4_text"})  # a multimodal gemma4 config profiles as gemma4_text


def pow_rms_norm_backward(rows: Formula, n: Formula | int, weight: bool = True) -> Counts:
    """Gemma4RMSNorm (``x * pow(mean(x^2) + eps, -0.5)``, ``* w`` with a scale), r rows of n, backwards (module
    docstring): ``rms_norm_backward`` with pow's 1 EXP + 2 MULT per row for rsqrt's 4 MULT."""
    elems = rows * n
    out = Counts({MULT: 4 * elems + 2 * rows, ADD: rows * (n - 1), DIV: elems, EXP: elems + rows,
                  ACT: 6 * elems + 4 * rows})
    if weight:  # g * w, and the weight's gradient sum_rows(g * y)
        out = out + Counts({MULT: 2 * elems, ADD: n * (rows - 1), ACT: 2 * elems + n})
    return out


def norm_shape(node: Node) -> tuple[Formula, Formula, bool]:
    """(rows, n, weight) of an eager RMSNorm node, from its forward counts (``ops.rms_norm``: one rsqrt per
    row, x^2 and x * rstd, and * w with a weight: 2 or 3 MULT per element)."""
    c = node.counts
    weight = bool(Formula.of(c.get(PARAMS, 0)))
    rows = Formula.of(c["sqrt"])
    one = {"B": 1, "S": 1, "P": 0}  # n is a constant: the ratio at one token
    n = int(Formula.of(c[MULT]).evaluate(one)) // (3 if weight else 2) // int(rows.evaluate(one))
    return rows, Formula.const(n), weight


def gemma4_router_backward(node: Node, spec: Any) -> Counts:
    """The router's own ops backwards (module docstring), T tokens, E experts, top k (proj is its own node)."""
    t, h, E, k = base.TOKENS, spec.hidden_size, spec.experts, spec.top_k
    n, pairs = t * h, t * k
    scale = Counts({MULT: 2 * n, ADD: h * (t - 1), ACT: 2 * n + h})  # norm(x) * scale: both gradients
    out = scale + ops.elementwise("mul", n) + base.softmax_backward(t, E)  # * h**-0.5
    out = out + Counts({DIV: 3 * pairs, MULT: pairs, ADD: 2 * pairs + t * (k - 1), ACT: 6 * pairs + t})  # w /= sum
    out = out + Counts({MULT: 2 * pairs, ACT: 2 * pairs}) + base.index_accumulate(pairs, E)  # * per_expert_scale[idx]
    return Counts(out)


def attention_dims(spec: Any, layer: int) -> tuple[int, int]:
    """(head dim, KV heads) of a gemma4 layer: a sliding layer's ``head_dim`` / ``num_key_value_heads``, a full
    layer's ``global_head_dim`` / its KV heads."""
    if spec.layers[layer].sliding:
        return spec.head_dim, spec.num_kv_heads
    return spec.global_head_dim, spec.global_kv_heads


def gemma4_node_backward(node: Node, spec: Any) -> Counts:
    """One node's backward (accumulations excluded)."""
    c = node.counts
    if node.kind == NodeKind.NORM:
        return pow_rms_norm_backward(*norm_shape(node))
    if node.part in ("per_layer_inputs", "per_layer_input"):  # two muls by constants; a product of two tensors
        n = Formula.of(c[MULT])
        return Counts({MULT: n, ACT: n}) if node.part == "per_layer_inputs" else Counts({MULT: 2 * n, ACT: 2 * n})
    if node.part == "combine":
        return Counts()  # an add: the gradient passes to both
    if node.kind == NodeKind.ROUTER:
        return gemma4_router_backward(node, spec)
    if node.kind == NodeKind.EXPERTS:
        view = base.ExpertShape(spec.experts, spec.top_k, spec.hidden_size, spec.moe_intermediate)
        return base.experts_backward(node, view)
    group = spec.num_heads // attention_dims(spec, node.layer)[1] if node.layer is not None else 1
    return base.node_backward(node, spec.norm, spec.activation, group)


def kv_shared_readers(spec: Any, shared: set[int]) -> dict[int, int]:
    """layer -> the KV-shared layers (``shared``) that read the keys and values it stores: each shared layer
    reads those of the last earlier non-shared layer of its type (sliding or full)."""
    out: dict[int, int] = {}
    for i in sorted(shared):
        kind = spec.layers[i].sliding
        source = max(j for j in range(i) if j not in shared and spec.layers[j].sliding == kind)
        out[source] = out.get(source, 0) + 1
    return out


def gemma4_accumulations(model: ModelProfile) -> dict[str, Counts]:
    """Gradient-accumulation adds per node (module docstring), charged to the node that wrote the tensor."""
    spec: Any = model.spec  # Gemma4Spec (its extra fields)
    t, h = base.TOKENS, spec.hidden_size
    stream = t * h
    out: dict[str, Counts] = {}

    add = partial(base.accumulate, out)

    nodes = list(model.nodes)
    by_path = {n.path: n for n in nodes}
    embed = next(n for n in nodes if n.kind == NodeKind.EMBEDDING)
    if spec.tie_word_embeddings:
        add(embed.path, Formula.const(spec.vocab_size * h))
    ple = spec.per_layer_dim
    if ple:
        per_layer = t * spec.num_layers * ple
        add(embed.path, stream)  # the embedding read by per_layer_model_projection too
        mix = next(n for n in nodes if n.part == "per_layer_inputs")
        add(mix.path, spec.num_layers * per_layer)  # the norm's two reads (1 add), the L layers' slices (L - 1)
    stored = kv_shared_readers(spec, set(spec.kv_shared_layers))
    writer = embed.path
    for layer in sorted({n.layer for n in nodes if n.layer is not None}):
        a = next(n.path for n in nodes if n.layer == layer and n.path.endswith(".q_proj")).rsplit(".", 1)[0]
        prefix = a.rsplit(".", 1)[0]
        D, KV = attention_dims(spec, layer)
        q, kv = t * spec.num_heads * D, t * KV * D
        add(writer, 2 * stream)  # input_layernorm (twice), the residual add
        shared = f"{a}.k_proj" not in by_path
        k_eq_v = not shared and f"{a}.v_proj" not in by_path
        add(f"{prefix}.input_layernorm", (0 if shared else (1 if k_eq_v else 2)) * stream)  # q, k, v read it
        add(f"{a}.q_proj", q)  # q_norm reads it twice
        add(f"{a}.q_norm", 2 * q)  # rope's fan-out
        if not shared:
            add(f"{a}.k_proj", (3 if k_eq_v else 1) * kv)  # k_norm twice (and v_norm twice)
            if not k_eq_v:
                add(f"{a}.v_proj", kv)
            add(f"{a}.k_norm", 2 * kv)
            add(f"{a}:rope", stored.get(layer, 0) * kv)  # the keys it stores, read by the KV-shared layers
            add(f"{a}.v_norm", stored.get(layer, 0) * kv)  # and the values
        add(f"{a}.o_proj", stream)  # post_attention_layernorm reads it twice
        moe = f"{prefix}.router" in by_path
        add(f"{prefix}:residual", (2 + (4 if moe else 0) + (1 if ple else 0)) * stream)
        add(f"{prefix}.pre_feedforward_layernorm", stream)  # gate and up
        add(f"{prefix}.mlp.down_proj", stream)  # the post-norm reads it twice
        if moe:
            add(f"{prefix}.experts", stream)  # post_feedforward_layernorm_2
            add(f"{prefix}:combine", stream)  # post_feedforward_layernorm
        if ple:
            add(f"{prefix}.per_layer_projection", stream)  # post_per_layer_input_norm
        writer = f"{prefix}:layer_scalar"
    add(writer, stream)  # the last layer's output, read by the final norm twice
    return out


def gemma4_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (own ops plus accumulations), and ``loss``."""
    spec: Any = model.spec
    acc = gemma4_accumulations(model)
    return base.family_counts(model, lambda n: gemma4_node_backward(n, spec), acc)




# --- gemma3n -------------------------------------------------------------------------------------------
GEMMA3N_TYPES: frozenset[str] = frozenset({"gemma3n_text"})  # a multimodal gemma3n config profiles as gemma3n_text


def gaussian_topk_backward(rows: Formula, n: Formula | int) -> Counts:
    """Gemma 3n's activation sparsity, relu(x - (mean(x) + std(x) * c)) over r rows of n, backwards (module
    docstring): per element MULT 1, DIV 1, CMP 1, ADD 2; per row MULT 3, DIV 2, CMP 1, ADD 2(n - 1)."""
    elems = rows * n
    return Counts({MULT: elems + 3 * rows, DIV: elems + 2 * rows, "cmp": elems + rows,
                   ADD: 2 * elems + 2 * rows * (n - 1), ACT: 5 * elems + 7 * rows})


def altup_backward(spec: Any) -> Counts:
    """A gemma3n layer's own ops (its ``:residual`` node: AltUp predict / correct, Laurel's mix, the per-layer
    input product) backwards, accumulations excluded (module docstring)."""
    t, h, A, Hp = base.TOKENS, spec.hidden_size, spec.altup_inputs, spec.per_layer_hidden
    n = t * h
    router = ops.elementwise("mul", n) + base.tanh_backward(t * A)  # norm(x) * 1/h, tanh: predict and correct
    mix = ops.matmul(h, A, A, batch=t) + ops.matmul(A, A, h, batch=t)  # streams @ coefs: both gradients
    out = 2 * router + mix + ops.elementwise("div", n)  # (attn + laurel) / sqrt(2)
    out = out + Counts({ADD: n, ACT: n})  # activated - predictions[0]: -g
    out = out + Counts({ADD: (A - 1) * n, ACT: n})  # innovation.repeat(A): the A copies summed
    out = out + Counts({MULT: 2 * A * n, ADD: A * t * (h - 1), ACT: 2 * A * n + A * t})  # innovation * coefs
    if spec.altup_correct_scale:  # corrected[0] * correct_output_scale: its gradient summed over the T rows
        out = out + Counts({MULT: 2 * n, ADD: h * (t - 1), ACT: 2 * n + h})
    out = out + Counts({MULT: 2 * t * Hp, ACT: 2 * t * Hp})  # act(gate(x)) * per_layer_input
    out = out + Counts({ADD: (A - 2) * n, ACT: n})  # corrected[1:] += x: x broadcast to A - 1 streams, summed
    return Counts(out)


def magnitude_backward(spec: Any) -> Counts:
    """The base model's own ops (its node: per-layer inputs' mix, AltUp's stream rescaling at the start and the
    end, the mean of the streams) backwards, accumulations excluded (module docstring)."""
    t, h, A = base.TOKENS, spec.hidden_size, spec.altup_inputs
    n, ple = t * h, t * spec.num_layers * spec.per_layer_hidden
    square = Counts({EXP: n, MULT: 2 * n, ACT: 3 * n}) + Counts({DIV: n, ACT: n})  # mean(x ** 2): pow, mean
    # x * target / sqrt(clamp(mean(x^2))): the division's two gradients, the product's two, sqrt, clamp
    rescale = (square + Counts({DIV: 3 * n, ADD: n + t * (h - 1), MULT: n, ACT: 5 * n + t})
               + Counts({MULT: 2 * n, ADD: t * (h - 1), ACT: 2 * n + t})
               + Counts({MULT: t, DIV: t, ACT: 2 * t}) + Counts({"cmp": t, ACT: 2 * t}))
    target = square + Counts({DIV: t, "sqrt": t, MULT: 2 * t, ACT: 3 * t})  # mean(x ** 2) ** 0.5
    round_ = target + (A - 1) * rescale + Counts({ADD: (A - 2) * t, ACT: (A - 2) * t})  # target read A - 1 times
    mean = Counts({DIV: A * n, ACT: A * n})  # the mean of the A streams
    mix = Counts({MULT: 2 * ple, ACT: 2 * ple})  # projection * h**-0.5 (in place), (. + emb) * 2**-0.5
    return Counts(2 * round_ + mean + mix)


def _two_calls(node: Node, rows: Formula) -> Counts:
    """A module called twice per layer (AltUp's router norm and modality router, in predict and in correct):
    each call's backward, and its weight's two gradients added (one add per weight)."""
    weights = Formula.of(node.counts[PARAMS])
    if node.kind == NodeKind.NORM:
        _, n, _ = norm_shape(node)
        one = pow_rms_norm_backward(rows, n)
    else:
        mm = node.facts.matmuls[0]
        one = ops.matmul(rows, mm.k, mm.n) + ops.matmul(mm.k, mm.n, rows)
    return Counts(2 * one + Counts({ADD: weights, ACT: weights}))


def gemma3n_node_backward(node: Node, spec: Any) -> Counts:
    """One node's backward (accumulations excluded)."""
    t = base.TOKENS
    if node.path.endswith((".altup.router_norm", ".altup.modality_router")):
        return _two_calls(node, t)
    if node.kind == NodeKind.NORM:
        return pow_rms_norm_backward(*norm_shape(node))
    if node.part == "residual" and node.layer is not None:
        return altup_backward(spec)
    if node.kind == NodeKind.ELEMENTWISE and node.path == node.module and node.layer is None:
        return magnitude_backward(spec)  # the base model's own ops
    if node.part == "gate_mul" and node.layer is not None and spec.sparsity[node.layer] > 0:
        inter = spec.layers[node.layer].ffn.intermediate
        return Counts({MULT: 2 * t * inter, ACT: 2 * t * inter}) + gaussian_topk_backward(t, inter)
    if node.kind == NodeKind.ELEMENTWISE and node.path.endswith(".altup"):
        return Counts()  # correct_output_scale: its product is the layer's own op (altup.forward as a method)
    return base.node_backward(node, spec.norm, spec.activation, spec.num_heads // spec.num_kv_heads)


def gemma3n_accumulations(model: ModelProfile) -> dict[str, Counts]:
    """Gradient-accumulation adds per node (module docstring), charged to the node that wrote the tensor."""
    spec: Any = model.spec  # Gemma3nSpec (its extra fields)
    t, h, A, L = base.TOKENS, spec.hidden_size, spec.altup_inputs, spec.num_layers
    n = t * h
    out: dict[str, Counts] = {}

    add = partial(base.accumulate, out)

    nodes = list(model.nodes)
    embed = next(x for x in nodes if x.kind == NodeKind.EMBEDDING)
    root = embed.module.rsplit(".", 1)[0]  # the base model ("model")
    if spec.tie_word_embeddings:
        add(embed.path, Formula.const(spec.vocab_size * h))
    # the embeddings, read by the per-layer projection, their square, the A - 1 AltUp projections and the stack;
    # the stack (layer 0's streams) as every layer's input (below)
    add(embed.path, (A + 1) * n)
    ple = t * L * spec.per_layer_hidden
    add(root, L * ple)  # the projection read twice by its norm; the per-layer inputs sliced by the L layers
    for i in range(A - 1):
        add(f"{root}.altup_projections.{i}", n)  # read by its square and the rescaling
        add(f"{root}.altup_unembed_projections.{i}", n)
    add(root, n)  # the mean of the streams, read twice by the final norm
    stored = kv_shared_readers(spec, {i for i, m in enumerate(spec.kv_modes) if m == "reuse"})
    writer = embed.path
    D, H, KV = spec.head_dim, spec.num_heads, spec.num_kv_heads
    q, kv = t * H * D, t * KV * D
    for layer in range(L):
        p = f"{root}.layers.{layer}"
        a = f"{p}.self_attn"
        # the layer's input streams: read by predict's stream 0 (its router norm twice: 1 add of T*h), the
        # streams' matmul and the residual add (2 adds of A*T*h)
        add(writer, n + 2 * A * n)
        shared = spec.kv_modes[layer] == "reuse"
        # the normed active prediction: Laurel's left linear and residual add, q (k, v)
        add(f"{p}.input_layernorm", (2 if shared else 4) * n)
        add(f"{p}.laurel.linear_right", n)  # the post-Laurel norm's two reads
        add(f"{a}.q_proj", q)
        add(f"{a}.q_norm", 2 * q)
        if not shared:
            add(f"{a}.k_proj", kv)
            add(f"{a}.v_proj", kv)
            add(f"{a}.k_norm", 2 * kv)
            add(f"{a}:rope", stored.get(layer, 0) * kv)  # the keys it stores, read by the KV-shared layers
            add(f"{a}.v_norm", stored.get(layer, 0) * kv)  # and the values
        add(f"{a}.o_proj", n)
        add(f"{p}.pre_feedforward_layernorm", n)  # gate and up
        if spec.sparsity[layer] > 0:  # the gate read by mean, std and the subtraction
            add(f"{p}.mlp.gate_proj", 2 * t * spec.layers[layer].ffn.intermediate)
        add(f"{p}.mlp.down_proj", n)
        add(f"{p}.per_layer_projection", n)
        # the active prediction (input norm twice, the attention residual), (attn + laurel) / sqrt2 (the
        # feed-forward's pre-norm twice, its residual), the corrected input (correct's router norm twice, the
        # innovation): 2 adds of T*h each; the predictions (three reads), the corrected streams (corrected[0]
        # and the in-place slice add) and the slice add's source (__setitem__'s copy): 4 adds of A*T*h
        add(f"{p}:residual", 6 * n + 4 * A * n)
        writer = f"{p}:residual"
    add(writer, A * A * n)  # the last layer's streams, read by the base model's A + 1 selects
    return out


def gemma3n_backward(model: ModelProfile) -> dict[str, Counts]:
    """node path -> backward counts (own ops plus accumulations), and ``loss``."""
    spec: Any = model.spec
    acc = gemma3n_accumulations(model)
    return base.family_counts(model, lambda x: gemma3n_node_backward(x, spec), acc)


__all__ = ["GEMMA3N_TYPES", "GEMMA4_TYPES", "altup_backward", "attention_dims", "gaussian_topk_backward", "gemma3n_accumulations",
           "gemma3n_backward", "gemma3n_node_backward", "gemma4_accumulations", "gemma4_backward",
           "gemma4_node_backward", "gemma4_router_backward", "kv_shared_readers", "magnitude_backward", "norm_shape",
           "pow_rms_norm_backward"]
