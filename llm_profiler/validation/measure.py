"""Measured counts: run the real transformers model and count every aten op, attributed to its module.

A ``TorchDispatchMode`` sees each aten op; global forward pre/post hooks keep a stack of module paths, so
every op is charged to the innermost module running it. Each op goes through the same op table as the
formulas (``aten.count`` -> ``llm_profiler.ops``). Params come from each module's own parameters (tied
ones once, to their first owner), the KV cache from the cache object the forward returns.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..ops import Counts
from . import aten


@dataclass
class Measured:
    """What one forward of the reference model did, per module path ("" is the root model)."""

    counts: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    params: dict[str, int] = field(default_factory=dict)
    cache_by_layer: dict[int, int] = field(default_factory=dict)
    unknown_ops: Counter = field(default_factory=Counter)  # (module, aten op) -> calls
    data_ops: Counter = field(default_factory=Counter)  # (class, aten op) -> calls, for view / move / create


class _ModuleStack:
    """Module paths of the forwards currently running, maintained by global hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.stack: list[str] = [""]
        self._handles: list[Any] = []

    def __enter__(self) -> _ModuleStack:
        def pre(module: torch.nn.Module, args: Any) -> None:
            self.stack.append(self.names.get(id(module), self.stack[-1]))

        def post(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.stack.pop()

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


class _CountingMode(TorchDispatchMode):
    def __init__(self, modules: _ModuleStack, measured: Measured) -> None:
        super().__init__()
        self.modules = modules
        self.measured = measured

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        kind = aten.classify(func)
        if kind == "compute":
            where = self.modules.current
            self.measured.counts[where] = self.measured.counts[where] + aten.count(func, args, kwargs, out)
        elif kind == "unknown":
            self.measured.unknown_ops[(self.modules.current, str(func))] += 1
        else:
            self.measured.data_ops[(kind, str(func))] += 1
        return out


def build_model(hf_config: dict[str, Any], device: str = "meta", seed: int = 0) -> torch.nn.Module:
    """The transformers causal LM for a config dict, with eager attention and batched MoE experts."""
    import transformers

    data = dict(hf_config)
    model_type = data.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **data)
    config._attn_implementation = "eager"
    for attr in ("experts_implementation", "_experts_implementation"):
        with contextlib.suppress(Exception):
            setattr(config, attr, "batched_mm")
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                                              dtype=torch.float32)
    return model.eval()


def module_params(model: torch.nn.Module) -> dict[str, int]:
    seen: set[int] = set()
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        total = 0
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        if total:
            out[name] = total
    return out


def _cache_layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise RuntimeError(f"unexpected cache type {type(cache).__name__}: no .layers")
    return list(layers)


def measure(model: torch.nn.Module, batch: int, seq: int, past: int = 0) -> Measured:
    """Run an uncounted prefill of ``past`` tokens, then count a forward of ``seq`` new tokens."""
    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size

    def tokens(n: int) -> torch.Tensor:
        if device.type == "meta":
            return torch.zeros(batch, n, dtype=torch.long, device=device)
        return torch.randint(0, vocab, (batch, n), device=device)

    measured = Measured(params=module_params(model))
    with torch.no_grad():
        cache = None
        if past:
            cache = model(input_ids=tokens(past), use_cache=True).past_key_values
        new_tokens = tokens(seq)
        with _ModuleStack(model) as stack, _CountingMode(stack, measured):
            out = model(input_ids=new_tokens, past_key_values=cache, use_cache=True)
    for index, layer in enumerate(_cache_layers(out.past_key_values)):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        measured.cache_by_layer[index] = sum(int(t.numel()) for t in (keys, values) if isinstance(t, torch.Tensor))
    return measured
