"""Measured bytes of the tensors autograd saves for backward, per forward site, in any dtype, with or without
LoRA adapters: what ``training.activations.saved_bytes_by_node`` is compared with.

``measure_saved_bytes(model, batch, seq)`` runs the forward and a loss under
``torch.autograd.graph.saved_tensors_hooks``: ``validation.backward.measure_saved`` counting bytes
(``storage.nbytes()``), not elements, so a float32 intermediate of a bf16 model counts 4 bytes an element.

``add_lora(model, rank, targets)`` freezes every parameter and wraps each targeted ``nn.Linear`` with
hand-written adapters (no peft needed): ``y = base(x) + B(A(x)) * (alpha / rank)``, A (rank x in) and B
(out x rank) plain ``nn.Linear`` without bias, as peft's ``lora.Linear`` computes it with ``lora_dropout=0``
(its dropout an ``nn.Identity``). The adapters run inside the linear's own module (their sites are the
linear's).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from .backward import LOSS, measure_saved
from .measure import Site


class LoraLinear(torch.nn.Module):
    """A frozen ``nn.Linear`` plus its LoRA adapters (``lora_A``, ``lora_B``): x W^T + (x A^T) B^T * scaling."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.lora_A = torch.nn.Linear(base.in_features, rank, bias=False, dtype=base.weight.dtype)
        self.lora_B = torch.nn.Linear(rank, base.out_features, bias=False, dtype=base.weight.dtype)
        torch.nn.init.normal_(self.lora_B.weight, std=0.02)  # peft starts B at zero; nonzero keeps grads nonzero
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.base.weight, self.base.bias) + \
            self.lora_B(self.lora_A(x)) * self.scaling


def add_lora(model: torch.nn.Module, rank: int, targets: tuple[str, ...], alpha: float = 16.0) -> torch.nn.Module:
    """Freeze ``model`` and wrap each ``nn.Linear`` whose name is in ``targets`` (module docstring)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, torch.nn.Linear):
                setattr(module, child_name, LoraLinear(child, rank, alpha))
    return model


def measure_saved_bytes(model: torch.nn.Module, batch: int, seq: int, seed: int = 0) -> dict[Site, int]:
    """Bytes of the tensors saved for backward per forward site (``validation.backward.measure_saved`` in bytes);
    the LoRA adapters' sites are their linear's."""
    return measure_saved(model, batch, seq, seed, in_bytes=True)


def saved_bytes_rows(config: Any, batch: int, seq: int, *, dtype: str = "bf16", lora_rank: int | None = None,
                     lora_targets: tuple[str, ...] = ("q_proj", "v_proj"), experts: str = "batched_mm") -> list[Any]:
    """Rows (node, ``saved_bytes``): ``training.activations.saved_bytes_by_node`` (or, with ``lora_rank``,
    ``training.lora.lora_saved_bytes_by_node``) against ``measure_saved_bytes`` on the tiny reference model in
    ``dtype`` (bf16 or fp32), its MoE experts run by ``experts`` (batched_mm or grouped_mm)."""
    from ..training.activations import saved_bytes_by_node
    from ..training.lora import lora_saved_bytes_by_node
    from .compare import NodeResolver
    from .reference import reference
    from .report import ValidationRow

    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    ref = reference(config, tiny=True)
    model = ref.build(experts=experts).to(torch_dtype)
    act = 2 if dtype == "bf16" else 4
    if lora_rank is not None:
        add_lora(model, lora_rank, lora_targets)
        predicted = lora_saved_bytes_by_node(ref.profile, lora_rank, lora_targets, act_bytes=act)
    else:
        predicted = saved_bytes_by_node(ref.profile, act_bytes=act, experts=experts)
    measured = measure_saved_bytes(model, batch, seq)
    resolve = NodeResolver(ref.profile.nodes)
    got: dict[str, int] = defaultdict(int)
    for (module, part), n in measured.items():
        module = module.replace(".lora_A", "").replace(".lora_B", "").replace(".base", "")
        got[LOSS if module == LOSS else resolve.node(module, part)] += n
    env = {"B": batch, "S": seq, "P": 0}
    rows = []
    for path in [*predicted, *sorted(p for p in got if p not in predicted)]:
        p = int(predicted[path].evaluate(env)) if path in predicted else 0
        m = got.get(path, 0)
        if p or m:
            rows.append(ValidationRow(node=path, module=resolve.module_of.get(path, path), metric="saved_bytes",
                                      predicted=p, measured=m))
    return rows


__all__ = ["LoraLinear", "add_lora", "measure_saved_bytes", "saved_bytes_rows"]
