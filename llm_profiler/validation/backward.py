"""Measured backward counts: run ``loss.backward()`` on the real transformers model, attributed per node.

The forward runs as ``measure.measure`` runs it (the module stack and ``parts.RULES`` name the site, module
and part, of every aten op), with one addition: a ``TorchFunctionMode`` above autograd tags each autograd
node a torch function creates with the site of the ops it dispatched (``node.metadata``). The loss,
``cross_entropy(logits, targets)`` (mean over the B*S tokens), runs after the model, at the site ``loss``.

During ``loss.backward()`` a ``TorchDispatchMode`` counts every aten op through the op table (forward ops
through ``aten.count``, the backward-only ops through ``training.backward.ATEN_BACKWARD``) and charges it to
the site of the autograd node running it (``torch._C._current_autograd_node()``), with one exception, the
gradient accumulation of the engine: when a tensor is read by r ops, the gradients those r ops send back to
it are summed by r - 1 ``add``s. The engine runs them after the sending node finished (after its post hook,
while it is still the current node), so which node *sends* the second gradient depends on the engine's
order. The convention here does not: an accumulation is charged to the node that *wrote* the tensor (the
receiving autograd node, or, for a view, the computing node behind it; for a parameter read twice, a tied
embedding, the parameter's module). The post hooks record which receivers already hold a gradient, so each
accumulation ``add`` is matched to its receiver as the engine runs it.
"""

from __future__ import annotations

import contextlib
import linecache
import re
import sys
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .. import metrics as M
from ..formula import Formula
from ..ops import Counts
from ..profile import ModelProfile
from ..training import backward as rules
from . import aten, parts
from .compare import NodeResolver
from .measure import Measured, Site, _CountingMode, _ModuleStack, module_params
from .meta_routing import ROUTING_READERS, fixed_routing
from .report import ValidationRow

LOSS = "loss"  # the site (and node path) of the cross-entropy on the logits
# backward-only aten ops that do no arithmetic: a zero tensor with the gradient copied into a slice of it
_BACKWARD_MOVES = frozenset({"slice_backward", "select_backward", "index_select_backward", "unfold_backward"})
_BACKWARD_MOVES |= {"new_empty_strided"}  # CopySlices' fresh gradient buffer (MLA's copies into the keys)
_BACKWARD_MOVES |= {"_conj"}  # a lazy conjugate (a flag): complex rope's grad * conj(freqs_cis), llama4
_SITE, _COMPUTES = "llm_profiler_site", "llm_profiler_computes"


@dataclass
class MeasuredBackward:
    """What ``loss.backward()`` did, per forward site; ``forward`` is the counted forward of the same run."""

    forward: Measured
    counts: dict[Site, Counts] = field(default_factory=lambda: defaultdict(Counts))
    unknown_ops: Counter = field(default_factory=Counter)  # (autograd node, aten op) -> calls
    untagged: Counter = field(default_factory=Counter)  # autograd node types that ran with no forward site
    data_ops: Counter = field(default_factory=Counter)
    accumulations: int = 0  # gradient-accumulation adds matched to a receiver


class _SiteRecorder(_CountingMode):
    """The forward counting mode, also remembering the sites of the ops of the current torch function."""

    def __init__(self, modules: _ModuleStack, measured: Measured) -> None:
        super().__init__(modules, measured)
        self.sites: list[tuple[Site, bool]] = []  # (site, computes) of each op since the last reset
        self.loss = False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        kind = aten.classify(func)
        if self.loss:
            where: Site = (LOSS, None)
        elif kind in ("compute", "view", "move"):
            where = (self.modules.current, self._repeat_kv_part() or self._expand_kv_part(func) or self._part(func))
        else:
            where = (self.modules.current, None)
        if kind == "compute":
            self.measured.counts[where] = self.measured.counts[where] + aten.count(func, args, kwargs, out)
        elif kind == "unknown" and not self.loss:
            self.measured.unknown_ops[(self.modules.current, str(func))] += 1
        self.sites.append((where, kind == "compute"))
        return out


    def _expand_kv_part(self, func: Any) -> str | None:
        """MLA's ``expand_kv`` (deepseek_v2 / v3 / v32, glm4_moe_lite, glm_moe_dsa): the shared rope key expanded to
        every head, a view whose backward sums the heads; like repeat_kv's keys, it belongs to ``scores``."""
        if aten.op_name(func) != "expand":
            return None
        frame = sys._getframe(2)
        while frame is not None and not frame.f_code.co_filename.startswith(parts.transformers_dir()):
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None or frame.f_code.co_name != "expand_kv":
            return None
        return parts.SCORES if "k_rot.expand" in linecache.getline(frame.f_code.co_filename, frame.f_lineno) else None

    def _repeat_kv_part(self) -> str | None:
        """repeat_kv (GQA): its ops have no forward cost (views, a copy), but its backward sums the gradients
        of the repeated heads; the keys' expansion belongs to ``scores``, the values' to ``context`` (the
        caller's line in the attention function names which)."""
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_name != "repeat_kv":
            frame = frame.f_back  # type: ignore[assignment]
            if frame is not None and frame.f_code.co_filename.startswith(parts.transformers_dir()) \
                    and frame.f_code.co_name != "repeat_kv":
                return None
        if frame is None or frame.f_back is None:
            return None
        caller = frame.f_back
        line = linecache.getline(caller.f_code.co_filename, caller.f_lineno)
        return parts.CONTEXT if re.search(r"repeat_kv\(\s*value", line) else parts.SCORES


class _Tagger(TorchFunctionMode):
    """Tags the autograd nodes each torch function creates with the site of the ops it dispatched."""

    def __init__(self, recorder: _SiteRecorder, modules: _ModuleStack,
                 saves: list[tuple[Site, Any]] | None = None) -> None:
        super().__init__()
        self.recorder = recorder
        self.modules = modules
        self.saves = saves  # (site, what measure_saved packed), in order, or None
        self.pending: list[Any] = []  # what the torch function running now saved

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.recorder.sites = []
        out = func(*args, **(kwargs or {}))
        sites = self.recorder.sites
        computing = [site for site, computes in sites if computes]
        if computing:
            site, computes = computing[0], True
        elif sites:
            site, computes = sites[0][0], False
        else:
            site, computes = ((LOSS, None) if self.recorder.loss else (self.modules.current, None)), False
        for tensor in _tensors(out):
            _tag(tensor.grad_fn, site, computes)
        if self.saves is not None:
            self.saves.extend((site, item) for item in self.pending)
        self.pending = []
        return out


def _tensors(out: Any) -> Iterator[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for item in out:
            yield from _tensors(item)
    elif hasattr(out, "values") and callable(out.values):  # a ModelOutput
        with_values: Any = out
        yield from _tensors(list(with_values.values()))


def _tag(node: Any, site: Site, computes: bool) -> None:
    """Tag ``node`` and its untagged ancestors (the nodes the same call created)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n is None or _SITE in n.metadata or type(n).__name__ == "AccumulateGrad":
            continue
        n.metadata[_SITE] = site
        n.metadata[_COMPUTES] = computes
        stack.extend(parent for parent, _ in n.next_functions)


def _owner(node: Any, param_owner: dict[int, str]) -> Site | None:
    """The site a gradient accumulation into ``node``'s input is charged to: the node's own site when it
    computes, else (a view) the computing node behind it; a parameter's own module."""
    seen = 0
    while node is not None and seen < 64:
        seen += 1
        if type(node).__name__ == "AccumulateGrad":
            return (param_owner.get(id(node.variable), ""), None)
        meta = node.metadata
        if _SITE not in meta:
            return None
        if meta[_COMPUTES]:
            return meta[_SITE]  # type: ignore[no-any-return]
        parents = [p for p, _ in node.next_functions if p is not None]
        if not parents:
            return meta[_SITE]  # type: ignore[no-any-return]
        node = parents[0]
    return None


class _BackwardCounter(TorchDispatchMode):
    def __init__(self, measured: MeasuredBackward, param_owner: dict[int, str]) -> None:
        super().__init__()
        self.measured = measured
        self.param_owner = param_owner
        self.received: set[int] = set()  # autograd nodes (ids) that hold a gradient already
        self.finished: Any = None  # the node whose function returned: the engine now sums into receivers
        self.pending: list[Site | None] = []  # receivers of the accumulations to come, in edge order
        self.keep: list[Any] = []  # receivers kept alive so their ids stay theirs

    def post_hook(self, node: Any, grad_inputs: tuple, grad_outputs: tuple) -> None:
        self.finished = node
        self.pending = []
        for (receiver, _), grad in zip(node.next_functions, grad_inputs, strict=False):
            if receiver is None or grad is None:
                continue
            if id(receiver) in self.received:
                self.pending.append(_owner(receiver, self.param_owner))
            else:
                self.received.add(id(receiver))
                self.keep.append(receiver)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        node = torch._C._current_autograd_node()
        if node is not None and node is not self.finished:
            self.finished, self.pending = None, []
        name = aten.op_name(func)
        if self.finished is not None and name == "add" and self.pending:
            where: Site | None = self.pending.pop(0)
            self.measured.accumulations += 1
        elif node is None:
            where = None
        else:
            where = _metadata(node).get(_SITE)
        special = rules.ATEN_BACKWARD[name](args, kwargs, out) if name in rules.ATEN_BACKWARD else None
        kind = "compute" if special is not None else aten.classify(func)
        if kind == "unknown" and name in _BACKWARD_MOVES:
            kind = "move"
        if kind == "compute" and where is None and node is not None:
            self.measured.untagged[type(node).__name__] += 1
        if kind == "compute":
            counts = special if special is not None else aten.count(func, args, kwargs, out)
            key: Site = where if where is not None else ("<untagged>", None)
            self.measured.counts[key] = self.measured.counts[key] + counts
        elif kind == "unknown":
            self.measured.unknown_ops[(type(node).__name__ if node is not None else None, str(func))] += 1
        else:
            self.measured.data_ops[(kind, str(func))] += 1
        return out


@contextmanager
def _tag_function_outputs(model: torch.nn.Module) -> Iterator[None]:
    """A custom ``torch.autograd.Function`` (bloom's GeLUFunction) creates its autograd node where no torch
    function the tagger sees returns it; the module whose forward ran it tags it (a module forward hook), before
    the next torch function would tag it, as an untagged ancestor, with its own site."""
    names = {id(m): name for name, m in model.named_modules()}

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        for tensor in _tensors(output):
            node = tensor.grad_fn
            if node is not None and type(node).__name__ != "AccumulateGrad" and _SITE not in _metadata(node):
                _tag(node, (names.get(id(module), ""), None), True)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _post_hooks(loss: torch.Tensor, counter: _BackwardCounter) -> Iterator[None]:
    handles, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        handles.append(node.register_hook(lambda gi, go, n=node: counter.post_hook(n, gi, go)))
        stack.extend(p for p, _ in node.next_functions)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def measure_backward(model: torch.nn.Module, batch: int, seq: int, seed: int = 0) -> MeasuredBackward:
    """A forward of B x S tokens (no cache), the mean cross-entropy of its logits against random targets,
    and ``loss.backward()``, counted per forward site (see the module docstring)."""
    device = next(model.parameters()).device
    config: Any = model.config
    vocab = config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(seed)
    if device.type == "meta":
        ids = torch.zeros(batch, seq, dtype=torch.long, device=device)
        targets = torch.zeros(batch * seq, dtype=torch.long, device=device)
    else:
        ids = torch.randint(0, vocab, (batch, seq), generator=generator)
        targets = torch.randint(0, vocab, (batch * seq,), generator=generator)
    forward = Measured(params=module_params(model))
    measured = MeasuredBackward(forward=forward)
    model.zero_grad(set_to_none=True)
    # DBRX's and JetMoE's experts read the routing's values: on meta, the forward validation's fixed routing
    # (validation/meta_routing.py), entered outside the counting modes
    routing = (fixed_routing() if device.type == "meta" and getattr(config, "model_type", None) in ROUTING_READERS
               else contextlib.nullcontext())
    with torch.enable_grad(), routing:
        stack = _ModuleStack(model)
        recorder = _SiteRecorder(stack, forward)
        with stack, recorder, _Tagger(recorder, stack), _tag_function_outputs(model):
            # use_cache=True, as the forward validation runs it (no cache given: transformers skips its packed-
            # sequence check, an .item() the meta device cannot run); the cache copies are no arithmetic
            logits = model(input_ids=ids, use_cache=True).logits
            recorder.loss = True
            loss = torch.nn.functional.cross_entropy(logits.reshape(batch * seq, -1), targets)
        param_owner: dict[int, str] = {}
        for name, module in model.named_modules():
            for p in module.parameters(recurse=False):
                param_owner.setdefault(id(p), name)
        counter = _BackwardCounter(measured, param_owner)
        with _post_hooks(loss, counter), counter:
            loss.backward()
    return measured


COMPARED: tuple[str, ...] = (*M.ARITHMETIC, M.MACS, M.ACT)


def compare_backward(profile: ModelProfile, measured: MeasuredBackward, batch: int,
                     seq: int) -> list[ValidationRow]:
    """Rows (node x metric): ``training.backward.backward_counts`` against the measured backward."""
    predicted = rules.backward_counts(profile)
    resolve = NodeResolver(profile.nodes)
    got: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    module_of = {**resolve.module_of, LOSS: ""}
    for (module, part), counts in measured.counts.items():
        path = LOSS if module == LOSS else resolve.node(module, part)
        module_of.setdefault(path, module)
        for metric in COMPARED:
            got[path][metric] += int(counts.get(metric, 0))
    env = {"B": batch, "S": seq, "P": 0}
    rows = []
    for path in [*predicted, *sorted(p for p in got if p not in predicted)]:
        want: dict[str, Any] = dict(predicted.get(path, {}))
        have = got.get(path, {})
        for metric in COMPARED:
            p = int(Formula.of(want.get(metric, 0)).evaluate(env))
            m = int(have.get(metric, 0))
            if p or m:
                rows.append(ValidationRow(node=path, module=module_of[path], metric=metric, predicted=p, measured=m))
    return rows


class BackwardReport(BaseModel):
    """Predicted against measured backward counts, per node (``loss`` is the cross-entropy)."""

    model: str
    model_type: str
    batch: int
    seq: int
    tiny: bool
    rows: list[ValidationRow]
    unknown_ops: list[str]
    untagged: list[str]

    @property
    def mismatches(self) -> list[ValidationRow]:
        return [r for r in self.rows if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unknown_ops and not self.untagged

    def summary_line(self) -> str:
        nodes = {r.node for r in self.rows}
        state = "EXACT" if self.ok else f"{len(self.mismatches)} MISMATCHES"
        return (f"backward {self.model} ({self.model_type}) B={self.batch} S={self.seq}: {state} over "
                f"{len(self.rows)} rows, {len(nodes)} nodes")


def validate_backward(config: Any, batch: int = 1, seq: int = 8, *, tiny: bool = True,
                      as_family: str | None = None, seed: int = 0) -> BackwardReport:
    """Run forward + cross-entropy + ``loss.backward()`` on the reference model (``tiny``: real random
    weights on the CPU; else full size on the meta device) and compare every node's backward counts.
    ``seed``: the random token ids and targets (the routing of experts that loop over the ones hit)."""
    from .reference import reference

    ref = reference(config, tiny=tiny, as_family=as_family)
    model = ref.build()
    measured = measure_backward(model, batch, seq, seed)
    rows = compare_backward(ref.profile, measured, batch, seq)
    return BackwardReport(
        model=ref.name, model_type=ref.profile.spec.model_type, batch=batch, seq=seq, tiny=tiny, rows=rows,
        unknown_ops=[f"{node}: {op} ({n} calls)" for (node, op), n in sorted(measured.unknown_ops.items(),
                                                                            key=str)],
        untagged=[f"{node} ({n} ops)" for node, n in sorted(measured.untagged.items())],
    )


def measure_saved(model: torch.nn.Module, batch: int, seq: int, seed: int = 0, *,
                  in_bytes: bool = False) -> dict[Site, int]:
    """Elements (``in_bytes``: bytes, ``storage.nbytes()``, so a float32 intermediate of a bf16 model counts 4
    bytes an element) of the tensors autograd saves for backward during a training forward and its loss, per
    forward site (``saved_tensors_hooks``): each storage once (a tensor saved by two ops, or a view of a
    saved tensor, counts once, at the site that saved it first), parameters excluded (they are weights, not
    activations). Sizes are the storage's, so a saved view of a larger tensor counts the tensor. The loss is
    transformers' ``ForCausalLMLoss`` as a training run computes it: the logits upcast to float32 (a no-op on a
    float32 model), then the cross-entropy."""
    generator = torch.Generator().manual_seed(seed)
    config: Any = model.config
    vocab = config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (batch, seq), generator=generator)
    targets = torch.randint(0, vocab, (batch * seq,), generator=generator)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    packed: list[tuple[Site, Any]] = []
    forward = Measured(params=module_params(model))
    stack = _ModuleStack(model)
    recorder = _SiteRecorder(stack, forward)
    tagger = _Tagger(recorder, stack, packed)

    def pack(t: torch.Tensor) -> _Held:
        held = _Held(t)
        tagger.pending.append((weakref.ref(held), t))
        return held

    with torch.enable_grad(), stack, recorder, tagger, \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda held: held.tensor):
        logits = model(input_ids=ids, use_cache=False).logits
        recorder.loss = True
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(batch * seq, -1), targets)
    # only what the graph behind the loss still holds: a branch whose output was dropped in the forward (a
    # router's group top-k, its masked choice scores) freed its saved tensors with its nodes
    seen: set[int] = set()
    out: dict[Site, int] = defaultdict(int)
    for site, (ref, tensor) in packed:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if ref() is None or key in params or key in seen:
            continue
        seen.add(key)
        out[site] += storage.nbytes() if in_bytes else storage.nbytes() // tensor.element_size()
    del loss
    return dict(out)


class _Held:
    """A saved tensor as autograd holds it (``saved_tensors_hooks``' pack): alive while its node is."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def compare_saved(config: Any, batch: int, seq: int, *, as_family: str | None = None,
                  experts: str = "batched_mm") -> list[ValidationRow]:
    """Rows (node, ``saved``): ``training.activations.saved_by_node`` against ``measure_saved`` on the tiny
    reference model (real weights on the CPU: storages are told apart by their addresses), its MoE experts
    run by ``experts`` (batched_mm or grouped_mm) and predicted by that kernel's rule."""
    from ..training.activations import saved_by_node
    from .reference import reference

    ref = reference(config, tiny=True, as_family=as_family)
    measured = measure_saved(ref.build(experts=experts), batch, seq)
    resolve = NodeResolver(ref.profile.nodes)
    got: dict[str, int] = defaultdict(int)
    for (module, part), elements in measured.items():
        got[LOSS if module == LOSS else resolve.node(module, part)] += elements
    predicted = saved_by_node(ref.profile, experts=experts)
    env = {"B": batch, "S": seq, "P": 0}
    rows = []
    for path in [*predicted, *sorted(p for p in got if p not in predicted)]:
        p = int(predicted[path].evaluate(env)) if path in predicted else 0
        m = got.get(path, 0)
        if p or m:
            rows.append(ValidationRow(node=path, module=resolve.module_of.get(path, path), metric="saved",
                                      predicted=p, measured=m))
    return rows


def _metadata(node: Any) -> dict[str, Any]:
    """An autograd node's metadata dict (a property at run time; the stubs call it a method)."""
    meta: dict[str, Any] = node.metadata
    return meta
