"""Time of a collective on a system's links, and the pipeline bubble.

A group of ``n`` ranks that fits in one node (its span of consecutive ranks <= the system's devices) talks
over the intra-node link (``SystemSpec.intra_node``: NVLink / NVSwitch, Infinity Fabric, PCIe, ICI), at
``bandwidth`` bytes/s per device per direction and ``latency_s`` per hop; a group that spans nodes over the
network, each device getting ``SystemSpec.inter_node_bandwidth_per_device``.

Algorithms (NCCL's, as its cost model ``src/graph/tuning.cc`` and Thakur, Rabenseifner & Gropp 2005 state
them; ``size`` = the payload of ``collectives``, bw the per-device per-direction bandwidth, lat per hop):

- ring all-reduce (reduce-scatter then all-gather): ``2 (n-1)/n * size / bw + 2 (n-1) * lat``
- ring all-gather, reduce-scatter: ``(n-1)/n * size / bw + (n-1) * lat``
- all-to-all (pairwise exchange): ``(n-1)/n * size / bw + (n-1) * lat``
- send / recv: ``size / bw + lat``
- across nodes an all-reduce takes NCCL's double binary tree: ``2 * size / bw + 2 * ceil(log2 n) * lat``
  (every byte goes up and down a tree of depth log2 n at the network's per-device bandwidth).

Pipeline (GPipe, Huang et al. 2019; 1F1B, Narayanan et al. 2019 / PipeDream): ``m`` micro-batches through
``pp`` stages take ``(m + pp - 1)`` stage-times; the bubble is ``(pp - 1) / (m + pp - 1)`` of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import QueryError
from ..hardware.systems import SystemSpec
from .collectives import ALL_GATHER, ALL_REDUCE, ALL_TO_ALL, REDUCE_SCATTER, SEND_RECV


@dataclass(frozen=True)
class Path:
    """The link a group uses: bandwidth (bytes/s per device per direction), latency per hop, its name."""

    name: str
    bandwidth: float
    latency_s: float
    inter_node: bool


def link_for(system: SystemSpec, span: int) -> Path:
    """The intra-node link when ``span`` consecutive ranks fit one node, else the network."""
    if span <= system.device_count:
        link = system.intra_node
        return Path(link.kind, link.bandwidth, link.latency_s or 0.0, False)
    net = system.inter_node
    if net is None:
        raise QueryError(f"the plan spans {span} devices but system {system.name!r} has {system.device_count} per node "
                         "and no inter-node network: describe one in a system file (inter_node) or use fewer devices")
    per_device = system.inter_node_bandwidth_per_device
    assert per_device is not None
    return Path(net.kind, per_device, net.latency_s or 0.0, True)


def ring_all_reduce_s(size: float, n: int, bandwidth: float, latency_s: float) -> float:
    return 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * latency_s


def ring_gather_s(size: float, n: int, bandwidth: float, latency_s: float) -> float:
    """All-gather or reduce-scatter of a ``size``-byte buffer (also the all-to-all's pairwise exchange)."""
    return (n - 1) / n * size / bandwidth + (n - 1) * latency_s


def tree_all_reduce_s(size: float, n: int, bandwidth: float, latency_s: float) -> float:
    return 2 * size / bandwidth + 2 * math.ceil(math.log2(n)) * latency_s


def collective_s(kind: str, size: float, n: int, path: Path) -> float:
    """Seconds one collective of ``kind`` on ``size`` bytes among ``n`` ranks takes over ``path``."""
    if n <= 1 or size <= 0:
        return 0.0
    bw, lat = path.bandwidth, path.latency_s
    if kind == ALL_REDUCE:
        return tree_all_reduce_s(size, n, bw, lat) if path.inter_node else ring_all_reduce_s(size, n, bw, lat)
    if kind in (ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL):
        return ring_gather_s(size, n, bw, lat)
    if kind == SEND_RECV:
        return size / bw + lat
    raise QueryError(f"unknown collective {kind!r}")


def bubble_fraction(pp: int, micro_batches: int) -> float:
    """Idle share of a pipeline of ``pp`` stages over ``micro_batches``: (pp - 1) / (m + pp - 1)."""
    return (pp - 1) / (micro_batches + pp - 1)


def system_for(device: object, devices: int) -> SystemSpec:
    """One node of ``devices`` copies of ``device``, joined by its own interconnect (for --device without
    --system); a device without one cannot be joined."""
    from ..hardware import get_device

    dev = get_device(device)  # type: ignore[arg-type]
    if dev.interconnect is None:
        raise QueryError(f"device {dev.name!r} has no interconnect in the table: give --system NAME|FILE to say how "
                         f"its {devices} devices are joined")
    return SystemSpec(name=f"{devices}x {dev.name}", device=dev, device_count=max(devices, 1),
                      intra_node=dev.interconnect, source=f"{dev.name} interconnect ({dev.interconnect.kind})")


__all__ = ["Path", "bubble_fraction", "collective_s", "link_for", "ring_all_reduce_s", "ring_gather_s",
           "system_for", "tree_all_reduce_s"]
