"""Measured peak of live tensors in one forward, against ``memory``'s predicted peak activations.

Measuring: after an uncounted prefill of ``past`` tokens, one forward of ``seq`` new tokens runs under a
``TorchDispatchMode`` that watches every aten op's outputs. An output whose untyped storage is new (not one of
the op's inputs' storages, not already tracked) adds ``storage.nbytes()`` to a live counter, and a
``weakref.finalize`` on the storage subtracts it when Python frees it. Views and in-place ops share their
input's storage, so they add nothing. Storages have sizes on the meta device too, so full-size models run
without memory.

What is counted: every tensor the forward creates while it is alive: activations, the causal mask, the
rotary tables, position ids, the KV-cache tensors the forward writes (``DynamicCache`` concatenates old and
new keys into a fresh (P + S)-token tensor per layer and drops the old one) and the logits. Not counted:
weights, the input ids and the cache tensors the prefill created (they exist before the forward), and
anything the allocator adds (caching, fragmentation, workspaces).

Predicting the same thing: ``memory.activation_bytes`` (the peak of activations, lm_head on all positions,
at the run's dtype: fp32 as ``build_model`` makes it, or bf16 / fp16 after a cast) + the KV cache the forward
leaves (the graph's ``cache`` elements after it, exact in ``validate``, at the same dtype). That is exactly the ``activations + kv_cache`` of ``memory.memory_usage`` at context
P + S: the prefill's old cache, freed by the forward's ``torch.cat``, is not in either.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .. import metrics as M
from ..errors import QueryError
from ..memory import activation_bytes
from ..profile import check_shape
from .guard import check_size, refusing
from .measure import _cache_layers, _ModuleStack, retry_forward
from .reference import reference
from .report import PeakComparison

# build_model makes fp32 models; compare_peak can cast to bf16 / fp16 (every activation and the cache follow)
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class _Live:
    """One tracked storage: when it was created (a counter), its bytes, and the module and op that made it."""

    order: int
    nbytes: int
    module: str
    op: str


@dataclass
class PeakMeasurement:
    """The peak bytes of tensors created and alive at once in one forward, and what was alive then."""

    peak: int = 0
    final: int = 0  # bytes still alive after the forward (its outputs: logits, KV cache, ...)
    peak_op: str = ""  # "module: aten op" whose output reached the peak
    at_peak: list[_Live] = field(default_factory=list)
    cache: int = 0  # bytes of the KV-cache tensors created by the forward and alive at the peak
    logits: int = 0  # bytes of the logits, when alive at the peak

    def breakdown(self, top: int = 6) -> list[str]:
        """The largest groups (module, op) of what was alive at the peak."""
        groups: dict[str, int] = {}
        for live in self.at_peak:
            key = f"{live.module or '(root)'}: {live.op}"
            groups[key] = groups.get(key, 0) + live.nbytes
        return [f"{k} {v:,}" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:top]]


class _LiveBytesMode(TorchDispatchMode):
    def __init__(self, modules: _ModuleStack) -> None:
        super().__init__()
        self.modules = modules
        self.live: dict[int, _Live] = {}  # storage._cdata -> record; entries leave when the storage is freed
        self.total = 0
        self.count = 0
        self.result = PeakMeasurement()

    def _freed(self, key: int) -> None:
        self.total -= self.live.pop(key).nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        grew = False
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self.live:  # a view or an in-place result: no new bytes
                continue
            self.count += 1
            self.live[key] = _Live(self.count, storage.nbytes(), self.modules.current, str(func))
            self.total += storage.nbytes()
            weakref.finalize(storage, self._freed, key)
            grew = True
        if grew and self.total > self.result.peak:
            self.result.peak = self.total
            self.result.peak_op = f"{self.modules.current or '(root)'}: {func}"
            self.result.at_peak = list(self.live.values())
        return out


def _tokens(model: torch.nn.Module, batch: int, n: int) -> torch.Tensor:
    device = next(model.parameters()).device
    if device.type == "meta":
        return torch.zeros(batch, n, dtype=torch.long, device=device)
    config: Any = model.config
    return torch.randint(0, config.get_text_config().vocab_size, (batch, n), device=device)


def measure_peak_activations(model: torch.nn.Module, batch: int, seq: int, past: int = 0) -> PeakMeasurement:
    """Uncounted prefill of ``past`` tokens, then the peak live bytes of one forward of ``seq`` new tokens."""
    with torch.no_grad():
        cache = None
        if past:
            cache = model(input_ids=_tokens(model, batch, past), use_cache=True).past_key_values
        new_tokens = _tokens(model, batch, seq)
        with _ModuleStack(model) as stack, _LiveBytesMode(stack) as mode:
            out = model(input_ids=new_tokens, past_key_values=cache, use_cache=True)
        result = mode.result
        result.final = mode.total
        # Name the cache and logits tensors among those alive at the peak by their creation order (a storage
        # address can be reused once freed, the order cannot).
        def order(t: Any) -> int | None:
            live = mode.live.get(t.untyped_storage()._cdata) if isinstance(t, torch.Tensor) else None
            return live.order if live else None

        cache_orders = {order(t) for layer in _cache_layers(out.past_key_values)
                        for t in (getattr(layer, "keys", None), getattr(layer, "values", None))} - {None}
        logits_order = order(out.logits)
        result.cache = sum(live.nbytes for live in result.at_peak if live.order in cache_orders)
        result.logits = sum(live.nbytes for live in result.at_peak if live.order == logits_order)
        del out, cache
    return result


def _kv_bytes(profile: Any, batch: int, seq: int, past: int, dtype: str) -> int:
    """Bytes of the KV cache after the forward: the graph's ``cache`` elements (exact in ``validate``)."""
    return profile.count(M.CACHE, "model", batch, seq, past) * (torch.finfo(_TORCH_DTYPES[dtype]).bits // 8)


def compare_peak(config: Any, batch: int, seq: int, past: int = 0, *, tiny: bool = False, dtype: str = "fp32",
                 as_family: str | None = None, model: Any = None) -> PeakComparison:
    """Measured peak live bytes of one forward (full size on meta, or ``tiny`` on the CPU) against
    ``memory.activation_bytes`` + the KV cache the forward leaves, both at ``dtype`` (module docstring).
    ``model`` reuses a reference built by ``measure.build_model`` (it is cast to ``dtype``)."""

    if dtype not in _TORCH_DTYPES:
        raise QueryError(f"dtype must be one of {', '.join(_TORCH_DTYPES)}, got {dtype!r}")
    b, s, p = check_shape(batch, seq, past)
    ref = reference(config, tiny=tiny, as_family=as_family)
    profile = ref.profile
    check_size(profile, b, s, p, tiny=tiny if model is None else next(model.parameters()).device.type != "meta")
    model = (ref.build() if model is None else model).to(_TORCH_DTYPES[dtype])
    with refusing(f"running the forward at batch {b}, seq {s}, past {p}", ref.hf_config, retry_forward(b, s, p)):
        measured = measure_peak_activations(model, b, s, p)
    activations = activation_bytes(profile, b, s, p, act_dtype=dtype)
    kv = _kv_bytes(profile, b, s, p, dtype)
    predicted = activations + kv
    notes = [f"peak reached at {measured.peak_op}",
             f"alive at the peak: KV cache {measured.cache:,}, logits {measured.logits:,}, "
             f"other {measured.peak - measured.cache - measured.logits:,}",
             "largest at the peak: " + "; ".join(measured.breakdown())]
    return PeakComparison(
        model=ref.name, model_type=profile.spec.model_type, batch=b, seq=s, past=p,
        device=ref.device, tiny=tiny, act_dtype=dtype, predicted=predicted,
        predicted_activations=activations, predicted_kv_cache=kv, measured=measured.peak,
        measured_kv_cache=measured.cache, measured_logits=measured.logits, measured_final=measured.final,
        notes=notes)


__all__ = ["PeakMeasurement", "compare_peak", "measure_peak_activations"]
