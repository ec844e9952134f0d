"""A full-size forward on the meta device for MoE code whose control flow reads the routing (DBRX's
``nonzero`` over the expert mask, JetMoE's ``expert_size.tolist()``): a fixed routing, computed for real.

The meta device has shapes and no data, so an op whose output shape or a Python branch depends on values
cannot run there. In these experts the values that matter are the router's choices, and the counts do not
depend on them: every token sends its rows to exactly top_k experts, so the experts' matmuls, products and
scatters add up to B*S*top_k rows whichever experts are chosen (the CPU runs with real routing, tiny and at
full width, check exactly that). ``fixed_routing()`` is a ``TorchDispatchMode`` entered around ``validate``
(outside its counting mode, which sees every op first): a ``topk`` over a meta tensor keeps its meta outputs
and gains a *shadow*, a small CPU tensor holding a fixed valid choice (row r picks r*k, r*k+1, ..., r*k+k-1
modulo the experts: k distinct experts, the T*k picks spread over min(T*k, E) experts, the number of experts
hit the rules count, ``Weight.pairs``). Every op whose meta inputs all have shadows also runs on the
shadows; small tensors created on meta (``zeros``, ``arange``) get shadows too. Data-dependent ops then read
the shadows: ``nonzero`` returns a meta tensor of the shadow's result shape, ``_local_scalar_dense`` (item,
tolist, int()) and a copy to the CPU return the shadow's values. Ops mixing shadowed and plain meta tensors run
on meta as usual (an in-place one drops its target's shadow, so a stale value can only fail loudly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

SHADOW = "_llm_profiler_shadow"
# The model types whose experts read the routing's values (measure enters fixed_routing for them on meta).
ROUTING_READERS = frozenset({"dbrx", "jetmoe"})
SMALL = 1 << 20  # elements: tensors created on meta up to this size get a shadow (routing tensors are B*S*E)


def _shadow(t: Any) -> Any:
    return getattr(t, SHADOW, None) if isinstance(t, torch.Tensor) and t.device.type == "meta" else None


def _attach(meta: Any, shadow: Any) -> None:
    if isinstance(meta, torch.Tensor) and isinstance(shadow, torch.Tensor) and meta.device.type == "meta":
        setattr(meta, SHADOW, shadow)
    elif isinstance(meta, (tuple, list)) and isinstance(shadow, (tuple, list)):
        for m, s in zip(meta, shadow, strict=False):
            _attach(m, s)


def _on_shadows(x: Any) -> Any:
    shadow = _shadow(x)
    if shadow is not None:
        return shadow
    if isinstance(x, torch.device) and x.type == "meta":
        return torch.device("cpu")
    return x


def _fixed_topk(func: Any, args: tuple, kwargs: dict, out: Any) -> Any:
    """Shadows for topk(x, k, dim) over a meta tensor: values 0, row r's indices (r*k + j) mod n, j < k."""
    x, k = args[0], int(args[1])
    dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
    dim = dim % x.dim()
    n = x.shape[dim]
    moved = list(x.shape)
    moved.pop(dim)
    rows = int(torch.tensor(moved).prod()) if moved else 1
    picks = (k * torch.arange(rows).unsqueeze(1) + torch.arange(k).unsqueeze(0)) % n  # (rows, k)
    indices = picks.reshape(*moved, k).movedim(-1, dim).contiguous()
    _attach(out[0], torch.zeros(out[0].shape, dtype=out[0].dtype))
    _attach(out[1], indices.to(out[1].dtype))
    return out


class _FixedRouting(TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        metas = [t for t in tensors if t.device.type == "meta"]
        name = func.overloadpacket.__name__
        shadowed = bool(metas) and all(_shadow(t) is not None for t in metas)
        if name == "topk" and metas and not shadowed:
            return _fixed_topk(func, args, kwargs, func(*args, **kwargs))
        if not shadowed:
            out = func(*args, **kwargs)
            if metas and func._schema.is_mutable:  # a shadowed tensor changed by plain meta data: now unknown
                for t in metas:
                    if _shadow(t) is not None:
                        delattr(t, SHADOW)
            if not tensors and isinstance(out, torch.Tensor) and out.device.type == "meta" and out.numel() <= SMALL:
                _attach(out, func(*args, **tree_map(_on_shadows, kwargs)))  # a small tensor made on meta
            return out
        # every meta input has a shadow: run on the shadows too, and let them answer what needs data
        real = func(*tree_map(_on_shadows, args), **tree_map(_on_shadows, kwargs))
        if name == "_local_scalar_dense":
            return real
        if name in ("_to_copy", "to", "copy") and not (isinstance(real, torch.Tensor) and real.device.type == "meta"):
            if kwargs.get("device") is not None and torch.device(kwargs["device"]).type != "meta":
                return real  # a copy off the meta device (tolist, .cpu()): the shadow's values
        if name == "nonzero":
            out = torch.empty(real.shape, dtype=real.dtype, device="meta")
        else:
            out = func(*args, **kwargs)
        _attach(out, real)
        return out


@contextlib.contextmanager
def fixed_routing() -> Iterator[None]:
    """Run meta-device forwards with a fixed valid routing (see the module docstring).

    ``F.one_hot`` of a shadowed index runs on the shadow, so its ops are the CPU kernel's (a range check by
    aminmax, zeros, scatter_): on a meta tensor torch takes another path (index == arange(classes), one
    comparison per class), which is not what the model computes on a real device."""
    real_one_hot = torch.nn.functional.one_hot

    def one_hot(tensor: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
        shadow = _shadow(tensor)
        if shadow is None:
            return real_one_hot(tensor, num_classes)
        out = real_one_hot(shadow, num_classes)
        meta = out.to("meta")
        _attach(meta, out)
        return meta

    torch.nn.functional.one_hot = one_hot
    try:
        with _FixedRouting():
            yield
    finally:
        torch.nn.functional.one_hot = real_one_hot


__all__ = ["ROUTING_READERS", "fixed_routing"]
