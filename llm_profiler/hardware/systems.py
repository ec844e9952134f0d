"""Multi-device systems: a device, how many of it a node holds, the link between them and the network out.

Conventions follow ``devices.py``: bandwidths are bytes/s *per device, per direction* for the intra-node link
(``Link``) and per network link, per direction for the inter-node network (``Network``; NICs are sold in
Gb/s, divided by 8 here). Latencies are per hop for small messages, with their source or the assumption
named in ``source``. A system of ``device_count`` devices adds up their memory, bandwidth and peak FLOP/s;
it says nothing about how well a parallel plan uses them.

``get_system(name_or_path)`` takes a name from the table (``list_systems()``) or a path to a JSON / YAML file
in the ``SystemFile`` format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import QueryError
from .devices import (
    DEVICES,
    DeviceFile,
    DeviceFileError,
    DeviceSpec,
    Link,
    LinkFile,
    Positive,
    describe_errors,
    get_device,
    is_file_reference,
    read_description,
)


class Network(BaseModel):
    """The network between nodes: ``links`` ports per node, each ``link_bandwidth`` bytes/s per direction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str  # "InfiniBand NDR (ConnectX-7)", "200 GbE RoCE", ...
    links: int = Field(gt=0)  # compute-fabric ports per node (storage / management ports not counted)
    link_bandwidth: float = Field(gt=0)  # bytes/s per link, per direction
    latency_s: float | None = Field(default=None, gt=0)  # per hop
    source: str = ""

    @property
    def bandwidth(self) -> float:
        """Bytes/s per node, per direction: ``links * link_bandwidth``."""
        return self.links * self.link_bandwidth


class SystemSpec(BaseModel):
    """``device_count`` devices joined by ``intra_node``, optionally a node of a larger cluster (``inter_node``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    device: DeviceSpec
    device_count: int = Field(gt=0)
    intra_node: Link
    inter_node: Network | None = None
    notes: str = ""
    source: str = ""

    @property
    def memory_bytes(self) -> int:
        """All devices' memory together."""
        return self.device.memory_bytes * self.device_count

    @property
    def memory_bandwidth(self) -> float:
        """All devices' memory bandwidth together (bytes/s)."""
        return self.device.memory_bandwidth * self.device_count

    def peak(self, dtype: str) -> float:
        """All devices' dense peak FLOP/s at ``dtype`` together."""
        return self.device.peak(dtype) * self.device_count

    @property
    def inter_node_bandwidth_per_device(self) -> float | None:
        """Network bytes/s per direction that each device gets when all send at once (None: no network)."""
        return None if self.inter_node is None else self.inter_node.bandwidth / self.device_count


def _gbit(kind: str, links: int, gbit_s: float, source: str, latency_us: float | None) -> Network:
    return Network(kind=kind, links=links, link_bandwidth=gbit_s * 1e9 / 8,
                   latency_s=None if latency_us is None else latency_us * 1e-6, source=source)


_NCCL_NET = ("latency: NCCL cost model, src/graph/tuning.cc hwLat (ring, LL): 2.7 us per network hop, "
             "https://github.com/NVIDIA/nccl/blob/master/src/graph/tuning.cc")
_DGX_H = ("NVIDIA DGX H100 / DGX H200 datasheet ('8x single-port ConnectX-7 VPI, up to 400 Gb/s InfiniBand / "
          "Ethernet'; the 2 dual-port storage NICs not counted), https://www.nvidia.com/en-us/data-center/dgx-h200/")
_DGX_B200 = ("NVIDIA DGX B200 datasheet ('8x single-port ConnectX-7 VPI, up to 400 Gb/s InfiniBand / Ethernet'), "
             "https://www.nvidia.com/en-us/data-center/dgx-b200/")
_DGX_B300 = ("NVIDIA DGX B300 datasheet ('8x OSFP ports serving 8x single-port NVIDIA ConnectX-8 VPI, up to 800 Gb/s "
             "InfiniBand / Ethernet'), https://www.nvidia.com/en-us/data-center/dgx-b300/")
_DGX_A100 = ("NVIDIA DGX A100 datasheet ('8x single-port ConnectX-6 VPI, 200 Gb/s HDR InfiniBand'), "
             "https://www.nvidia.com/en-us/data-center/dgx-a100/")


def _device_link(device: str) -> Link:
    link = DEVICES[device].interconnect
    assert link is not None, device
    return link


_TABLE: tuple[SystemSpec, ...] = (
    # DGX H100: 8x H100 SXM (640GB), NVLink 4 through NVSwitch (900 GB/s per GPU, bidirectional);
    # 8x 400 Gb/s InfiniBand NDR, one ConnectX-7 per GPU.
    SystemSpec(
        name="dgx-h100",
        device=DEVICES["H100-SXM"],
        device_count=8,
        intra_node=_device_link("H100-SXM"),
        inter_node=_gbit("InfiniBand NDR (ConnectX-7)", 8, 400, f"{_DGX_H}; {_NCCL_NET}", 2.7),
        notes="NVSwitch gives every GPU pair the full 450 GB/s per direction",
        source=_DGX_H,
    ),
    # DGX H200: 8x H200 (1,128GB), otherwise as DGX H100.
    SystemSpec(
        name="dgx-h200",
        device=DEVICES["H200"],
        device_count=8,
        intra_node=_device_link("H200"),
        inter_node=_gbit("InfiniBand NDR (ConnectX-7)", 8, 400, f"{_DGX_H}; {_NCCL_NET}", 2.7),
        notes="NVSwitch gives every GPU pair the full 450 GB/s per direction",
        source=_DGX_H,
    ),
    # DGX B200: 8x B200 (1,440GB, 64 TB/s), NVLink 5 (14.4 TB/s aggregate = 1.8 TB/s per GPU); 8x 400 Gb/s.
    SystemSpec(
        name="dgx-b200",
        device=DEVICES["B200"],
        device_count=8,
        intra_node=_device_link("B200"),
        inter_node=_gbit("InfiniBand NDR (ConnectX-7)", 8, 400, f"{_DGX_B200}; {_NCCL_NET}", 2.7),
        notes="NVLink 5 Switch: 14.4 TB/s aggregate",
        source=_DGX_B200,
    ),
    # GB200 NVL72: 72 Blackwell GPUs (36 Grace CPUs) in one NVLink domain, 130 TB/s aggregate NVLink.
    SystemSpec(
        name="gb200-nvl72",
        device=DEVICES["GB200"],
        device_count=72,
        intra_node=_device_link("GB200"),
        inter_node=None,
        notes="one rack = one NVLink domain of 72 GPUs (NVLink Switch trays); scale-out NICs vary by build: "
              "describe yours in a system file",
        source="NVIDIA GB200 NVL72 page, https://www.nvidia.com/en-us/data-center/gb200-nvl72/",
    ),
    # HGX A100 8-GPU (as in DGX A100): 8x A100 80GB SXM, NVLink 3 through NVSwitch (600 GB/s per GPU,
    # bidirectional); DGX A100: 8x 200 Gb/s HDR InfiniBand.
    SystemSpec(
        name="hgx-a100-8",
        device=DEVICES["A100-80GB"],
        device_count=8,
        intra_node=_device_link("A100-80GB"),
        inter_node=_gbit("InfiniBand HDR (ConnectX-6)", 8, 200, f"{_DGX_A100}; {_NCCL_NET}", 2.7),
        notes="network as in DGX A100 (other HGX A100 servers differ)",
        source=f"NVIDIA HGX A100 8-GPU baseboard; {_DGX_A100}",
    ),
    # DGX B300: 8x B300 (2.3 TB), NVLink 5 (1.8 TB/s per GPU, bidirectional); 8x single-port ConnectX-8 VPI,
    # up to 800 Gb/s InfiniBand / Ethernet, one per GPU.
    SystemSpec(
        name="dgx-b300",
        device=DEVICES["B300"],
        device_count=8,
        intra_node=_device_link("B300"),
        inter_node=_gbit("InfiniBand XDR (ConnectX-8)", 8, 800, f"{_DGX_B300}; {_NCCL_NET}", 2.7),
        notes="NVLink 5 Switch; one 800 Gb/s ConnectX-8 per GPU",
        source=_DGX_B300,
    ),
    # HGX H20 8-GPU: 8x H20 (96GB) on the HGX baseboard, NVLink 4 through NVSwitch (900 GB/s per GPU,
    # bidirectional); the scale-out NICs are the server builder's.
    SystemSpec(
        name="hgx-h20-8",
        device=DEVICES["H20"],
        device_count=8,
        intra_node=_device_link("H20"),
        inter_node=None,
        notes="scale-out NICs vary by server: describe yours in a system file; H20 figures as reported (no public "
              "datasheet, see the device entry)",
        source="HGX H20 product brief as reported (see the H20 device entry); HGX 8-GPU NVSwitch baseboard",
    ),
    # AMD Instinct MI300X Platform: 8x MI300X (1.5 TB HBM3), fully connected by Infinity Fabric: 7 links of
    # 128 GB/s per GPU = 896 GB/s (bidirectional) = 448 GB/s per direction (64 GB/s to each peer).
    SystemSpec(
        name="mi300x-8",
        device=DEVICES["MI300X"],
        device_count=8,
        intra_node=_device_link("MI300X"),
        inter_node=None,
        notes="fully connected mesh, not a switch: one peer gets 64 GB/s per direction, all 7 together 448; "
              "the platform has no NICs (servers add their own)",
        source="AMD Instinct MI300X Platform data sheet, https://www.amd.com/content/dam/amd/en/documents/"
               "instinct-tech-docs/data-sheets/amd-instinct-mi300x-platform-data-sheet.pdf",
    ),
    # AMD Instinct MI325X Platform: 8x MI325X (2 TB HBM3E), fully connected by Infinity Fabric, 7 x 128 GB/s
    # per GPU (bidirectional) = 448 GB/s per direction; no NICs on the platform.
    SystemSpec(
        name="mi325x-8",
        device=DEVICES["MI325X"],
        device_count=8,
        intra_node=_device_link("MI325X"),
        inter_node=None,
        notes="fully connected mesh, not a switch: one peer gets 64 GB/s per direction; servers add their own NICs",
        source="AMD Instinct MI325X Platform (8 x MI325X OAM, Infinity Fabric mesh), "
               "https://www.amd.com/en/products/accelerators/instinct/mi300/mi325x.html",
    ),
    # AMD Instinct MI355X Platform: 8x MI355X (2.3 TB HBM3E), Infinity Fabric 7 x 153.6 GB/s per GPU
    # (bidirectional) = 537.6 GB/s per direction; no NICs on the platform.
    SystemSpec(
        name="mi355x-8",
        device=DEVICES["MI355X"],
        device_count=8,
        intra_node=_device_link("MI355X"),
        inter_node=None,
        notes="fully connected mesh, not a switch: one peer gets 76.8 GB/s per direction; servers add their own NICs",
        source="AMD Instinct MI355X Platform (8 x MI355X OAM, Infinity Fabric mesh), "
               "https://www.amd.com/en/products/accelerators/instinct/mi350.html",
    ),
    # Intel Gaudi 3 8-card baseboard (HLS-Gaudi3): 21 of each card's 24 x 200 GbE ports connect the cards all to
    # all; the remaining 3 per card leave the node through 6 x 800 GbE OSFP ports (4.8 Tb/s).
    SystemSpec(
        name="gaudi3-8",
        device=DEVICES["Gaudi3"],
        device_count=8,
        intra_node=_device_link("Gaudi3"),
        inter_node=_gbit("800 GbE RoCE (OSFP)", 6, 800, "Intel Gaudi 3 white paper: 6 x 800 GbE OSFP scale-out "
                         "ports per 8-card baseboard; latency: assumption, NCCL's network figure 2.7 us", 2.7),
        notes="scale-up and scale-out are both Ethernet (RoCE v2), no switch inside the node",
        source="Intel Gaudi 3 AI Accelerator white paper, https://www.intel.com/content/www/us/en/content-details/"
               "817486/intel-gaudi-3-ai-accelerator-white-paper.html",
    ),
    # Cloud TPU v5e, one host (v5litepod-8, 2x4 chips): ICI 400 GB/s per chip (bidirectional); the host has
    # 2 x 100 Gbps NICs to the data-center network.
    SystemSpec(
        name="tpu-v5e-8",
        device=DEVICES["TPU-v5e"],
        device_count=8,
        intra_node=_device_link("TPU-v5e"),
        inter_node=_gbit("data-center network (DCN)", 2, 100, "Cloud TPU v5e: 'Per-host NIC configuration: "
                         "2 x 100 Gbps NIC'; latency unknown", None),
        notes="2x4 slice of a 2D torus: a chip reaches its neighbours over ICI, others through them",
        source="Cloud TPU v5e system architecture, https://cloud.google.com/tpu/docs/v5e",
    ),
    # Cloud TPU v6e, one host (v6e-8, 2x4 chips): ICI 800 GB/s per chip (bidirectional).
    SystemSpec(
        name="tpu-v6e-8",
        device=DEVICES["TPU-v6e"],
        device_count=8,
        intra_node=_device_link("TPU-v6e"),
        inter_node=None,
        notes="2x4 slice of a 2D torus; larger slices extend the ICI torus across hosts",
        source="Cloud TPU v6e system architecture, https://cloud.google.com/tpu/docs/v6e",
    ),
)

SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in _TABLE}

_ALIASES: dict[str, str] = {
    "dgxa100": "hgx-a100-8",
    "hgxa100": "hgx-a100-8",
    "nvl72": "gb200-nvl72",
    "gb200nvl72rack": "gb200-nvl72",
    "mi300xplatform": "mi300x-8",
    "v5litepod8": "tpu-v5e-8",
    "v6e8": "tpu-v6e-8",
    "hlsgaudi3": "gaudi3-8",
    "hgxh20": "hgx-h20-8",
    "mi325xplatform": "mi325x-8",
    "mi355xplatform": "mi355x-8",
}


def system_key(name: str) -> str:
    """Lower case, letters and digits only (``"DGX H100"`` -> ``"dgxh100"``)."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


_LOOKUP: dict[str, str] = {**{system_key(n): n for n in SYSTEMS}, **_ALIASES}


def list_systems() -> list[str]:
    """Names of the systems in the table, in table order."""
    return list(SYSTEMS)


def get_system(name: str | os.PathLike[str] | SystemSpec) -> SystemSpec:
    """The system called ``name`` (case-insensitive: "dgx-h100", "DGX H100", "nvl72"), or the system described
    by a JSON / YAML file at path ``name`` (format: ``SystemFile``)."""
    if isinstance(name, SystemSpec):
        return name
    if is_file_reference(name):
        return load_system_file(name)
    key = system_key(str(name))
    if key in _LOOKUP:
        return SYSTEMS[_LOOKUP[key]]
    raise QueryError(
        f"unknown system {name!r}; valid systems: {', '.join(SYSTEMS)} (or a path to a .json / .yaml system file)"
    )


# ---------------------------------------------------------------- description files

Count = Annotated[int, Field(gt=0, strict=True)]


class NetworkFile(BaseModel):
    """The inter-node network in a system file: ports per node and Gb/s per port per direction (as sold)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1)
    links: Count
    link_gbit_s: Positive  # Gb/s (1e9 bits/s) per link, per direction
    latency_us: Positive | None = None
    source: str = "user-supplied"

    def to_network(self) -> Network:
        return Network(kind=self.kind, links=self.links, link_bandwidth=self.link_gbit_s * 1e9 / 8,
                       latency_s=None if self.latency_us is None else self.latency_us * 1e-6, source=self.source)


class SystemFile(BaseModel):
    """A system description file (JSON or YAML)::

        name: my-node                   # required
        device: H100-SXM                # required: a table name, a device file path (relative to this file),
                                        #   or an inline device in the DeviceFile format
        device_count: 8                 # required
        intra_node: {kind: NVLink 4, bandwidth_gbps: 450, latency_us: 0.47}   # GB/s per device per direction;
                                        #   optional when the device has an interconnect
        inter_node: {kind: IB NDR, links: 8, link_gbit_s: 400, latency_us: 2.7}  # optional; Gb/s per link
        notes: ...
        source: ...
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    device: str | DeviceFile
    device_count: Count
    intra_node: LinkFile | None = None
    inter_node: NetworkFile | None = None
    notes: str = ""
    source: str = "user-supplied"

    @field_validator("device", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a device name, a device file path or an inline device")
        return value


def load_system_file(path: str | os.PathLike[str]) -> SystemSpec:
    """The ``SystemSpec`` described by a JSON / YAML file (format: ``SystemFile``); ``DeviceFileError``
    (a ``QueryError``) naming the file and each offending field otherwise."""
    data = read_description(path, "system")
    where = f"system file {str(path)!r}"
    try:
        parsed = SystemFile.model_validate(data)
    except ValidationError as exc:
        allowed = ", ".join(SystemFile.model_fields)
        raise DeviceFileError(f"{where}: {describe_errors(exc)} (fields: {allowed}; see SystemFile)") from None
    if isinstance(parsed.device, DeviceFile):
        device = parsed.device.to_spec()
    else:
        ref: str = parsed.device
        if is_file_reference(ref) and not Path(ref).is_absolute():
            ref = str(Path(path).parent / ref)
        try:
            device = get_device(ref)
        except QueryError as exc:
            raise DeviceFileError(f"{where}: field 'device': {exc}") from None
    if parsed.intra_node is not None:
        intra = parsed.intra_node.to_link()
    elif device.interconnect is not None:
        intra = device.interconnect
    else:
        raise DeviceFileError(
            f"{where}: field 'intra_node': required, because device {device.name!r} has no interconnect "
            f"(give kind and bandwidth_gbps, GB/s per device per direction)"
        )
    return SystemSpec(
        name=parsed.name,
        device=device,
        device_count=parsed.device_count,
        intra_node=intra,
        inter_node=parsed.inter_node.to_network() if parsed.inter_node else None,
        notes=parsed.notes,
        source=parsed.source,
    )
