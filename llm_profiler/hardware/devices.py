"""Accelerator specifications from vendor datasheets: memory, bandwidth and dense peak FLOP/s per dtype.

Conventions (the same for every entry, so devices compare fairly):

- ``peak_flops`` is *dense* (no 2:4 structured sparsity). Where a datasheet prints only the sparse figure
  (marked "with sparsity"), the dense figure is half of it.
- Keys are compute dtypes (``COMPUTE_DTYPES``): fp32 is the non-tensor-core (or, on MI300X, matrix) rate,
  tf32 / fp16 / bf16 / fp8 / int8 the tensor-core rates (int8 in OP/s). A device without a format (fp8 on
  Ampere) has no key for it.
- GeForce cards run fp16 / bf16 / fp8 tensor ops at half rate with FP32 accumulation; the table uses the
  FP32-accumulate figures, because that is what PyTorch / cuBLAS use for LLM inference.
- ``memory_bandwidth`` is bytes/s in decimal units (vendors' "GB/s" and "TB/s" are 1e9 and 1e12).
- ``memory_bytes``: vendors' "80 GB" of HBM / GDDR is 80 GiB of DRAM (80 * 2**30 bytes); the driver keeps a
  few hundred MiB of it for itself, which is not subtracted here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import QueryError
from .dtypes import COMPUTE_DTYPES, compute_dtype_name

GiB = 2**30


class DeviceSpec(BaseModel):
    """One device: capacity, bandwidth (bytes/s) and dense peak FLOP/s keyed by compute dtype."""

    model_config = ConfigDict(frozen=True)

    name: str
    vendor: str
    memory_bytes: int = Field(gt=0)
    memory_bandwidth: float = Field(gt=0)  # bytes/s
    peak_flops: dict[str, float]  # compute dtype -> FLOP/s (OP/s for int8), dense
    notes: str = ""
    source: str = ""

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
_NV_L4 = "NVIDIA L4 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/l4/"
_NV_L40S = "NVIDIA L40S GPU datasheet, https://www.nvidia.com/en-us/data-center/l40s/"
_NV_GA102 = (
    "NVIDIA Ampere GA102 GPU Architecture whitepaper v2, Appendix A (GeForce RTX 3090), "
    "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf"
)
_NV_ADA = (
    "NVIDIA Ada GPU Architecture whitepaper v2.1, Appendix A (GeForce RTX 4090), "
    "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
)
_AMD_MI300X = (
    "AMD Instinct MI300X data sheet, https://www.amd.com/content/dam/amd/en/documents/"
    "instinct-tech-docs/data-sheets/amd-instinct-mi300x-data-sheet.pdf"
)

_TABLE: tuple[DeviceSpec, ...] = (
    # A100 SXM: FP32 19.5 TFLOPS, TF32 156, BF16/FP16 312, INT8 624 TOPS (dense; sparse doubles them),
    # 40GB HBM2 at 1,555 GB/s.
    DeviceSpec(
        name="A100-40GB",
        vendor="NVIDIA",
        memory_bytes=40 * GiB,
        memory_bandwidth=1555e9,
        peak_flops=_tflops(fp32=19.5e12, tf32=156e12, fp16=312e12, bf16=312e12, int8=624e12),
        notes="SXM4, 400 W; no fp8",
        source=_NV_A100,
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
    ),
    # H100 SXM: FP32 67 TFLOPS; TF32 989*, BF16/FP16 1,979*, FP8 3,958*, INT8 3,958* TOPS (* with sparsity,
    # halved here); 80GB HBM3 at 3.35 TB/s. (The whitepaper's clock-derived dense bf16 figure is 989.4.)
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
    ),
    # H100 PCIe: FP32 51 TFLOPS; TF32 756*, BF16/FP16 1,513*, FP8 3,026*, INT8 3,026* TOPS (* sparse,
    # halved here); 80GB HBM2e at 2 TB/s.
    DeviceSpec(
        name="H100-PCIe",
        vendor="NVIDIA",
        memory_bytes=80 * GiB,
        memory_bandwidth=2.0e12,
        peak_flops=_tflops(fp32=51e12, tf32=378e12, fp16=756.5e12, bf16=756.5e12, fp8=1513e12, int8=1513e12),
        notes="PCIe Gen5, 300-350 W",
        source=_NV_H100,
    ),
    # H200 SXM: compute as H100 SXM (FP32 67; TF32 989*, BF16/FP16 1,979*, FP8/INT8 3,958*, halved here);
    # 141GB HBM3e at 4.8 TB/s.
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
    ),
    # L4: FP32 30.3 TFLOPS; TF32 120*, FP16/BF16 242*, FP8 485*, INT8 485* TOPS (* sparse, halved here);
    # 24GB GDDR6 at 300 GB/s.
    DeviceSpec(
        name="L4",
        vendor="NVIDIA",
        memory_bytes=24 * GiB,
        memory_bandwidth=300e9,
        peak_flops=_tflops(fp32=30.3e12, tf32=60e12, fp16=121e12, bf16=121e12, fp8=242.5e12, int8=242.5e12),
        notes="Ada, PCIe, 72 W",
        source=_NV_L4,
    ),
    # L40S: FP32 91.6 TFLOPS; TF32 183, BF16/FP16 362.05, FP8 733, INT8 733 TOPS (the datasheet prints the
    # dense figure beside the sparse one); 48GB GDDR6 (ECC) at 864 GB/s.
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
    ),
    # RTX 3090: FP32 35.6 TFLOPS; TF32 35.6; FP16/BF16 71 with FP32 accumulate (142 with FP16 accumulate);
    # INT8 284 TOPS (all dense); 24GB GDDR6X at 936 GB/s (19.5 Gbps x 384 bit).
    DeviceSpec(
        name="RTX-3090",
        vendor="NVIDIA",
        memory_bytes=24 * GiB,
        memory_bandwidth=936e9,
        peak_flops=_tflops(fp32=35.6e12, tf32=35.6e12, fp16=71e12, bf16=71e12, int8=284e12),
        notes="GeForce Ampere (GA102); fp16/bf16 at the FP32-accumulate rate (fp16 accumulate: 142 TFLOPS); no fp8",
        source=_NV_GA102,
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
    ),
    # MI300X: FP32 163.4 TFLOPS (vector and matrix); TF32 653.7, FP16/BF16 1,307.4, FP8 2,614.9, INT8 2,614.9
    # TOPS (dense; sparse doubles them); 192GB HBM3 at 5.3 TB/s.
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
    ),
)

DEVICES: dict[str, DeviceSpec] = {d.name: d for d in _TABLE}

# Forgiving names, compared after _key() (lower case, vendor / product-line words and punctuation dropped).
# A bare "a100" means the 80GB part and a bare "h100" the SXM part: the common cloud configurations.
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
    "h100": "H100-SXM",
    "h100sxm5": "H100-SXM",
    "h10080gb": "H100-SXM",
    "h100sxm80gb": "H100-SXM",
    "h100sxm580gb": "H100-SXM",
    "h100pcie80gb": "H100-PCIe",
    "h200sxm": "H200",
    "h200141gb": "H200",
    "h200sxm141gb": "H200",
    "3090": "RTX-3090",
    "4090": "RTX-4090",
    "mi300": "MI300X",
}
_DROP_WORDS = ("nvidia", "amd", "geforce", "instinct", "tensorcore", "gpu")
_LOCAL_CPU = {"cpu", "local", "localcpu", "host"}


def _key(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    for word in _DROP_WORDS:
        key = key.replace(word, "")
    return key


_LOOKUP: dict[str, str] = {**{_key(n): n for n in DEVICES}, **_ALIASES}


def list_devices() -> list[str]:
    """Names of the devices in the table, in table order."""
    return list(DEVICES)


def get_device(name: str | DeviceSpec) -> DeviceSpec:
    """The device called ``name`` (case-insensitive, forgiving: "a100", "h100-sxm5", "4090", "MI300X").

    ``"cpu"`` (or ``"local"``) measures this machine's CPU with a short micro-benchmark (cached per process).
    """
    if isinstance(name, DeviceSpec):
        return name
    key = _key(str(name))
    if key in _LOCAL_CPU:
        from .cpu_bench import measure_local_cpu  # lazy: the benchmark allocates and runs matmuls

        return measure_local_cpu()
    if key in _LOOKUP:
        return DEVICES[_LOOKUP[key]]
    raise QueryError(
        f"unknown device {name!r}; valid devices: {', '.join(DEVICES)} "
        f"(or 'cpu' for this machine, or custom_device(...) for your own spec)"
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
