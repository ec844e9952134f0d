"""Measured counts: run the real transformers model and count every aten op, attributed to its node.

A ``TorchDispatchMode`` sees each aten op; global forward pre/post hooks keep a stack of module paths, so
every op is charged to the innermost module running it, and, for an op of a module's own forward (a module
whose ``forward`` is transformers code), to a part of that module: ``parts.RULES`` names it from the
innermost transformers frame (function, file, source line) and, in attention, the op's order relative to the
softmax. Each op goes through the same op table as the formulas (``aten.count`` -> ``llm_profiler.ops``).
Params come from each module's own parameters (tied ones once, to their first owner), the KV cache from the
cache object before and after the counted forward.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ValidationBuildError
from ..facts import StateKind
from ..ops import Counts
from . import aten, parts
from .guard import refusing
from .meta_routing import ROUTING_READERS, fixed_routing

Site = tuple[str, str | None]  # (module path, part of its own forward or None); "" is the root model


@dataclass
class Measured:
    """What one forward of the reference model did, per (module, part) ("" is the root model).

    ``part`` is None for an op no rule of ``parts.RULES`` names: the op of a leaf torch module (a Linear, an
    Embedding), or one of a transformers module's own ops that ``compare`` gives to the module's only node.
    """

    counts: dict[Site, Counts] = field(default_factory=lambda: defaultdict(Counts))
    params: dict[str, dict[str, int]] = field(default_factory=dict)  # module -> its own parameter -> elements
    cache_by_layer: dict[int, int] = field(default_factory=dict)  # elements after the counted forward
    cache_before: dict[int, int] = field(default_factory=dict)  # elements the prefill left (before it)
    cache_kinds: dict[int, dict[str, int]] = field(default_factory=dict)  # layer -> state kind -> elements after
    unknown_ops: Counter = field(default_factory=Counter)  # (module, aten op) -> calls
    data_ops: Counter = field(default_factory=Counter)  # (class, aten op) -> calls, for view / move / create
    # module -> "aten op in function (file:line)" -> calls, for the own ops no rule names (part None)
    unnamed: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    rules_used: Counter = field(default_factory=Counter)  # parts.Rule -> ops it named

    def by_module(self) -> dict[str, Counts]:
        """Counts summed per module (its own ops and every part)."""
        out: dict[str, Counts] = defaultdict(Counts)
        for (module, _), counts in self.counts.items():
            out[module] = out[module] + counts
        return dict(out)


class _ModuleStack:
    """Module paths of the forwards currently running, maintained by global hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        # modules whose forward is transformers code: their own ops can belong to a part (parts.py)
        self.transformers_code = {id(m) for m in model.modules()
                                  if getattr(type(m).forward, "__module__", "").startswith("transformers")}
        self.stack: list[str] = [""]
        self.own: list[bool] = [id(model) in self.transformers_code]
        self._handles: list[Any] = []

    def __enter__(self) -> _ModuleStack:
        def pre(module: torch.nn.Module, args: Any) -> None:
            named = id(module) in self.names
            self.stack.append(self.names[id(module)] if named else self.stack[-1])
            # a module built inside a forward (codegen's nn.Softmax(dim=-1)(x)) is part of its caller's own ops
            self.own.append(id(module) in self.transformers_code if named else self.own[-1])

        def post(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.stack.pop()
            self.own.pop()

        self._handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(pre),
            torch.nn.modules.module.register_module_forward_hook(post, always_call=True),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()

    @property
    def current(self) -> str:
        return self.stack[-1]

    @property
    def current_is_transformers_code(self) -> bool:
        return self.own[-1]


def _transformers_frame(frame: Any) -> Any:
    """The innermost frame running transformers code, or None."""
    root = parts.transformers_dir()
    while frame is not None and not frame.f_code.co_filename.startswith(root):
        frame = frame.f_back
    return frame


class _CountingMode(TorchDispatchMode):
    def __init__(self, modules: _ModuleStack, measured: Measured) -> None:
        super().__init__()
        self.modules = modules
        self.measured = measured
        self._softmaxed: Any = None  # the attention call (frame) whose softmax has run: later ops are context
        self._paused = 0  # > 0 inside an op counted as a whole (scaled_dot_product_attention)

    def __exit__(self, *exc: Any) -> None:
        self._softmaxed = None  # let that frame and its tensors go
        super().__exit__(*exc)

    def _part(self, func: Any) -> str | None:
        """The part of the current module's own forward this op belongs to (parts.RULES), or None."""
        if not self.modules.current_is_transformers_code:
            return None  # a leaf torch module (Linear, Embedding, LayerNorm): its node is the module path
        frame = _transformers_frame(sys._getframe(1))
        if frame is None:
            self.measured.unnamed[self.modules.current][f"{aten.op_name(func)} outside transformers code"] += 1
            return None
        rule = parts.rule_for(frame.f_code, frame.f_lineno, aten.op_name(func))
        if rule is None:
            where = f"{aten.op_name(func)} in {parts.describe(frame.f_code, frame.f_lineno)}"
            self.measured.unnamed[self.modules.current][where] += 1
            return None
        self.measured.rules_used[rule] += 1
        if rule.part != parts.ORDERED:
            return rule.part
        if aten.op_name(func) == "_softmax":
            self._softmaxed = frame
            return parts.SOFTMAX
        return parts.CONTEXT if frame is self._softmaxed else parts.SCORES

    @contextlib.contextmanager
    def counting_sdpa(self) -> Iterator[None]:
        """``torch.nn.functional.scaled_dot_product_attention`` counted as one op by its documented definition
        (``aten.scaled_dot_product_attention``), whatever backend runs it: on the meta device and on the
        math backend it would otherwise decompose into other ops, on the CPU it is one fused kernel."""
        real = torch.nn.functional.scaled_dot_product_attention

        def counted(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                    dropout_p: float = 0.0, is_causal: bool = False, **kwargs: Any) -> torch.Tensor:
            module = self.modules.current
            for part, counts in aten.scaled_dot_product_attention(query, key, value, attn_mask, is_causal).items():
                self.measured.counts[(module, part)] = self.measured.counts[(module, part)] + counts
            self._paused += 1
            try:
                return real(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            **kwargs)
            finally:
                self._paused -= 1

        torch.nn.functional.scaled_dot_product_attention = counted  # type: ignore[assignment]
        try:
            yield
        finally:
            torch.nn.functional.scaled_dot_product_attention = real

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._paused:  # inside an op counted as a whole (counting_sdpa)
            return out
        kind = aten.classify(func)
        if kind == "compute":
            where = (self.modules.current, self._part(func))
            self.measured.counts[where] = self.measured.counts[where] + aten.count(func, args, kwargs, out)
        elif kind == "unknown":
            self.measured.unknown_ops[(self.modules.current, str(func))] += 1
        else:
            self.measured.data_ops[(kind, str(func))] += 1
        return out


def build_model(hf_config: dict[str, Any], device: str = "meta", seed: int = 0,
                attention: str = "eager", experts: str = "batched_mm") -> torch.nn.Module:
    """The transformers causal LM for a config dict, with ``attention`` ("eager", the reference, or "sdpa")
    and ``experts`` the MoE experts implementation: "batched_mm" (the reference: the op counters see each
    expert's matmuls as one bmm over the routed pairs), or "grouped_mm" (the kernel training runs: the expert
    weights are read in place, not gathered per pair).

    A config transformers has no causal LM for, or refuses (its config checks, its model construction), is
    a ``ValidationBuildError`` (``guard.refusing``)."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    data = dict(hf_config)
    model_type = data.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ValidationBuildError(
            f"validate needs the config's model_type to build the transformers model, got {model_type!r}; add "
            "\"model_type\" to the config or pass as_family=... (CLI: --as-family)")
    if model_type not in CONFIG_MAPPING_NAMES or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValidationBuildError(
            f"transformers {transformers.__version__} has no causal LM class for model_type {model_type!r}, so "
            "validate cannot build the reference model; pass as_family= (CLI: --as-family) a family that "
            "transformers implements, or profile the model without validating it")
    if attention != "eager":
        cls_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
        if not getattr(getattr(transformers, str(cls_name), None), "_supports_sdpa", True):
            raise ValidationBuildError(
                f"transformers {transformers.__version__}'s {cls_name} does not run attn_implementation="
                f"{attention!r} (its _supports_sdpa is False): validate it with engine hf-eager")

    def retry(cfg: dict[str, Any]) -> None:  # the same build without one field (guard.blame), on meta
        build_model(cfg, device="meta", attention=attention, experts=experts)

    with refusing("reading the config", hf_config, retry):
        config = transformers.AutoConfig.for_model(model_type, **data)
    config._attn_implementation = attention
    for attr in ("experts_implementation", "_experts_implementation"):
        with contextlib.suppress(Exception):
            setattr(config, attr, experts)
    torch.manual_seed(seed)
    with refusing("building the model", hf_config, retry), torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention,
                                                              dtype=torch.float32)
    return model.eval()


def module_params(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """module -> each parameter it holds itself -> elements (tied parameters once, at their first owner)."""
    seen: set[int] = set()
    out: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        own: dict[str, int] = {}
        for param_name, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                own[param_name] = int(p.numel())
        if own:
            out[name] = own
    return out


def _cache_layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise RuntimeError(f"unexpected cache type {type(cache).__name__}: no .layers")
    return list(layers)


# Cache-layer attributes that hold state, by kind (``facts.StateKind``); a dict of tensors (transformers' linear-
# attention layers keep one conv / recurrent state per index) counts every tensor in it.
STATE_ATTRIBUTES: dict[str, str] = {
    "keys": StateKind.KEYS_VALUES,
    "values": StateKind.KEYS_VALUES,
    "indexer_keys": StateKind.INDEXER_KEYS,
    "conv_states": StateKind.CONV,
    "recurrent_states": StateKind.RECURRENT,
    # deepseek_v4's DeepseekV4HCACache / DeepseekV4CSACache (graph.compressed_attention.CompressedStateKind):
    # the pooled entries of the compressor and of the indexer (dicts keyed "compressor" / "indexer"), ...
    "compressed_kv": "compressed",
    # ... the projected kv / gate of the tokens waiting for their window, and CSA's carried-over half window
    "buffer_kv": "compressor_state",
    "buffer_gate": "compressor_state",
    "overlap_kv": "compressor_state",
    "overlap_gate": "compressor_state",
}
# Tensors a cache layer keeps for bookkeeping, not state: positions and counters (a few integers per token).
BOOKKEEPING_ATTRIBUTES: frozenset[str] = frozenset({
    "indexer_position_ids", "indexer_cumulative_length", "cumulative_length",
    "_sliding_window_tensor",  # DynamicSlidingWindowLayer's window as a 0-d tensor
})


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for t in value.values() if isinstance(t, torch.Tensor)]
    if isinstance(value, (list, tuple)):
        return [t for t in value if isinstance(t, torch.Tensor)]
    return []


def cache_states(cache: Any) -> dict[int, dict[str, int]]:
    """Layer -> state kind -> elements the cache object holds now, every tensor of every layer once (a tensor
    two names share counts once). A tensor attribute neither state nor bookkeeping is an error that names it:
    the profile cannot be validated against a cache it does not know."""
    out: dict[int, dict[str, int]] = {}
    seen: set[int] = set()
    for index, layer in enumerate(_cache_layers(cache)):
        kinds: dict[str, int] = {}
        for name, value in vars(layer).items():
            tensors = _tensors(value)
            if not tensors or name in BOOKKEEPING_ATTRIBUTES:
                continue
            kind = STATE_ATTRIBUTES.get(name)
            if kind is None:
                raise ValidationBuildError(
                    f"validate cannot measure this model's cache: layer {index} ({type(layer).__name__}) holds "
                    f"tensor attribute {name!r}, which llm_profiler/validation/measure.py's STATE_ATTRIBUTES does "
                    "not map to a state kind (the counts themselves, `profile`, are unaffected)")
            for t in tensors:
                key = id(t) if t.device.type == "meta" else t.untyped_storage().data_ptr() + int(t.storage_offset())
                if key in seen:
                    continue
                seen.add(key)
                kinds[kind] = kinds.get(kind, 0) + int(t.numel())
        out[index] = kinds
    # transformers' MiniMaxCache keeps each lightning layer's state (B x H x D x D) in its own list
    # ``linear_cache`` (indexed by layer; [] for the attention layers), outside ``layers``
    for index, state in enumerate(getattr(cache, "linear_cache", None) or ()):
        for t in _tensors(state):
            kinds = out.setdefault(index, {})
            kinds[StateKind.RECURRENT] = kinds.get(StateKind.RECURRENT, 0) + int(t.numel())
    return out


def minimax_cache(cache: Any) -> Any:
    """The prefill's ``MiniMaxCache`` with each lightning layer's slot in ``layers`` (an empty ``DynamicLayer``
    that ``DynamicCache.update`` appended before a later attention layer's entry) made a ``DummyLayer``,
    transformers' own class for a layer without keys and values; every tensor stays as the prefill left it.

    transformers 5.23 cannot run a forward after a prefill when layer 0 is a lightning layer (MiniMax-Text-01's
    pattern): ``create_causal_mask`` sizes the mask from the first cache layer that is neither sliding, linear
    nor dummy (``find_first_full_attention_index``), which is that empty slot 0, so the mask covers S keys where
    the attention layers hold P + S (masking_utils.py: ``kv_length, kv_offset = past_key_values.get_mask_sizes
    (q_length, layer_idx)`` returns (S, 0); eager attention then fails on ``attn_weights + attention_mask``), and
    ``get_seq_length()`` (the positions) reads the same slot. With the slot a DummyLayer both skip to the first
    attention layer, as for every other hybrid cache; the forward itself runs unchanged."""
    if type(cache).__name__ != "MiniMaxCache":
        return cache
    from transformers.cache_utils import DummyLayer

    for index, layer in enumerate(cache.layers):
        lightning = index < len(cache.linear_cache) and isinstance(cache.linear_cache[index], torch.Tensor)
        if lightning and not getattr(layer, "is_initialized", True):
            cache.layers[index] = DummyLayer()
    return cache


def cache_elements(cache: Any) -> dict[int, int]:
    """Layer -> elements of every state the cache object holds now."""
    return layer_totals(cache_states(cache))


def layer_totals(states: dict[int, dict[str, int]]) -> dict[int, int]:
    """Layer -> elements of all its kinds of state (``cache_states``'s result summed per layer)."""
    return {layer: sum(kinds.values()) for layer, kinds in states.items()}


def _cache_argument(model: torch.nn.Module) -> str:
    """The forward's cache argument: ``past_key_values``, or ``cache_params`` (transformers' mamba / mamba2)."""
    return "cache_params" if "cache_params" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    for name in ("past_key_values", "cache_params"):
        cache = getattr(out, name, None)
        if cache is not None:
            return cache
    raise ValidationBuildError(f"the forward returned no cache ({type(out).__name__} has neither past_key_values "
                               "nor cache_params)")


def retry_forward(batch: int, seq: int, past: int) -> Any:
    """The forward step again, on the meta device, for ``guard.blame``."""
    def retry(cfg: dict[str, Any]) -> None:
        measure(build_model(cfg, device="meta"), batch, seq, past)

    return retry


def measure(model: torch.nn.Module, batch: int, seq: int, past: int = 0) -> Measured:
    """Run an uncounted prefill of ``past`` tokens, then count a forward of ``seq`` new tokens."""
    device = next(model.parameters()).device
    config: Any = model.config
    vocab = config.get_text_config().vocab_size

    def tokens(n: int) -> torch.Tensor:
        if device.type == "meta":
            return torch.zeros(batch, n, dtype=torch.long, device=device)
        return torch.randint(0, vocab, (batch, n), device=device)

    measured = Measured(params=module_params(model))
    # DBRX's and JetMoE's experts read the routing's values, which meta has not: a fixed routing, computed on
    # small CPU shadows, outside the counting mode (validation/meta_routing.py; the counts do not depend on it)
    routing = (fixed_routing() if device.type == "meta" and getattr(config, "model_type", None) in ROUTING_READERS
               else contextlib.nullcontext())
    with torch.no_grad(), routing:
        cache = None
        if past:
            cache = _returned_cache(model(input_ids=tokens(past), use_cache=True))
            measured.cache_before = cache_elements(cache)  # the forward below grows this object in place
            cache = minimax_cache(cache)  # a MiniMaxCache whose layer 0 is lightning (transformers 5.23)
        new_tokens = tokens(seq)
        with _ModuleStack(model) as stack, _CountingMode(stack, measured) as mode, mode.counting_sdpa():
            out = model(input_ids=new_tokens, use_cache=True, **{_cache_argument(model): cache})
    measured.cache_kinds = cache_states(_returned_cache(out))
    measured.cache_by_layer = layer_totals(measured.cache_kinds)
    return measured
