"""Per-rank measurement of transformers' own tensor parallelism (``tp_plan="auto"``) on the CPU.

``measure_tensor_parallel(config, world_size, batch, seq, past)`` starts ``world_size`` processes
(``torch.multiprocessing``, fork or spawn; ``torch.distributed`` with the gloo backend on 127.0.0.1 and a free port: no
torchrun, nothing leaves the machine). Each rank loads the same tiny real-weight model with
``DistributedConfig(tp_plan="auto", tp_size=world_size)`` (the config class's ``base_model_tp_plan`` and the
causal LM's ``_tp_plan``), eager attention and ``batched_mm`` experts, runs an uncounted prefill of ``past``
tokens, then counts the forward of ``seq`` new tokens exactly as ``validate`` does (``measure.measure``: the
same aten counting and node attribution, ``aten.py`` / ``parts.py``), and records every collective the forward
issues (a ``TorchDispatchMode`` sees the c10d ops ``dist.all_reduce`` dispatches, ``c10d.allreduce_``, and the
functional collectives DTensor's redistribute uses, ``_c10d_functional.all_gather_into_tensor``; each is
charged to the innermost module running). Parameters are counted per rank from the local shards.

The result, ``TensorParallelMeasurement``, is per rank: node path -> metric -> count (the paths of the
single-device graph, ``model.layers.0.self_attn.q_proj``, ``model.layers.0.self_attn:scores``, ...), the rank's
own parameters, the KV cache per layer, and the collectives in issue order (kind, world, dtype, payload bytes,
module). The same forward on one process (the unsharded reference, ``single``) comes with it, so a plan's
prediction can be compared node by node with each rank and the ranks with the single run.

Payload bytes follow the NCCL-tests "size" convention: the reduced buffer for an all-reduce, the gathered
output for an all-gather, the full input for a reduce-scatter / all-to-all, the buffer for broadcast / send /
recv (``input_bytes`` and ``output_bytes`` are kept as well).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import ArgumentError, ValidationBuildError
from ..profile import check_shape
from .compare import COMPARED, NodeResolver, measured_by_node

Shape = tuple[int, int, int]  # (batch, seq, past)

# op name (aten namespace.name, overload dropped) -> collective kind
COLLECTIVE_OPS: dict[str, str] = {
    "c10d.allreduce_": "all_reduce",
    "c10d.allreduce_coalesced_": "all_reduce",
    "c10d.allgather_": "all_gather",
    "c10d._allgather_base_": "all_gather",
    "c10d.allgather_into_tensor_coalesced_": "all_gather",
    "c10d.reduce_scatter_": "reduce_scatter",
    "c10d._reduce_scatter_base_": "reduce_scatter",
    "c10d.reduce_scatter_tensor_coalesced_": "reduce_scatter",
    "c10d.alltoall_": "all_to_all",
    "c10d.alltoall_base_": "all_to_all",
    "c10d.broadcast_": "broadcast",
    "c10d.send": "send",
    "c10d.recv_": "recv",
    "c10d.recv_any_source_": "recv",
    "c10d.reduce_": "reduce",
    "c10d.gather_": "gather",
    "c10d.scatter_": "scatter",
    "_c10d_functional.all_reduce": "all_reduce",
    "_c10d_functional.all_reduce_": "all_reduce",
    "_c10d_functional.all_reduce_coalesced": "all_reduce",
    "_c10d_functional.all_gather_into_tensor": "all_gather",
    "_c10d_functional.all_gather_into_tensor_coalesced": "all_gather",
    "_c10d_functional.reduce_scatter_tensor": "reduce_scatter",
    "_c10d_functional.reduce_scatter_tensor_coalesced": "reduce_scatter",
    "_c10d_functional.all_to_all_single": "all_to_all",
    "_c10d_functional.broadcast": "broadcast",
    "_c10d_functional.broadcast_": "broadcast",
}
# bookkeeping ops of the collective namespaces: no data moves between ranks
COLLECTIVE_BOOKKEEPING = frozenset({"_c10d_functional.wait_tensor", "_c10d_functional._wrap_tensor_autograd",
                                    "c10d.barrier", "c10d.monitored_barrier_"})
# the payload is the output for these kinds, the input otherwise (NCCL-tests "size")
_OUTPUT_SIZED = frozenset({"all_gather", "gather", "recv"})


class Collective(BaseModel):
    """One collective call of one rank, in the order the forward issued it."""

    model_config = ConfigDict(frozen=True)

    kind: str  # all_reduce, all_gather, reduce_scatter, all_to_all, broadcast, send, recv, ...
    op: str  # the dispatched op: c10d.allreduce_ (dist.all_reduce), _c10d_functional.all_gather_into_tensor, ...
    module: str  # the innermost module running when it was issued ("" is the root model)
    world: int  # ranks in its process group
    dtype: str  # torch dtype of the payload, e.g. "float32"
    elements: int  # payload elements
    payload_bytes: int  # NCCL-tests size: the all-reduce buffer, the all-gather output, the reduce-scatter input
    input_bytes: int
    output_bytes: int


class RankMeasurement(BaseModel):
    """What one rank did in the counted forward."""

    model_config = ConfigDict(frozen=True)

    rank: int
    nodes: dict[str, dict[str, int]]  # node path -> metric -> count (params: this rank's own shards)
    params: int  # this rank's parameter elements (local shards; a tied weight once)
    collectives: list[Collective]
    cache_by_layer: dict[int, int]  # KV cache elements this rank holds per layer after the forward
    unknown_ops: list[str]  # aten ops neither counted nor a collective: should be empty
    unattributed_ops: list[str]  # computing ops no node holds: should be empty

    def value(self, node: str, metric: str) -> int:
        return self.nodes.get(node, {}).get(metric, 0)

    def total(self, metric: str) -> int:
        return sum(metrics.get(metric, 0) for metrics in self.nodes.values())

    def collective_bytes(self, kind: str | None = None) -> int:
        return sum(c.payload_bytes for c in self.collectives if kind is None or c.kind == kind)


class TensorParallelMeasurement(BaseModel):
    """Per-rank counts and collectives of one forward under transformers' tensor parallelism."""

    model_config = ConfigDict(frozen=True)

    model: str
    model_type: str
    world_size: int
    batch: int
    seq: int
    past: int
    tiny: bool
    transformers_version: str
    torch_version: str
    tp_plan: dict[str, str]  # what transformers applied: parameter or module path -> style (layer numbers kept)
    ranks: list[RankMeasurement]
    single: dict[str, dict[str, int]]  # the same forward on one process, unsharded: node path -> metric -> count
    single_params: int
    max_logit_diff: float  # max |logits(rank r) - logits(one process)| over the ranks, same tokens and weights

    def rank(self, r: int) -> RankMeasurement:
        return self.ranks[r]

    def per_rank(self, node: str, metric: str) -> list[int]:
        """The value of one node's metric on each rank."""
        return [r.value(node, metric) for r in self.ranks]

    def summed(self, node: str, metric: str) -> int:
        """One node's metric summed over the ranks."""
        return sum(self.per_rank(node, metric))

    def node_paths(self) -> list[str]:
        """Every node path measured on some rank or on the single process, single-run order first."""
        seen = dict.fromkeys(self.single)
        for r in self.ranks:
            seen.update(dict.fromkeys(r.nodes))
        return list(seen)

    def diff(self, rank: int, predicted: Mapping[str, Mapping[str, int]],
             metrics: Sequence[str] = COMPARED) -> list[tuple[str, str, int, int]]:
        """(node, metric, predicted, measured) for every node and metric where a per-rank prediction (node path
        -> metric -> count, e.g. a parallel plan's for this rank) and this rank's measurement differ; a node
        either side lacks counts as zeros. ``rank=-1`` compares with the single-process run."""
        got = self.single if rank == -1 else self.ranks[rank].nodes
        out = []
        for node in dict.fromkeys([*predicted, *got]):
            for metric in metrics:
                want, have = int(predicted.get(node, {}).get(metric, 0)), int(got.get(node, {}).get(metric, 0))
                if want != have:
                    out.append((node, metric, want, have))
        return out

    def collective_rows(self, rank: int = 0) -> list[tuple[str, str, int]]:
        """(kind, module, payload bytes) of each collective of a rank, in issue order: what a plan predicts."""
        return [(c.kind, c.module, c.payload_bytes) for c in self.ranks[rank].collectives]

    def table(self, metrics: Sequence[str] = ("macs", "params", "act"), nodes: Sequence[str] | None = None) -> str:
        """A markdown table: per node, the single-process value and each rank's, for ``metrics``."""
        head = ["node", "metric", "1 process", *(f"rank {r.rank}" for r in self.ranks)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for node in nodes or self.node_paths():
            for metric in metrics:
                single = self.single.get(node, {}).get(metric, 0)
                ranks = self.per_rank(node, metric)
                if single or any(ranks):
                    cells = [f"`{node}`", metric, f"{single:,}", *(f"{v:,}" for v in ranks)]
                    lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- measuring side


def _op_key(func: Any) -> str:
    return f"{func.namespace}.{func.overloadpacket.__name__}"


def _tensors(x: Any) -> list[Any]:
    import torch

    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _tensors(item)]
    return []


def _bytes(tensors: list[Any]) -> int:
    return sum(int(t.numel()) * t.element_size() for t in tensors)


def _group_size(key: str, args: tuple, kwargs: dict) -> int:
    """Ranks of the collective's process group: the functional ops name it, the c10d ops pass the group."""
    import torch.distributed as dist

    names = [a for a in (*args, *kwargs.values()) if isinstance(a, str)]
    if key.startswith("_c10d_functional.") and names:
        from torch.distributed.distributed_c10d import _resolve_process_group

        group: Any = names[-1]  # a GroupName (a str) for the functional ops
        return int(_resolve_process_group(group).size())
    for a in args:
        size = getattr(a, "size", None)
        if callable(size) and not hasattr(a, "shape"):
            with contextlib.suppress(Exception):
                return int(size())
    return int(dist.get_world_size())


def _input_output(kind: str, key: str, args: tuple, out: Any) -> tuple[list[Any], list[Any]]:
    """The tensors sent and received, for the op's argument order."""
    if key in ("c10d._allgather_base_", "c10d._reduce_scatter_base_", "c10d.alltoall_base_"):
        return _tensors(args[1]), _tensors(args[0])  # (output, input, ...)
    if key in ("c10d.allgather_", "c10d.reduce_scatter_", "c10d.alltoall_"):
        return _tensors(args[1]), _tensors(args[0])  # (output lists, input(s), ...)
    if key.startswith("c10d."):  # in place: allreduce_, broadcast_, send, recv_, reduce_
        return _tensors(args[0]), _tensors(args[0])
    return _tensors(args[0]), _tensors(out)  # functional: input first, a new output


class _CollectiveRecorder:
    """Records every collective op, with the module running it and the root forward it belongs to."""

    def __init__(self, model: Any) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        from .measure import _ModuleStack

        recorder = self
        self.records: list[tuple[int, Collective]] = []  # (root forward index, collective)
        self.forwards = 0
        self.modules = _ModuleStack(model)
        self._model = model

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                key = _op_key(func)
                if key in COLLECTIVE_OPS:
                    recorder.add(key, args, kwargs, out)
                elif func.namespace in ("c10d", "_c10d_functional") and key not in COLLECTIVE_BOOKKEEPING:
                    raise ValidationBuildError(f"tensor-parallel measurement: collective op {key} is not known to "
                                               "llm_profiler.validation.tensor_parallel.COLLECTIVE_OPS")
                return out

        self.mode = Mode()

    def add(self, key: str, args: tuple, kwargs: dict, out: Any) -> None:
        kind = COLLECTIVE_OPS[key]
        sent, received = _input_output(kind, key, args, out)
        payload = received if kind in _OUTPUT_SIZED else sent
        dtype = str(payload[0].dtype).removeprefix("torch.") if payload else ""
        self.records.append((self.forwards, Collective(
            kind=kind, op=key, module=self.modules.current, world=_group_size(key, args, kwargs), dtype=dtype,
            elements=sum(int(t.numel()) for t in payload), payload_bytes=_bytes(payload),
            input_bytes=_bytes(sent), output_bytes=_bytes(received))))

    @contextlib.contextmanager
    def recording(self) -> Iterator[_CollectiveRecorder]:
        def count_forward(module: Any, args: Any) -> None:
            self.forwards += 1

        handle = self._model.register_forward_pre_hook(count_forward)
        try:
            with self.modules, self.mode:
                yield self
        finally:
            handle.remove()

    def last_forward(self) -> list[Collective]:
        """The collectives of the last root forward (the counted one; the prefill before it is not counted)."""
        return [c for index, c in self.records if index == self.forwards]


def local_params(model: Any) -> dict[str, dict[str, int]]:
    """module -> its own parameter -> elements on this rank (a DTensor's local shard; tied ones once)."""
    seen: set[int] = set()
    out: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        own: dict[str, int] = {}
        for param_name, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                local = p.to_local() if hasattr(p, "to_local") else p
                own[param_name] = int(local.numel())
        if own:
            out[name] = own
    return out


def _is_collective_key(op: str) -> bool:
    return op.startswith(("c10d.", "_c10d_functional."))


@dataclass(frozen=True)
class _Job:
    """One model for the ranks: its config, the shapes to count, the seed of its weights."""

    key: str
    hf_config: dict[str, Any]
    shapes: tuple[Shape, ...]
    seed: int
    check_ids: Any  # the token ids of the uncounted logits check (a tensor)


def _rank_main(rank: int, world: int, port: int, jobs: list[_Job], out_dir: str) -> None:
    """One rank: join the gloo group, load each model with tp_plan="auto", count each shape."""
    import torch
    import torch.distributed as dist
    import transformers

    from .measure import build_model, measure

    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=300))
    transformers.logging.set_verbosity_error()
    results: dict[str, Any] = {}
    try:
        for job in jobs:
            model = _distributed(build_model(job.hf_config, device="cpu", seed=job.seed), world)
            tp_plan, _, _ = model._resolve_parallel_plans(model.config.distributed_config)
            params = local_params(model)
            with torch.no_grad():
                logits = model(input_ids=job.check_ids, use_cache=False).logits
            runs = {}
            for batch, seq, past in job.shapes:
                torch.manual_seed(job.seed)  # the same tokens on every rank and in the single run
                recorder = _CollectiveRecorder(model)
                with recorder.recording():
                    measured = measure(model, batch, seq, past)
                runs[(batch, seq, past)] = {
                    "counts": {site: dict(c) for site, c in measured.counts.items()},
                    "params": params,
                    "cache_by_layer": dict(measured.cache_by_layer),
                    "unknown_ops": {k: n for k, n in measured.unknown_ops.items() if not _is_collective_key(k[1])},
                    "unnamed": {m: dict(c) for m, c in measured.unnamed.items()},
                    "collectives": [c.model_dump() for c in recorder.last_forward()],
                }
            results[job.key] = {"tp_plan": dict(tp_plan), "logits": logits.detach().clone(), "runs": runs}
            del model
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(results, f)
    finally:
        dist.destroy_process_group()


def _distributed(model: Any, world: int) -> Any:
    """``model`` under transformers' tensor parallelism: the steps ``from_pretrained(...,
    distributed_config=DistributedConfig(tp_plan="auto"))`` takes before it loads weights
    (``prepare_distribute_model``: the device mesh; ``maybe_distribute_model``: the resolved plan applied,
    parameters sharded, forwards wrapped). Every rank built the same weights (same seed), and
    ``distribute_tensor(..., src_data_rank=None)`` keeps each rank's slice of them: no checkpoint to read, and
    no ``accelerate`` (which ``from_pretrained`` asks for with a device map and is not in the validate extra)."""
    import torch
    from transformers.distributed import DistributedConfig

    # from_pretrained shards a freshly built model, whose tied weights are tied only after loading: untie them
    # the same way here (a copy per owner), shard both, and tie them again as from_pretrained does
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    params = dict(model.named_parameters(remove_duplicate=False))
    for target in tied:
        module_name, _, name = target.rpartition(".")
        module = model.get_submodule(module_name)
        module._parameters[name] = torch.nn.Parameter(params[target].detach().clone())
    config, _, mesh_manager = type(model).prepare_distribute_model(DistributedConfig(tp_plan="auto", tp_size=world))
    model = type(model).maybe_distribute_model(model, config, mesh_manager)
    if tied:
        model.tie_weights()
    return model.eval()


def _run_ranks(mp: Any, world: int, jobs: list[_Job], out_dir: str, start_method: str | None,
               timeout_s: float) -> None:
    """Start the ranks and wait for them; a run past ``timeout_s`` is stopped (its processes terminated)."""
    import multiprocessing

    method = start_method or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    context = mp.start_processes(_rank_main, args=(world, _free_port(), jobs, out_dir), nprocs=world,
                                 join=False, start_method=method)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            raise ValidationBuildError(f"the tensor-parallel run on {world} gloo ranks did not finish within "
                                       f"{timeout_s:g} s (timeout_s); its processes were stopped")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- public side


def _check_world(world_size: Any, hf_config: dict[str, Any], name: str) -> int:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ArgumentError(f"world_size must be an integer >= 2 (the ranks to start), got {world_size!r}")
    heads = hf_config.get("num_attention_heads") or 0
    kv = hf_config.get("num_key_value_heads") or heads
    for field, value in (("num_attention_heads", heads), ("num_key_value_heads", kv)):
        if value % world_size:
            raise ArgumentError(f"world_size {world_size} must divide {field} ({value}) of {name}'s "
                                "measured config: transformers' tensor parallelism splits the heads evenly")
    return world_size


def measure_tensor_parallel_runs(configs: Sequence[Any], world_size: int, shapes: Sequence[Shape], *,
                                 tiny: bool = True, overrides: dict[str, Any] | None = None, seed: int = 0,
                                 start_method: str | None = None,
                                 timeout_s: float = 600) -> dict[tuple[str, Shape], TensorParallelMeasurement]:
    """Several configs and shapes in ONE start of ``world_size`` ranks (the process start dominates a tiny
    run). Returns (config name, (batch, seq, past)) -> measurement. ``overrides`` are config fields set on
    every config's tiny variant (e.g. ``{"num_key_value_heads": 4}`` to make 4 ranks divide the KV heads).
    ``start_method``: how the ranks start, "fork" (the default where the platform has it: the ranks inherit
    the imported torch and transformers, several times faster to start) or "spawn" (fresh interpreters)."""
    if not tiny:
        raise ArgumentError("measure_tensor_parallel runs real weights on the CPU: tiny must be True "
                            "(a full-size model would not fit the ranks' memory)")
    if start_method not in (None, "fork", "spawn"):
        raise ArgumentError(f"start_method must be 'fork', 'spawn' or None (fork where the platform has it), "
                            f"got {start_method!r}")
    checked = [check_shape(*shape) for shape in shapes]
    if not checked:
        raise ArgumentError("shapes must name at least one (batch, seq, past)")
    try:
        import torch
        import torch.multiprocessing as mp
        import transformers
    except ImportError as err:
        from ..errors import ValidationUnavailableError

        raise ValidationUnavailableError(f"tensor-parallel validation needs torch and transformers "
                                         f"({err.name} is missing): pip install 'llm-profiler[validate]'") from None
    from .measure import measure
    from .reference import reference

    refs = []
    for config in configs:
        ref = reference(config, tiny=True)
        name = config if isinstance(config, str) else ref.name  # the key: as the caller named it
        if overrides:
            ref = reference({**ref.data, **overrides}, tiny=False)  # the tiny variant, with the fields changed
        ref = replace(ref, name=name, tiny=True)
        _check_world(world_size, ref.hf_config, ref.name)
        refs.append(ref)
    if len({r.name for r in refs}) != len(refs):
        raise ArgumentError("configs must have distinct names")

    out: dict[tuple[str, Shape], TensorParallelMeasurement] = {}
    with tempfile.TemporaryDirectory(prefix="llm_profiler_tp_") as tmp:
        jobs, singles = [], {}
        generator = torch.Generator().manual_seed(seed)
        for ref in refs:
            model = ref.build(device="cpu", seed=seed)
            check_ids = torch.randint(0, ref.hf_config["vocab_size"], (1, 5), generator=generator)
            with torch.no_grad():
                single_logits = model(input_ids=check_ids, use_cache=False).logits
            single_runs = {}
            for shape in checked:
                torch.manual_seed(seed)
                measured = measure(model, *shape)
                single_runs[shape] = measured_by_node(ref.profile, measured)[0]
            singles[ref.name] = (single_logits, single_runs, sum(p.numel() for p in model.parameters()))
            jobs.append(_Job(ref.name, ref.hf_config, tuple(checked), seed, check_ids))
        env = {"GLOO_SOCKET_IFNAME": "lo"} if os.path.exists("/sys/class/net/lo") else {}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            _run_ranks(mp, world_size, jobs, tmp, start_method, timeout_s)
        except ValidationBuildError:
            raise
        except Exception as err:  # a rank failed: the last line of its traceback says why
            text = str(err).strip()
            raise ValidationBuildError(f"the tensor-parallel run on {world_size} gloo ranks failed: "
                                       f"{text.splitlines()[-1] if text else repr(err)}") from err
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        per_rank = []
        for rank in range(world_size):
            with open(os.path.join(tmp, f"rank{rank}.pkl"), "rb") as f:
                per_rank.append(pickle.load(f))

    for ref in refs:
        single_logits, single_runs, single_params = singles[ref.name]
        diff = max(float((r[ref.name]["logits"] - single_logits).abs().max()) for r in per_rank)
        for shape in checked:
            ranks = [_rank_result(rank, r[ref.name]["runs"][shape], ref.profile)
                     for rank, r in enumerate(per_rank)]
            out[(ref.name, shape)] = TensorParallelMeasurement(
                model=ref.name, model_type=ref.profile.spec.model_type, world_size=world_size, batch=shape[0],
                seq=shape[1], past=shape[2], tiny=True, transformers_version=transformers.__version__,
                torch_version=torch.__version__, tp_plan=per_rank[0][ref.name]["tp_plan"], ranks=ranks,
                single={k: dict(v) for k, v in single_runs[shape].items()}, single_params=int(single_params),
                max_logit_diff=diff)
    return out


def _rank_result(rank: int, run: dict[str, Any], profile: Any) -> RankMeasurement:
    measured = _Measured(counts=run["counts"], params=run["params"])
    got, _ = measured_by_node(profile, measured)
    resolve = NodeResolver(profile.nodes)
    unattributed = [f"{m or '(root)'}: {site} ({n} calls)" for m, sites in sorted(run["unnamed"].items())
                    if not resolve.is_node(resolve.node(m, None)) for site, n in sorted(sites.items())]
    return RankMeasurement(
        rank=rank, nodes={k: dict(v) for k, v in got.items()},
        params=sum(n for own in run["params"].values() for n in own.values()),
        collectives=[Collective(**c) for c in run["collectives"]],
        cache_by_layer=run["cache_by_layer"],
        unknown_ops=[f"{m or '(root)'}: {op} ({n} calls)" for (m, op), n in sorted(run["unknown_ops"].items())],
        unattributed_ops=unattributed)


@dataclass
class _Measured:
    """The part of ``measure.Measured`` that ``compare.measured_by_node`` reads."""

    counts: dict[tuple[str, str | None], dict[str, int]]
    params: dict[str, dict[str, int]]


def measure_tensor_parallel(config: Any, world_size: int, batch: int = 1, seq: int = 8, past: int = 0, *,
                            tiny: bool = True, overrides: dict[str, Any] | None = None, seed: int = 0,
                            start_method: str | None = None, timeout_s: float = 600) -> TensorParallelMeasurement:
    """Run transformers' tensor parallelism (``tp_plan="auto"``) of ``config``'s tiny variant on
    ``world_size`` gloo ranks on this machine and measure each rank's counted forward of ``seq`` new tokens
    after ``past`` cached ones (``past=0``: a prefill; ``seq=1``: a decode step)."""
    runs = measure_tensor_parallel_runs([config], world_size, [(batch, seq, past)], tiny=tiny,
                                        overrides=overrides, seed=seed, start_method=start_method,
                                        timeout_s=timeout_s)
    return next(iter(runs.values()))


__all__ = ["Collective", "RankMeasurement", "TensorParallelMeasurement", "local_params", "measure_tensor_parallel",
           "measure_tensor_parallel_runs"]

