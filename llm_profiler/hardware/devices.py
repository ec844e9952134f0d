"""Accelerator specifications from vendor datasheets: memory, bandwidth, dense peak FLOP/s per dtype, links.

Conventions (the same for every entry, so devices compare fairly):

- ``peak_flops`` is *dense* (no 2:4 structured sparsity). Where a datasheet prints only the sparse figure
  (marked "with sparsity"), the dense figure is half of it.
- Keys are compute dtypes (``COMPUTE_DTYPES``): fp32 is the rate of an fp32 GEMM without TF32 (NVIDIA: the
  CUDA-core rate; AMD: the matrix (MFMA) rate, equal to the vector rate on MI300X); tf32 / fp16 / bf16 / fp8 /
  int8 are the tensor-core / matrix-engine rates (int8 in OP/s). A device without a published figure for a
  format (fp8 on Ampere, fp32 on TPUs and Gaudi, fp16 on TPUs) has no key for it.
- GeForce cards run fp16 / bf16 / fp8 tensor ops at half rate with FP32 accumulation; the table uses the
  FP32-accumulate figures, because that is what PyTorch / cuBLAS use for LLM inference.
- ``memory_bandwidth`` is bytes/s in decimal units (vendors' "GB/s" and "TB/s" are 1e9 and 1e12).
- ``memory_bytes``: vendors' "80 GB" of HBM / GDDR / unified memory is 80 GiB of DRAM (80 * 2**30 bytes);
  the driver keeps a few hundred MiB of it for itself, which is not subtracted here.
- Per-chip figures of multi-GPU products (GB200, B300) are the platform figure divided by its GPU count.
- ``interconnect`` is the device-to-device (scale-up) link inside a node, ``host_link`` the link to the
  host CPU. ``Link.bandwidth`` is bytes/s *per device, per direction*: vendors print NVLink, Infinity
  Fabric, ICI and PCIe as bidirectional totals (H100 SXM "NVLink 900 GB/s" = 450 GB/s each way; "PCIe
  Gen5 128 GB/s" = 64 GB/s each way), which are halved here. Network ports (Ethernet, InfiniBand) are
  sold in Gb/s per direction and divided by 8.
- ``Link.latency_s`` is a per-hop latency for small messages where one is known: NVIDIA's NCCL cost model
  uses 0.47 us per NVLink hop, 1.0 us per PCIe hop and 2.7 us per network hop (ring, LL protocol); other
  links state their figure or assumption in ``Link.source``.

Every entry names its datasheet in ``source`` and the figures it used in the comment above it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import QueryError
from .dtypes import COMPUTE_DTYPES, compute_dtype_name

GiB = 2**30


class DeviceFileError(QueryError):
    """A device or system description file that cannot be read, or whose content does not validate.

    The message names the file and each offending field with what is allowed.
    """


class Link(BaseModel):
    """One interconnect as seen from one device: bandwidth per device per direction (bytes/s)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str  # "NVLink 4", "PCIe Gen5 x16", "Infinity Fabric", "ICI", "200 GbE RoCE", ...
    bandwidth: float = Field(gt=0)  # bytes/s, per device, per direction
    latency_s: float | None = Field(default=None, gt=0)  # per hop, small message; None: unknown
    source: str = ""


class DeviceSpec(BaseModel):
    """One device: capacity, bandwidth (bytes/s), dense peak FLOP/s keyed by compute dtype, and its links."""

    model_config = ConfigDict(frozen=True)

    name: str
    vendor: str
    memory_bytes: int = Field(gt=0)
    memory_bandwidth: float = Field(gt=0)  # bytes/s
    peak_flops: dict[str, float]  # compute dtype -> FLOP/s (OP/s for int8), dense
    notes: str = ""
    source: str = ""
    interconnect: Link | None = None  # device-to-device inside a node (scale-up)
    host_link: Link | None = None  # device to host CPU

    @field_validator("peak_flops", mode="before")
    @classmethod
    def _canonical_keys(cls, value: object) -> dict[str, float]:
        if not isinstance(value, dict) or not value:
            raise ValueError("peak_flops must be a non-empty dict of compute dtype -> FLOP/s")
        out: dict[str, float] = {}
        for key, flops in value.items():
            name = compute_dtype_name(key)  # QueryError (a ValueError) for an unknown dtype
            if not isinstance(flops, (int, float)) or isinstance(flops, bool) or not flops > 0:
                raise ValueError(f"peak_flops[{key!r}] must be a positive number, got {flops!r}")
            out[name] = float(flops)
        return out

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s at compute dtype ``dtype`` (QueryError if the device has no figure for it)."""
        key = compute_dtype_name(dtype)
        if key not in self.peak_flops:
            raise QueryError(
                f"device {self.name!r} has no peak FLOP/s for {key!r}; it has: {', '.join(self.peak_flops)}"
            )
        return self.peak_flops[key]

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GiB


def _tflops(**figures: float) -> dict[str, float]:
    assert set(figures) <= set(COMPUTE_DTYPES), figures
    return figures


def _link(kind: str, gb_s_per_direction: float, source: str, latency_us: float | None = None) -> Link:
    return Link(kind=kind, bandwidth=gb_s_per_direction * 1e9,
                latency_s=None if latency_us is None else latency_us * 1e-6, source=source)


# ---------------------------------------------------------------- sources

_NCCL_LAT = (
    "latency: NCCL cost model, src/graph/tuning.cc hwLat (ring, LL protocol): {hop} us per {what} hop, "
    "https://github.com/NVIDIA/nccl/blob/master/src/graph/tuning.cc"
)
_NV_A100 = (
    "NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), "
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_NV_H100 = (
    "NVIDIA H100 Tensor Core GPU datasheet, https://resources.nvidia.com/en-us-tensor-core/"
    "nvidia-tensor-core-gpu-datasheet (also https://www.nvidia.com/en-us/data-center/h100/)"
)
_NV_H200 = "NVIDIA H200 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h200/"
_NV_H20 = (
    "NVIDIA HGX H20 product brief (2023; NVIDIA publishes no H20 web datasheet), figures as reported by "
    "the press, e.g. https://willitrunai.com/es/gpus/h20-96gb"
)
_NV_HGX = (
    "NVIDIA HGX platform page, HGX B200 / HGX B300 columns (8-GPU totals, 'with sparsity'), "
    "https://www.nvidia.com/en-us/data-center/hgx/"
)
_NV_DGX_B200 = "NVIDIA DGX B200 datasheet, https://www.nvidia.com/en-us/data-center/dgx-b200/"
_NV_GB200 = "NVIDIA GB200 NVL72 page (72-GPU totals), https://www.nvidia.com/en-us/data-center/gb200-nvl72/"
_NV_GB300 = "NVIDIA GB300 NVL72 page (72-GPU totals), https://www.nvidia.com/en-us/data-center/gb300-nvl72/"
_NV_L4 = "NVIDIA L4 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/l4/"
_NV_L40 = "NVIDIA L40 GPU datasheet, https://www.nvidia.com/en-us/data-center/l40/"
_NV_L40S = "NVIDIA L40S GPU datasheet, https://www.nvidia.com/en-us/data-center/l40s/"
_NV_A10 = "NVIDIA A10 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/products/a10-gpu/"
_NV_GA102 = (
    "NVIDIA Ampere GA102 GPU Architecture whitepaper v2, Appendix A (GeForce RTX 3090), "
    "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf"
)
_NV_ADA = (
    "NVIDIA Ada GPU Architecture whitepaper v2.1, Appendix A (GeForce RTX 4090), "
    "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
)
_NV_RTX_BW = (
    "NVIDIA RTX Blackwell GPU Architecture whitepaper, Appendix A (GeForce RTX 5090), "
    "https://images.nvidia.com/aem-dam/Solutions/geforce/blackwell/nvidia-rtx-blackwell-gpu-architecture.pdf"
)
_AMD_MI250X = (
    "AMD Instinct MI250X data sheet / product page, "
    "https://www.amd.com/en/products/accelerators/instinct/mi200/mi250x.html"
)
_AMD_MI300X = (
    "AMD Instinct MI300X data sheet, https://www.amd.com/content/dam/amd/en/documents/"
    "instinct-tech-docs/data-sheets/amd-instinct-mi300x-data-sheet.pdf"
)
_AMD_MI325X = (
    "AMD Instinct MI325X data sheet, https://www.amd.com/content/dam/amd/en/documents/"
    "instinct-tech-docs/product-briefs/instinct-mi325x-datasheet.pdf"
)
_AMD_MI355X = (
    "AMD Instinct MI355X product page, https://www.amd.com/en/products/accelerators/instinct/mi350/mi355x.html"
)
_INTEL_GAUDI3 = (
    "Intel Gaudi 3 AI Accelerator white paper (Gaudi 2 vs Gaudi 3 table), "
    "https://www.intel.com/content/www/us/en/content-details/817486/intel-gaudi-3-ai-accelerator-white-paper.html"
)
_TPU_V5E = "Cloud TPU v5e system architecture, https://cloud.google.com/tpu/docs/v5e"
_TPU_V5P = "Cloud TPU v5p system architecture, https://cloud.google.com/tpu/docs/v5p"
_TPU_V6E = "Cloud TPU v6e (Trillium) system architecture, https://cloud.google.com/tpu/docs/v6e"
_TPU_V7 = (
    "Cloud TPU7x (Ironwood) system architecture, https://cloud.google.com/tpu/docs/tpu7x; HBM bandwidth and ICI "
    "from 'Ironwood: the first Google TPU for the age of inference', "
    "https://blog.google/products/google-cloud/ironwood-tpu-age-of-inference/"
)
_APPLE_M2U = "Apple M2 Ultra press release (2023-06-05), https://www.apple.com/newsroom/2023/06/apple-introduces-m2-ultra/"
_APPLE_M3 = "Apple M3 family press release (2023-10-30), https://www.apple.com/newsroom/2023/10/apple-unveils-m3-m3-pro-and-m3-max-the-most-advanced-chips-for-a-personal-computer/"
_APPLE_M4 = "Apple M4 Pro / M4 Max press release (2024-10-30), https://www.apple.com/newsroom/2024/10/apple-introduces-m4-pro-and-m4-max/"
_APPLE_CLOCK = (
    "TFLOPS derived as GPU cores x 128 FP32 ALUs x 2 FLOP x GPU clock, clocks from third-party tables (e.g. "
    "https://hmc-tech.com/gpu/apple-32-core-m4-max-vs-apple-40-core-m3-max); Apple publishes no TFLOPS figure"
)

# ---------------------------------------------------------------- links

_NVLINK4 = _link("NVLink 4 (18 links, NVSwitch)", 450, "datasheet 'NVLink 900 GB/s' (bidirectional) / 2; "
                 + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47)
_NVLINK5 = _link("NVLink 5 (18 links, NVSwitch)", 900, "'NVLink 1.8 TB/s' per GPU (bidirectional) / 2; "
                 + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47)
_NVLINK3 = _link("NVLink 3 (12 links, NVSwitch)", 300, "A100 datasheet 'NVLink 600 GB/s' (bidirectional) / 2; "
                 + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47)


def _pcie(gen: int, note: str = "") -> Link:
    per_direction = {3: 16, 4: 32, 5: 64, 6: 128}[gen]
    return _link(f"PCIe Gen{gen} x16", per_direction,
                 f"PCIe Gen{gen} x16: {2 * per_direction} GB/s bidirectional (as datasheets print it) / 2"
                 + (f"; {note}" if note else "") + "; " + _NCCL_LAT.format(hop=1.0, what="PCIe"), 1.0)


_IF_LATENCY = "latency: assumption, NCCL's NVLink figure 0.47 us per hop (RCCL inherits NCCL's cost model)"
_ICI_LATENCY = "latency: assumption, 1 us per ICI hop (Google publishes no figure)"
_ROCE_LATENCY = "latency: assumption, NCCL's network figure 2.7 us per hop (Intel publishes no figure)"

# ---------------------------------------------------------------- the table

_TABLE: tuple[DeviceSpec, ...] = (
    # A100 SXM: FP32 19.5 TFLOPS, TF32 156, BF16/FP16 312, INT8 624 TOPS (dense; sparse doubles them),
    # 40GB HBM2 at 1,555 GB/s; NVLink 600 GB/s; PCIe Gen4 64 GB/s.
    DeviceSpec(
        name="A100-40GB",
        vendor="NVIDIA",
        memory_bytes=40 * GiB,
        memory_bandwidth=1555e9,
        peak_flops=_tflops(fp32=19.5e12, tf32=156e12, fp16=312e12, bf16=312e12, int8=624e12),
        notes="SXM4, 400 W; no fp8",
        source=_NV_A100,
        interconnect=_NVLINK3,
        host_link=_pcie(4),
    ),
    # A100 80GB SXM: same compute as the 40GB part, 80GB HBM2e at 2,039 GB/s.
    DeviceSpec(
        name="A100-80GB",
        vendor="NVIDIA",
        memory_bytes=80 * GiB,
        memory_bandwidth=2039e9,
        peak_flops=_tflops(fp32=19.5e12, tf32=156e12, fp16=312e12, bf16=312e12, int8=624e12),
        notes="SXM4, 400 W; no fp8",
        source=_NV_A100,
        interconnect=_NVLINK3,
        host_link=_pcie(4),
    ),
    # A100 80GB PCIe: same compute, 80GB HBM2e at 1,935 GB/s; NVLink bridge for 2 GPUs 600 GB/s.
    DeviceSpec(
        name="A100-80GB-PCIe",
        vendor="NVIDIA",
        memory_bytes=80 * GiB,
        memory_bandwidth=1935e9,
        peak_flops=_tflops(fp32=19.5e12, tf32=156e12, fp16=312e12, bf16=312e12, int8=624e12),
        notes="PCIe Gen4, 300 W; no fp8; NVLink bridge pairs two cards",
        source=_NV_A100,
        interconnect=_link("NVLink bridge (2 GPUs)", 300, "A100 datasheet 'NVLink Bridge for 2 GPUs: 600 GB/s' / 2; "
                           + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47),
        host_link=_pcie(4),
    ),
    # H100 SXM: FP32 67 TFLOPS; TF32 989*, BF16/FP16 1,979*, FP8 3,958*, INT8 3,958* TOPS (* with sparsity,
    # halved here); 80GB HBM3 at 3.35 TB/s. (The whitepaper's clock-derived dense bf16 figure is 989.4.)
    # NVLink 900 GB/s, PCIe Gen5 128 GB/s.
    DeviceSpec(
        name="H100-SXM",
        vendor="NVIDIA",
        memory_bytes=80 * GiB,
        memory_bandwidth=3.35e12,
        peak_flops=_tflops(
            fp32=67e12, tf32=494.5e12, fp16=989.5e12, bf16=989.5e12, fp8=1979e12, int8=1979e12
        ),
        notes="SXM5, up to 700 W",
        source=_NV_H100,
        interconnect=_NVLINK4,
        host_link=_pcie(5),
    ),
    # H100 PCIe: FP32 51 TFLOPS; TF32 756*, BF16/FP16 1,513*, FP8 3,026*, INT8 3,026* TOPS (* sparse,
    # halved here); 80GB HBM2e at 2 TB/s; NVLink bridge 600 GB/s, PCIe Gen5 128 GB/s.
    DeviceSpec(
        name="H100-PCIe",
        vendor="NVIDIA",
        memory_bytes=80 * GiB,
        memory_bandwidth=2.0e12,
        peak_flops=_tflops(fp32=51e12, tf32=378e12, fp16=756.5e12, bf16=756.5e12, fp8=1513e12, int8=1513e12),
        notes="PCIe Gen5, 300-350 W",
        source=_NV_H100,
        interconnect=_link("NVLink bridge (2 GPUs)", 300, "H100 datasheet 'NVLink: 600 GB/s' / 2; "
                           + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47),
        host_link=_pcie(5),
    ),
    # H100 NVL: FP32 60 TFLOPS; TF32 835*, BF16/FP16 1,671*, FP8 3,341*, INT8 3,341* TOPS (* sparse, halved
    # here); 94GB HBM3 at 3.9 TB/s; NVLink bridge 600 GB/s, PCIe Gen5 128 GB/s.
    DeviceSpec(
        name="H100-NVL",
        vendor="NVIDIA",
        memory_bytes=94 * GiB,
        memory_bandwidth=3.9e12,
        peak_flops=_tflops(
            fp32=60e12, tf32=417.5e12, fp16=835.5e12, bf16=835.5e12, fp8=1670.5e12, int8=1670.5e12
        ),
        notes="PCIe Gen5 dual-slot, 350-400 W, sold as NVLink-bridged pairs",
        source=_NV_H100,
        interconnect=_link("NVLink bridge (2 GPUs)", 300, "H100 NVL datasheet 'NVLink: 600 GB/s' / 2; "
                           + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47),
        host_link=_pcie(5),
    ),
    # H200 SXM: compute as H100 SXM (FP32 67; TF32 989*, BF16/FP16 1,979*, FP8/INT8 3,958*, halved here);
    # 141GB HBM3e at 4.8 TB/s; NVLink 900 GB/s, PCIe Gen5 128 GB/s.
    DeviceSpec(
        name="H200",
        vendor="NVIDIA",
        memory_bytes=141 * GiB,
        memory_bandwidth=4.8e12,
        peak_flops=_tflops(
            fp32=67e12, tf32=494.5e12, fp16=989.5e12, bf16=989.5e12, fp8=1979e12, int8=1979e12
        ),
        notes="SXM, up to 700 W",
        source=_NV_H200,
        interconnect=_NVLINK4,
        host_link=_pcie(5),
    ),
    # H200 NVL: FP32 60; TF32 835*, BF16/FP16 1,671*, FP8/INT8 3,341* (sparse, halved here); 141GB HBM3e at
    # 4.8 TB/s; 2- or 4-way NVLink bridge 900 GB/s, PCIe Gen5 128 GB/s.
    DeviceSpec(
        name="H200-NVL",
        vendor="NVIDIA",
        memory_bytes=141 * GiB,
        memory_bandwidth=4.8e12,
        peak_flops=_tflops(
            fp32=60e12, tf32=417.5e12, fp16=835.5e12, bf16=835.5e12, fp8=1670.5e12, int8=1670.5e12
        ),
        notes="PCIe dual-slot, up to 600 W; 2- or 4-way NVLink bridge",
        source=_NV_H200,
        interconnect=_link("NVLink bridge (2- or 4-way)", 450, "H200 NVL datasheet 'NVLink bridge 900 GB/s' / 2; "
                           + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47),
        host_link=_pcie(5),
    ),
    # H20: FP32 44 TFLOPS; TF32 74, BF16/FP16 148, FP8 296, INT8 296 TOPS (dense); 96GB HBM3 at 4.0 TB/s;
    # NVLink 900 GB/s, PCIe Gen5 128 GB/s; 400 W.
    DeviceSpec(
        name="H20",
        vendor="NVIDIA",
        memory_bytes=96 * GiB,
        memory_bandwidth=4.0e12,
        peak_flops=_tflops(fp32=44e12, tf32=74e12, fp16=148e12, bf16=148e12, fp8=296e12, int8=296e12),
        notes="Hopper for the China market (export-limited compute), 400 W; figures from the product brief",
        source=_NV_H20,
        interconnect=_NVLINK4,
        host_link=_pcie(5),
    ),
    # HGX B200 (8 GPUs, 1,000 W each): FP32 600 TFLOPS; TF32 18*, FP16/BF16 36*, FP8 72*, INT8 72* PFLOPS
    # (* with sparsity). Per GPU, dense: FP32 75, TF32 1,125, BF16 2,250, FP8 / INT8 4,500. DGX B200: 1,440GB
    # HBM3e at 64 TB/s -> 180GB and 8 TB/s per GPU. NVLink 5: 1.8 TB/s per GPU; PCIe Gen6 (host, 256 GB/s).
    DeviceSpec(
        name="B200",
        vendor="NVIDIA",
        memory_bytes=180 * GiB,
        memory_bandwidth=8e12,
        peak_flops=_tflops(
            fp32=75e12, tf32=1125e12, fp16=2250e12, bf16=2250e12, fp8=4500e12, int8=4500e12
        ),
        notes="HGX/DGX B200, 1,000 W; HGX totals / 8; fp4 (not a compute dtype here): 9 PFLOPS dense",
        source=f"{_NV_HGX}; memory: {_NV_DGX_B200}",
        interconnect=_NVLINK5,
        host_link=_pcie(6),
    ),
    # HGX B300 (8 GPUs): FP32 600 TFLOPS; TF32 18*, FP16/BF16 36*, FP8 72*, INT8 2* P(FL)OPS (* with
    # sparsity); up to 2.3 TB HBM3e. Per GPU, dense: FP32 75, TF32 1,125, BF16 2,250, FP8 4,500, INT8 125;
    # 288GB. Bandwidth: GB300 NVL72 576 TB/s / 72 = 8 TB/s per GPU. NVLink 5: 1.8 TB/s per GPU.
    DeviceSpec(
        name="B300",
        vendor="NVIDIA",
        memory_bytes=288 * GiB,
        memory_bandwidth=8e12,
        peak_flops=_tflops(fp32=75e12, tf32=1125e12, fp16=2250e12, bf16=2250e12, fp8=4500e12, int8=125e12),
        notes="Blackwell Ultra, HGX B300; HGX totals / 8; int8 tensor rate cut (2 POPS per 8 GPUs, sparse); "
              "fp4 (not a compute dtype here): 13.5 PFLOPS dense",
        source=f"{_NV_HGX}; bandwidth: {_NV_GB300}",
        interconnect=_NVLINK5,
        host_link=_pcie(6),
    ),
    # GB200 NVL72 (72 GPUs, 1,200 W class): FP32 5,760 TFLOPS; TF32 180*, FP16/BF16 360*, FP8 720*, INT8 720*
    # P(FL)OPS (* with sparsity); 13.4 TB HBM3e at 576 TB/s; NVLink 130 TB/s. Per GPU, dense: FP32 80,
    # TF32 1,250, BF16 2,500, FP8 / INT8 5,000; 186GB (13.4 TB / 72) at 8 TB/s; NVLink 1.8 TB/s.
    DeviceSpec(
        name="GB200",
        vendor="NVIDIA",
        memory_bytes=186 * GiB,
        memory_bandwidth=8e12,
        peak_flops=_tflops(
            fp32=80e12, tf32=1250e12, fp16=2500e12, bf16=2500e12, fp8=5000e12, int8=5000e12
        ),
        notes="one Blackwell GPU of a GB200 superchip (NVL72 totals / 72); the superchip's 'up to 384GB' is "
              "192GB per GPU; fp4: 10 PFLOPS dense",
        source=_NV_GB200,
        interconnect=_NVLINK5,
    ),
    # L4: FP32 30.3 TFLOPS; TF32 120*, FP16/BF16 242*, FP8 485*, INT8 485* TOPS (* sparse, halved here);
    # 24GB GDDR6 at 300 GB/s; PCIe Gen4 x16 64 GB/s, no NVLink.
    DeviceSpec(
        name="L4",
        vendor="NVIDIA",
        memory_bytes=24 * GiB,
        memory_bandwidth=300e9,
        peak_flops=_tflops(fp32=30.3e12, tf32=60e12, fp16=121e12, bf16=121e12, fp8=242.5e12, int8=242.5e12),
        notes="Ada, PCIe, 72 W",
        source=_NV_L4,
        interconnect=_pcie(4, "no NVLink: peers talk over PCIe"),
        host_link=_pcie(4),
    ),
    # L40: FP32 90.5 TFLOPS; TF32 90.5, BF16/FP16 181.05, FP8 362, INT8 362 TOPS (dense column; sparse
    # doubles them); 48GB GDDR6 (ECC) at 864 GB/s; PCIe Gen4 x16 64 GB/s, no NVLink.
    DeviceSpec(
        name="L40",
        vendor="NVIDIA",
        memory_bytes=48 * GiB,
        memory_bandwidth=864e9,
        peak_flops=_tflops(fp32=90.5e12, tf32=90.5e12, fp16=181.05e12, bf16=181.05e12, fp8=362e12, int8=362e12),
        notes="Ada, PCIe, 300 W",
        source=_NV_L40,
        interconnect=_pcie(4, "no NVLink: peers talk over PCIe"),
        host_link=_pcie(4),
    ),
    # L40S: FP32 91.6 TFLOPS; TF32 183, BF16/FP16 362.05, FP8 733, INT8 733 TOPS (the datasheet prints the
    # dense figure beside the sparse one); 48GB GDDR6 (ECC) at 864 GB/s; PCIe Gen4 x16 64 GB/s, no NVLink.
    DeviceSpec(
        name="L40S",
        vendor="NVIDIA",
        memory_bytes=48 * GiB,
        memory_bandwidth=864e9,
        peak_flops=_tflops(
            fp32=91.6e12, tf32=183e12, fp16=362.05e12, bf16=362.05e12, fp8=733e12, int8=733e12
        ),
        notes="Ada, PCIe, 350 W",
        source=_NV_L40S,
        interconnect=_pcie(4, "no NVLink: peers talk over PCIe"),
        host_link=_pcie(4),
    ),
    # A10: FP32 31.2 TFLOPS; TF32 62.5, BF16/FP16 125, INT8 250 TOPS (dense; sparse doubles them); 24GB GDDR6
    # at 600 GB/s; PCIe Gen4 64 GB/s.
    DeviceSpec(
        name="A10",
        vendor="NVIDIA",
        memory_bytes=24 * GiB,
        memory_bandwidth=600e9,
        peak_flops=_tflops(fp32=31.2e12, tf32=62.5e12, fp16=125e12, bf16=125e12, int8=250e12),
        notes="Ampere (GA102), PCIe, 150 W; no fp8",
        source=_NV_A10,
        interconnect=_pcie(4, "no NVLink: peers talk over PCIe"),
        host_link=_pcie(4),
    ),
    # RTX 3090: FP32 35.6 TFLOPS; TF32 35.6; FP16/BF16 71 with FP32 accumulate (142 with FP16 accumulate);
    # INT8 284 TOPS (all dense); 24GB GDDR6X at 936 GB/s (19.5 Gbps x 384 bit); NVLink bridge 112.5 GB/s total.
    DeviceSpec(
        name="RTX-3090",
        vendor="NVIDIA",
        memory_bytes=24 * GiB,
        memory_bandwidth=936e9,
        peak_flops=_tflops(fp32=35.6e12, tf32=35.6e12, fp16=71e12, bf16=71e12, int8=284e12),
        notes="GeForce Ampere (GA102); fp16/bf16 at the FP32-accumulate rate (fp16 accumulate: 142 TFLOPS); no fp8",
        source=_NV_GA102,
        interconnect=_link("NVLink bridge (2 GPUs)", 56.25, "GA102 whitepaper: NVLink 112.5 GB/s total "
                           "(bidirectional) / 2; " + _NCCL_LAT.format(hop=0.47, what="NVLink"), 0.47),
        host_link=_pcie(4),
    ),
    # RTX 4090: FP32 82.6 TFLOPS; TF32 82.6; FP16/BF16 165.2 and FP8 330.3 with FP32 accumulate (330.3 / 660.6
    # with FP16 accumulate); INT8 660.6 TOPS (all dense); 24GB GDDR6X at 1,008 GB/s (21 Gbps x 384 bit).
    DeviceSpec(
        name="RTX-4090",
        vendor="NVIDIA",
        memory_bytes=24 * GiB,
        memory_bandwidth=1008e9,
        peak_flops=_tflops(
            fp32=82.6e12, tf32=82.6e12, fp16=165.2e12, bf16=165.2e12, fp8=330.3e12, int8=660.6e12
        ),
        notes="GeForce Ada (AD102); fp16/bf16/fp8 at the FP32-accumulate rate (fp16 accumulate doubles them)",
        source=_NV_ADA,
        interconnect=_pcie(4, "no NVLink: peers talk over PCIe"),
        host_link=_pcie(4),
    ),
    # RTX 5090: FP32 104.8 TFLOPS; TF32 104.8; FP16/BF16 209.5 and FP8 419 with FP32 accumulate (419 / 838
    # with FP16 accumulate); INT8 838 TOPS (all dense; sparse doubles them); 32GB GDDR7 at 1,792 GB/s
    # (28 Gbps x 512 bit); PCIe Gen5 x16, no NVLink.
    DeviceSpec(
        name="RTX-5090",
        vendor="NVIDIA",
        memory_bytes=32 * GiB,
        memory_bandwidth=1792e9,
        peak_flops=_tflops(
            fp32=104.8e12, tf32=104.8e12, fp16=209.5e12, bf16=209.5e12, fp8=419e12, int8=838e12
        ),
        notes="GeForce Blackwell (GB202), 575 W; fp16/bf16/fp8 at the FP32-accumulate rate, half the "
              "FP16-accumulate rate as on GA102 / AD102; fp4: 1,676 TFLOPS dense",
        source=_NV_RTX_BW,
        interconnect=_pcie(5, "no NVLink: peers talk over PCIe"),
        host_link=_pcie(5),
    ),
    # MI250X (one OAM = 2 GCDs, which software sees as two 64GB devices): FP32 matrix 95.7 TFLOPS (vector
    # 47.9); FP16 / BF16 383, INT8 383 TOPS (dense); 128GB HBM2e at 3.2768 TB/s; up to 8 Infinity Fabric links
    # at 100 GB/s (bidirectional) each, 800 GB/s total.
    DeviceSpec(
        name="MI250X",
        vendor="AMD",
        memory_bytes=128 * GiB,
        memory_bandwidth=3.2768e12,
        peak_flops=_tflops(fp32=95.7e12, fp16=383e12, bf16=383e12, int8=383e12),
        notes="CDNA 2, OAM, 560 W; two GCDs (each 64GB, 1.6384 TB/s, half the compute); no tf32 / fp8",
        source=_AMD_MI250X,
        interconnect=_link("Infinity Fabric (8 links)", 400, "MI250X data sheet: 8 links x 100 GB/s "
                           "(bidirectional) = 800 GB/s, / 2; " + _IF_LATENCY, 0.47),
        host_link=_pcie(4),
    ),
    # MI300X: FP32 163.4 TFLOPS (vector and matrix); TF32 653.7, FP16/BF16 1,307.4, FP8 2,614.9, INT8 2,614.9
    # TOPS (dense; sparse doubles them); 192GB HBM3 at 5.3 TB/s; 7 Infinity Fabric links x 128 GB/s
    # (bidirectional) = 896 GB/s; PCIe Gen5 x16 128 GB/s.
    DeviceSpec(
        name="MI300X",
        vendor="AMD",
        memory_bytes=192 * GiB,
        memory_bandwidth=5.3e12,
        peak_flops=_tflops(
            fp32=163.4e12, tf32=653.7e12, fp16=1307.4e12, bf16=1307.4e12, fp8=2614.9e12, int8=2614.9e12
        ),
        notes="CDNA 3, OAM, 750 W",
        source=_AMD_MI300X,
        interconnect=_link("Infinity Fabric (7 links, fully connected 8-GPU)", 448, "MI300X data sheet: 7 links "
                           "x 128 GB/s (bidirectional) = 896 GB/s, / 2; " + _IF_LATENCY, 0.47),
        host_link=_pcie(5),
    ),
    # MI325X: compute as MI300X (FP32 163.4, TF32 653.7, FP16/BF16 1,307.4, FP8/INT8 2,614.9, dense); 256GB
    # HBM3E at 6 TB/s; Infinity Fabric 7 x 128 GB/s = 896 GB/s (bidirectional); 1,000 W.
    DeviceSpec(
        name="MI325X",
        vendor="AMD",
        memory_bytes=256 * GiB,
        memory_bandwidth=6.0e12,
        peak_flops=_tflops(
            fp32=163.4e12, tf32=653.7e12, fp16=1307.4e12, bf16=1307.4e12, fp8=2614.9e12, int8=2614.9e12
        ),
        notes="CDNA 3, OAM, 1,000 W",
        source=_AMD_MI325X,
        interconnect=_link("Infinity Fabric (7 links, fully connected 8-GPU)", 448, "MI325X data sheet: 7 links "
                           "x 128 GB/s (bidirectional) = 896 GB/s, / 2; " + _IF_LATENCY, 0.47),
        host_link=_pcie(5),
    ),
    # MI355X: FP16/BF16 2.5 PFLOPS, FP8 5.0 PFLOPS, INT8 5.0 POPS (dense; sparse doubles them), FP32 157.3
    # TFLOPS; 288GB HBM3E at 8 TB/s. The exact figures are 256 CUs x 2.4 GHz x {4,096 (fp16), 8,192 (fp8 /
    # int8), 256 (fp32)} FLOP per CU per clock = 2,516.6 / 5,033.2 / 157.3 TFLOPS. Infinity Fabric 7 links x
    # 153.6 GB/s = 1,075.2 GB/s (bidirectional).
    DeviceSpec(
        name="MI355X",
        vendor="AMD",
        memory_bytes=288 * GiB,
        memory_bandwidth=8.0e12,
        peak_flops=_tflops(fp32=157.3e12, fp16=2516.6e12, bf16=2516.6e12, fp8=5033.2e12, int8=5033.2e12),
        notes="CDNA 4, OAM, 1,400 W (liquid-cooled); no tf32 figure published; mxfp4/mxfp6: 10 PFLOPS dense",
        source=_AMD_MI355X,
        interconnect=_link("Infinity Fabric (7 links, fully connected 8-GPU)", 537.6, "MI355X: 7 links x "
                           "153.6 GB/s (bidirectional) = 1,075.2 GB/s, / 2; " + _IF_LATENCY, 0.47),
        host_link=_pcie(5),
    ),
    # Gaudi 2: MME BF16 432 TFLOPS, FP8 865 TFLOPS; 96GB HBM2E at 2.45 TB/s; 24 x 100 GbE RoCE ports on chip,
    # 21 of them for scale-up inside an 8-card HLS-Gaudi2 node (3 to each peer): 21 x 100 Gb/s = 262.5 GB/s.
    DeviceSpec(
        name="Gaudi2",
        vendor="Intel",
        memory_bytes=96 * GiB,
        memory_bandwidth=2.45e12,
        peak_flops=_tflops(bf16=432e12, fp8=865e12),
        notes="Habana Gaudi 2, OAM, 600 W; matrix-engine (MME) figures (some reports print fp8 835); "
              "no fp32 / fp16 figure in the table",
        source=_INTEL_GAUDI3,
        interconnect=_link("100 GbE RoCE (21 scale-up ports)", 262.5, "21 x 100 Gb/s per direction / 8 "
                           "(3 ports to each of 7 peers); " + _ROCE_LATENCY, 2.7),
        host_link=_pcie(4),
    ),
    # Gaudi 3: MME BF16 1,835 TFLOPS, FP8 1,835 TFLOPS; 128GB HBM2e at 3.7 TB/s; 24 x 200 GbE RoCE ports, 21 for
    # scale-up inside an 8-card node: 21 x 200 Gb/s = 525 GB/s per direction; PCIe Gen5 x16.
    DeviceSpec(
        name="Gaudi3",
        vendor="Intel",
        memory_bytes=128 * GiB,
        memory_bandwidth=3.7e12,
        peak_flops=_tflops(bf16=1835e12, fp8=1835e12),
        notes="Gaudi 3, OAM, 900 W; matrix-engine (MME) figures; vector BF16 28.7 TFLOPS; no fp32 / fp16 figure",
        source=_INTEL_GAUDI3,
        interconnect=_link("200 GbE RoCE (21 scale-up ports)", 525, "21 x 200 Gb/s per direction / 8 "
                           "(3 ports to each of 7 peers); " + _ROCE_LATENCY, 2.7),
        host_link=_pcie(5),
    ),
    # TPU v5e: bf16 197 TFLOPS, int8 393 TOPS; 16 GiB HBM2 at 819 GB/s; ICI 400 GB/s bidirectional per chip
    # (4 ports, 2D torus).
    DeviceSpec(
        name="TPU-v5e",
        vendor="Google",
        memory_bytes=16 * GiB,
        memory_bandwidth=819e9,
        peak_flops=_tflops(bf16=197e12, int8=393e12),
        notes="one chip (one TensorCore); 8 chips per host, 256 per pod; no fp32 / fp16 MXU figure",
        source=_TPU_V5E,
        interconnect=_link("ICI (4 ports, 2D torus)", 200, "v5e: bidirectional ICI 400 GB/s per chip / 2; "
                           + _ICI_LATENCY, 1.0),
    ),
    # TPU v5p: bf16 459 TFLOPS, fp8 459 (no faster than bf16); 95 GiB HBM2e at 2,765 GB/s; ICI 1,200 GB/s
    # bidirectional per chip (3D torus).
    DeviceSpec(
        name="TPU-v5p",
        vendor="Google",
        memory_bytes=95 * GiB,
        memory_bandwidth=2765e9,
        peak_flops=_tflops(bf16=459e12, fp8=459e12),
        notes="one chip (two TensorCores); 4 chips per host, 8,960 per pod",
        source=_TPU_V5P,
        interconnect=_link("ICI (6 ports, 3D torus)", 600, "v5p: bidirectional ICI 1,200 GB/s per chip / 2; "
                           + _ICI_LATENCY, 1.0),
    ),
    # TPU v6e (Trillium): bf16 918 TFLOPS, fp8 918, int8 1,836 TOPS; 32 GiB HBM at 1,638 GB/s; ICI 800 GB/s
    # bidirectional per chip (4 ports, 2D torus).
    DeviceSpec(
        name="TPU-v6e",
        vendor="Google",
        memory_bytes=32 * GiB,
        memory_bandwidth=1638e9,
        peak_flops=_tflops(bf16=918e12, fp8=918e12, int8=1836e12),
        notes="Trillium, one chip (one TensorCore); 8 chips per host, 256 per pod",
        source=_TPU_V6E,
        interconnect=_link("ICI (4 ports, 2D torus)", 400, "v6e: bidirectional ICI 800 GB/s per chip / 2; "
                           + _ICI_LATENCY, 1.0),
    ),
    # TPU7x (Ironwood): bf16 2,307 TFLOPS, fp8 4,614 TFLOPS; 192 GiB HBM3E at 7.37 TB/s; ICI 1.2 TB/s
    # bidirectional per chip.
    DeviceSpec(
        name="TPU-v7",
        vendor="Google",
        memory_bytes=192 * GiB,
        memory_bandwidth=7.37e12,
        peak_flops=_tflops(bf16=2307e12, fp8=4614e12),
        notes="Ironwood (TPU7x), one chip (two TensorCores); 4 chips per host, 9,216 per pod",
        source=_TPU_V7,
        interconnect=_link("ICI (3D torus)", 600, "Ironwood: ICI 1.2 TB/s bidirectional per chip / 2; "
                           + _ICI_LATENCY, 1.0),
    ),
    # Apple M2 Ultra: up to 192GB unified memory at 800 GB/s; 76-core GPU: 76 x 128 ALUs x 2 FLOP x 1.398 GHz
    # = 27.2 TFLOPS fp32; fp16 / bf16 run at the same ALU rate (no matrix engine on the GPU).
    DeviceSpec(
        name="M2-Ultra",
        vendor="Apple",
        memory_bytes=192 * GiB,
        memory_bandwidth=800e9,
        peak_flops=_tflops(fp32=27.2e12, fp16=27.2e12, bf16=27.2e12),
        notes="76-core GPU, 192GB configuration; fp16/bf16 assumed at the fp32 ALU rate; Neural Engine not counted",
        source=f"{_APPLE_M2U}; clock: {_APPLE_CLOCK}",
        interconnect=_link("Thunderbolt 4", 5, "Thunderbolt 4: 40 Gb/s per direction / 8 (Macs cluster over "
                           "Thunderbolt); latency unknown"),
    ),
    # Apple M3 Max (40-core GPU): up to 128GB unified memory at 400 GB/s; 40 x 128 ALUs x 2 FLOP x 1.398 GHz
    # = 14.3 TFLOPS fp32.
    DeviceSpec(
        name="M3-Max",
        vendor="Apple",
        memory_bytes=128 * GiB,
        memory_bandwidth=400e9,
        peak_flops=_tflops(fp32=14.3e12, fp16=14.3e12, bf16=14.3e12),
        notes="40-core GPU, 128GB configuration (the 30-core part has 300 GB/s); fp16/bf16 assumed at the fp32 "
              "ALU rate; Neural Engine not counted",
        source=f"{_APPLE_M3}; clock: {_APPLE_CLOCK}",
        interconnect=_link("Thunderbolt 4", 5, "Thunderbolt 4: 40 Gb/s per direction / 8; latency unknown"),
    ),
    # Apple M4 Max (40-core GPU): up to 128GB unified memory at 546 GB/s; 40 x 128 ALUs x 2 FLOP x 1.678 GHz
    # = 17.2 TFLOPS fp32.
    DeviceSpec(
        name="M4-Max",
        vendor="Apple",
        memory_bytes=128 * GiB,
        memory_bandwidth=546e9,
        peak_flops=_tflops(fp32=17.2e12, fp16=17.2e12, bf16=17.2e12),
        notes="40-core GPU, 128GB configuration; fp16/bf16 assumed at the fp32 ALU rate; Neural Engine not counted",
        source=f"{_APPLE_M4}; clock: {_APPLE_CLOCK}",
        interconnect=_link("Thunderbolt 5", 10, "Thunderbolt 5: 80 Gb/s per direction / 8; latency unknown"),
    ),
)

DEVICES: dict[str, DeviceSpec] = {d.name: d for d in _TABLE}

# Forgiving names, compared after _key() (lower case, vendor / product-line words and punctuation dropped).
# A bare "a100" means the 80GB SXM part and a bare "h100" the SXM part: the common cloud configurations.
_ALIASES: dict[str, str] = {
    "a100": "A100-80GB",
    "a10080": "A100-80GB",
    "a100sxm": "A100-80GB",
    "a100sxm4": "A100-80GB",
    "a10080gbsxm": "A100-80GB",
    "a10080gbsxm4": "A100-80GB",
    "a100sxm80gb": "A100-80GB",
    "a100sxm480gb": "A100-80GB",
    "a10040": "A100-40GB",
    "a10040gbsxm": "A100-40GB",
    "a10040gbsxm4": "A100-40GB",
    "a100sxm40gb": "A100-40GB",
    "a100sxm440gb": "A100-40GB",
    "a100pcie": "A100-80GB-PCIe",
    "a100pcie80gb": "A100-80GB-PCIe",
    "a10080pcie": "A100-80GB-PCIe",
    "h100": "H100-SXM",
    "h100sxm5": "H100-SXM",
    "h10080gb": "H100-SXM",
    "h100sxm80gb": "H100-SXM",
    "h100sxm580gb": "H100-SXM",
    "h100pcie80gb": "H100-PCIe",
    "h100nvl94gb": "H100-NVL",
    "h200sxm": "H200",
    "h200141gb": "H200",
    "h200sxm141gb": "H200",
    "h200nvl141gb": "H200-NVL",
    "h2096gb": "H20",
    "b200180gb": "B200",
    "b200sxm": "B200",
    "b300sxm": "B300",
    "blackwellultra": "B300",
    "b300288gb": "B300",
    "gb200superchip": "GB200",
    "3090": "RTX-3090",
    "4090": "RTX-4090",
    "5090": "RTX-5090",
    "mi300": "MI300X",
    "mi325": "MI325X",
    "mi355": "MI355X",
    "hlgaudi2": "Gaudi2",
    "hl225": "Gaudi2",
    "hl325": "Gaudi3",
    "v5e": "TPU-v5e",
    "tpuv5litepod": "TPU-v5e",
    "tpuv5lite": "TPU-v5e",
    "v5p": "TPU-v5p",
    "v6e": "TPU-v6e",
    "trillium": "TPU-v6e",
    "tpuv6etrillium": "TPU-v6e",
    "tpuv7": "TPU-v7",
    "tpu7x": "TPU-v7",
    "tpu7": "TPU-v7",
    "ironwood": "TPU-v7",
    "tpu7xironwood": "TPU-v7",
    "tpuv7ironwood": "TPU-v7",
    "m2ultra76core": "M2-Ultra",
    "m3max40core": "M3-Max",
    "m4max40core": "M4-Max",
}
_DROP_WORDS = ("nvidia", "amd", "geforce", "instinct", "tensorcore", "gpu", "intel", "habana", "google",
               "cloud", "apple")
_LOCAL_CPU = {"cpu", "local", "localcpu", "host"}
_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def _key(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    for word in _DROP_WORDS:
        key = key.replace(word, "")
    return key


_LOOKUP: dict[str, str] = {**{_key(n): n for n in DEVICES}, **_ALIASES}


def list_devices() -> list[str]:
    """Names of the devices in the table, in table order."""
    return list(DEVICES)


def is_file_reference(name: object) -> bool:
    """True when ``name`` names a description file rather than a table entry: a path object, or a string
    ending in .json / .yaml / .yml or containing a path separator."""
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str):
        return False
    return name.lower().endswith(_FILE_SUFFIXES) or "/" in name or os.sep in name


def get_device(name: str | os.PathLike[str] | DeviceSpec) -> DeviceSpec:
    """The device called ``name`` (case-insensitive, forgiving: "a100", "h100-sxm5", "4090", "MI300X", "v5e"),
    or the custom device described by a JSON / YAML file at path ``name`` (see ``load_device_file``).

    ``"cpu"`` (or ``"local"``) measures this machine's CPU with a short micro-benchmark (cached per process).
    """
    if isinstance(name, DeviceSpec):
        return name
    if is_file_reference(name):
        return load_device_file(name)
    key = _key(str(name))
    if key in _LOCAL_CPU:
        from .cpu_bench import measure_local_cpu  # lazy: the benchmark allocates and runs matmuls

        return measure_local_cpu()
    if key in _LOOKUP:
        return DEVICES[_LOOKUP[key]]
    from .systems import SYSTEMS, system_key  # lazy: systems imports this module

    hint = ""
    if system_key(str(name)) in {system_key(s) for s in SYSTEMS}:
        hint = f" ({name!r} is a multi-device system: use get_system({name!r}))"
    raise QueryError(
        f"unknown device {name!r}{hint}; valid devices: {', '.join(DEVICES)} "
        f"(or 'cpu' for this machine, a path to a .json / .yaml device file, or custom_device(...))"
    )


def custom_device(
    name: str,
    memory_gb: float,
    bandwidth_gbps: float,
    tflops: dict[str, float],
    *,
    vendor: str = "custom",
    notes: str = "",
    source: str = "user-supplied",
) -> DeviceSpec:
    """A user device: memory as printed on the datasheet (GB, read as 2**30 bytes like the table),
    bandwidth in GB/s (1e9 bytes/s), dense TFLOPS per compute dtype (e.g. ``{"bf16": 312, "fp32": 19.5}``).
    """
    for what, value in (("memory_gb", memory_gb), ("bandwidth_gbps", bandwidth_gbps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise QueryError(f"custom_device: {what} must be a positive number, got {value!r}")
    if not isinstance(tflops, dict) or not tflops:
        raise QueryError("custom_device: tflops must be a non-empty dict such as {'bf16': 312, 'fp32': 19.5}")
    peak: dict[str, float] = {}
    for key, value in tflops.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise QueryError(f"custom_device: tflops[{key!r}] must be a positive number, got {value!r}")
        peak[compute_dtype_name(key)] = float(value) * 1e12
    return DeviceSpec(
        name=name,
        vendor=vendor,
        memory_bytes=round(memory_gb * GiB),
        memory_bandwidth=float(bandwidth_gbps) * 1e9,
        peak_flops=peak,
        notes=notes,
        source=source,
    )


# ---------------------------------------------------------------- description files (what users hand in)

# A positive, finite number; strict: no strings, no booleans (a YAML "yes" is not a bandwidth).
Positive = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]


class LinkFile(BaseModel):
    """A link in a description file, in datasheet units: GB/s per device per direction, microseconds."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1)
    bandwidth_gbps: Positive  # GB/s (1e9 bytes/s) per device, per direction
    latency_us: Positive | None = None  # per hop
    source: str = "user-supplied"

    def to_link(self) -> Link:
        return Link(kind=self.kind, bandwidth=self.bandwidth_gbps * 1e9,
                    latency_s=None if self.latency_us is None else self.latency_us * 1e-6, source=self.source)


class DeviceFile(BaseModel):
    """A device description file (JSON or YAML), in datasheet units::

        name: my-gpu                    # required
        memory_gb: 48                   # required; GB as printed, read as GiB (48 * 2**30 bytes) like the table
        bandwidth_gbps: 960             # required; memory bandwidth, GB/s (1e9 bytes/s)
        tflops: {bf16: 200, fp32: 50}   # required; dense TFLOPS per compute dtype (fp32 tf32 fp16 bf16 fp8 int8)
        vendor: acme                    # optional
        interconnect: {kind: NVLink, bandwidth_gbps: 450, latency_us: 0.5}   # optional, GB/s per direction
        host_link: {kind: PCIe Gen5 x16, bandwidth_gbps: 64}                  # optional
        notes: ...                      # optional
        source: my datasheet, page 3    # optional
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    memory_gb: Positive
    bandwidth_gbps: Positive
    tflops: dict[str, Positive] = Field(min_length=1)
    vendor: str = "custom"
    interconnect: LinkFile | None = None
    host_link: LinkFile | None = None
    notes: str = ""
    source: str = "user-supplied"

    @field_validator("tflops")
    @classmethod
    def _known_dtypes(cls, value: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        names: dict[str, str] = {}
        for key, tf in value.items():
            name = compute_dtype_name(key)  # QueryError (a ValueError) names the valid dtypes
            if name in out:
                raise ValueError(f"{names[name]!r} and {key!r} both name compute dtype {name!r}; give it once")
            out[name], names[name] = tf, key
        return out

    def to_spec(self) -> DeviceSpec:
        return DeviceSpec(
            name=self.name,
            vendor=self.vendor,
            memory_bytes=round(self.memory_gb * GiB),
            memory_bandwidth=self.bandwidth_gbps * 1e9,
            peak_flops={k: v * 1e12 for k, v in self.tflops.items()},
            notes=self.notes,
            source=self.source,
            interconnect=self.interconnect.to_link() if self.interconnect else None,
            host_link=self.host_link.to_link() if self.host_link else None,
        )


def read_description(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The mapping in a .json / .yaml / .yml file; ``DeviceFileError`` for anything else (``what``: "device" or
    "system", for the message). YAML needs PyYAML; JSON always works."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        raise DeviceFileError(f"{what} file {str(p)!r}: the name must end in .json, .yaml or .yml")
    if not p.is_file():
        raise DeviceFileError(f"{what} file {str(p)!r} not found (a {what} name or a path to a .json / .yaml file)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceFileError(f"{what} file {str(p)!r} cannot be read: {exc}") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DeviceFileError(f"{what} file {str(p)!r} is not valid JSON: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise DeviceFileError(
                f"{what} file {str(p)!r}: reading YAML needs PyYAML (pip install pyyaml); JSON files always work"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DeviceFileError(f"{what} file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DeviceFileError(
            f"{what} file {str(p)!r}: the top level must be a mapping of fields, got {type(data).__name__}"
        )
    return data


def describe_errors(err: ValidationError) -> str:
    """One line per invalid field: ``field 'tflops.bf16': Input should be greater than 0``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"field {loc!r}: {msg}")
    return "; ".join(parts)


def load_device_file(path: str | os.PathLike[str]) -> DeviceSpec:
    """The ``DeviceSpec`` described by a JSON / YAML file (format: ``DeviceFile``); ``DeviceFileError``
    (a ``QueryError``) naming the file and each offending field otherwise."""
    data = read_description(path, "device")
    try:
        parsed = DeviceFile.model_validate(data)
    except ValidationError as exc:
        allowed = ", ".join(DeviceFile.model_fields)
        raise DeviceFileError(
            f"device file {str(path)!r}: {describe_errors(exc)} (fields: {allowed}; see DeviceFile)"
        ) from None
    return parsed.to_spec()


# ---------------------------------------------------------------- datasheet device models (issue 18)

# The shape of the measured CPU model for a datasheet GPU: no GPU was lent to measure one, so every factor is
# a stated default, to calibrate (``cpu_bench``'s measurements have the same fields) when a device is lent.
GEMM_EFFICIENCY_M = (1, 16, 64, 128, 256, 1024, 4096)
# Fraction of the dense datasheet peak a cuBLAS / hipBLASLt GEMM in nn.Linear's layout reaches by M (rows):
# tensor-core tiles are 64 - 256 rows, so below 128 rows most of a tile is padding (NVIDIA, "Matrix
# Multiplication Background User's Guide", tile and wave quantization); large GEMMs reach 70 - 80% of the
# dense peak (the same guide's H100 / A100 GEMM figures). Default: 0.75 x min(1, M / 128), floor 1 / 128.
GEMM_EFFICIENCY = tuple(0.75 * min(1.0, m / 128) for m in GEMM_EFFICIENCY_M)
GEMV_BANDWIDTH_EFFICIENCY = 0.85  # a weight-streaming GEMV reaches 80 - 90% of the HBM bandwidth (assumed 0.85)
ELEMENTWISE_BANDWIDTH_EFFICIENCY = 0.80  # a streaming elementwise kernel: 75 - 85% (assumed 0.80)
CUDA_EAGER_OP_S = 5e-6  # one eager PyTorch op on a GPU: CPU dispatch + kernel launch, ~5 us (assumed)
DATASHEET_MODEL_SOURCE = (
    "datasheet device model (defaults, not measured): GEMM efficiency 0.75 x min(1, M/128) of the dense peak "
    "(tile quantization below 128 rows; NVIDIA Matrix Multiplication Background User's Guide), GEMV at 0.85 and "
    "elementwise at 0.80 of the datasheet bandwidth, 5 us per eager op (dispatch + launch), 0 under CUDA graphs "
    "(the vllm profile); calibrate with a measured run when a device is lent"
)


def datasheet_model(device: DeviceSpec | str) -> Any:
    """The device model (``roofline.DeviceModel``) of a datasheet device from the default efficiency factors
    above, for every compute dtype the device has a peak for."""
    from .roofline import DeviceModel, RateCurve

    dev = get_device(device)
    gemm = {dt: RateCurve(m=GEMM_EFFICIENCY_M, flops_per_s=tuple(e * peak for e in GEMM_EFFICIENCY))
            for dt, peak in dev.peak_flops.items()}
    bw = dev.memory_bandwidth
    return DeviceModel(gemm=gemm, bmm=gemm, gemv_bandwidth=dict.fromkeys(dev.peak_flops, GEMV_BANDWIDTH_EFFICIENCY * bw),
                       elementwise_bandwidth=dict.fromkeys(dev.peak_flops, ELEMENTWISE_BANDWIDTH_EFFICIENCY * bw),
                       vector_flops={dt: 0.75 * peak for dt, peak in dev.peak_flops.items()},
                       per_op_s=CUDA_EAGER_OP_S, captured_op_s=0.0, source=DATASHEET_MODEL_SOURCE)
