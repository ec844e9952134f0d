"""Storage formats and their exact byte cost.

A ``DType`` is how a tensor is *stored* (weights, activations, KV cache): its bits per element and, for
weight-only quantized formats, the per-group metadata stored beside the packed values. Compute dtypes (the
precision a matmul runs at, which picks a device's peak FLOP/s) are a separate, smaller vocabulary:
``COMPUTE_DTYPES`` and ``compute_dtype_name``.

Byte rule (everything in Python ints, rounded once at the end)::

    total_bits = numel * bits                                    # the packed values
               + n_groups * (scale_bits + zero_point_bits)       # only for grouped formats
    bytes      = ceil(total_bits / 8)

For a weight matrix of ``rows x cols`` (``cols`` = input features, the dimension a matmul reduces over, the
one GPTQ / AWQ group along), ``n_groups = rows * ceil(cols / group_size)``: a partial last group still
carries a full scale and zero point.

Grouped int4 convention (GPTQ / AWQ style, weight-only): 4-bit values, one fp16 scale (16 bits) and one
4-bit zero point per group of ``group_size`` consecutive input features of one output row, default 128.
Packing padding (e.g. int32 words of eight nibbles) is not counted: the figure is the information stored,
densely packed. Plain fp8 / int8 carry no per-group metadata; a per-tensor or per-channel scale is O(rows)
bytes and is not counted.
"""

from __future__ import annotations

import re
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

from ..errors import QueryError

# Peak FLOP/s of a device are keyed by these (the precision the tensor cores / ALUs run at).
COMPUTE_DTYPES: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")

DEFAULT_INT4_GROUP = 128
_SCALE_BITS = 16  # fp16 scale per group
_ZERO_BITS = 4  # int4 zero point per group (asymmetric quantization)


class DType(BaseModel):
    """A storage format: ``bits`` per element, plus per-group scale / zero point for grouped formats."""

    model_config = ConfigDict(frozen=True)

    name: str
    bits: int = Field(gt=0)
    group_size: int | None = Field(default=None, gt=0)  # None: no per-group metadata
    scale_bits: int = Field(default=0, ge=0)
    zero_point_bits: int = Field(default=0, ge=0)
    # Checkpoint formats read from a ``quantization_config`` (``llm_profiler.quantization``) add:
    block_rows: int = Field(default=1, gt=0)  # a group spans this many rows too (fp8 128x128 blocks)
    super_group: int | None = Field(default=None, gt=0)  # groups whose scales share one second-level scale
    super_scale_bits: int = Field(default=0, ge=0)  # (bitsandbytes double quantization)
    channel_scale_bits: int = Field(default=0, ge=0)  # metadata per output row (per-channel scales)
    tensor_scale_bits: int = Field(default=0, ge=0)  # metadata per tensor (NVFP4's global fp32 scale)

    @property
    def grouped(self) -> bool:
        return self.group_size is not None

    @property
    def weight_only(self) -> bool:
        """A format with metadata beside its values (or sub-byte values): weights only."""
        return (self.grouped or self.bits % 8 != 0 or self.channel_scale_bits > 0
                or self.tensor_scale_bits > 0)

    @property
    def effective_bits(self) -> Fraction:
        """Bits per element with the group metadata amortized (exact when the group divides the row).

        int4-g128: 4 + (16 + 4) / 128 = 4.15625 bits per weight; MXFP4: 4 + 8 / 32 = 4.25. Per-row and
        per-tensor metadata (``channel_scale_bits``, ``tensor_scale_bits``) depend on the shape: left out.
        """
        if self.group_size is None:
            return Fraction(self.bits)
        group = self.group_size * self.block_rows
        out = self.bits + Fraction(self.scale_bits + self.zero_point_bits, group)
        if self.super_group is not None:
            out += Fraction(self.super_scale_bits, group * self.super_group)
        return out

    @property
    def effective_bytes(self) -> Fraction:
        """``effective_bits / 8``: bytes per element, exact (e.g. bf16 -> 2, int4-g128 -> 133/256)."""
        return self.effective_bits / 8


def _plain(name: str, bits: int) -> DType:
    return DType(name=name, bits=bits)


def int4(group_size: int = DEFAULT_INT4_GROUP) -> DType:
    """Weight-only int4 with an fp16 scale and an int4 zero point per ``group_size`` input features."""
    if group_size <= 0:
        raise QueryError(f"int4 group size must be a positive integer, got {group_size}")
    name = "int4" if group_size == DEFAULT_INT4_GROUP else f"int4-g{group_size}"
    return DType(name=name, bits=4, group_size=group_size, scale_bits=_SCALE_BITS, zero_point_bits=_ZERO_BITS)


FP32 = _plain("fp32", 32)
FP16 = _plain("fp16", 16)
BF16 = _plain("bf16", 16)
FP8 = _plain("fp8", 8)  # e4m3 and e5m2 store the same 8 bits
INT8 = _plain("int8", 8)
INT4 = int4()

DTYPES: dict[str, DType] = {d.name: d for d in (FP32, FP16, BF16, FP8, INT8, INT4)}

_ALIASES: dict[str, str] = {
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
    "bfloat16": "bf16",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e4m3fnuz": "fp8",
    "float8_e5m2": "fp8",
    "float8_e5m2fnuz": "fp8",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "e4m3": "fp8",
    "e5m2": "fp8",
    "int4-g128": "int4",
}

_INT4_GROUP_RE = re.compile(r"^int4[-_]g(\d+)$")


def _normalize(name: str) -> str:
    key = name.strip().lower()
    if key.startswith("torch."):  # str(torch.bfloat16) == "torch.bfloat16"
        key = key[len("torch.") :]
    return key


def get_dtype(name: str | DType) -> DType:
    """The storage format called ``name`` (case-insensitive; torch names and ``int4-gN`` accepted)."""
    if isinstance(name, str):
        from ..checks import check_dtype_name

        check_dtype_name(name, "dtype")
    if isinstance(name, DType):
        return name
    key = _normalize(str(name))
    key = _ALIASES.get(key, key)
    if key in DTYPES:
        return DTYPES[key]
    m = _INT4_GROUP_RE.match(key)
    if m and int(m.group(1)) > 0:
        return int4(int(m.group(1)))
    valid = ", ".join([*DTYPES, "int4-g<N>"])
    raise QueryError(
        f"unknown dtype {name!r}; valid dtypes: {valid} (aliases: {', '.join(sorted(_ALIASES))})"
    )


def _check_count(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(f"{what} must be a non-negative integer, got {value!r}")


def _bits_to_bytes(bits: int) -> int:
    return -(-bits // 8)  # ceil without floats


def _metadata_bits(d: DType, groups: int, rows: int) -> int:
    """Scale / zero-point bits beside the values: per group (and per super-group of groups), per output
    row and per tensor."""
    bits = groups * (d.scale_bits + d.zero_point_bits)
    if d.super_group is not None:
        bits += -(-groups // d.super_group) * d.super_scale_bits
    return bits + rows * d.channel_scale_bits + d.tensor_scale_bits


def weight_bytes(dtype: str | DType, rows: int, cols: int) -> int:
    """Exact bytes of a ``rows x cols`` weight matrix (``cols`` = input features, the grouped dimension).

    Plain: ``ceil(rows * cols * bits / 8)``.
    Grouped: ``ceil((rows * cols * bits + n_groups * (scale_bits + zero_point_bits)) / 8)`` with
    ``n_groups = ceil(rows / block_rows) * ceil(cols / g)`` (``block_rows`` 1 but for 2-D blocks), plus
    ``ceil(n_groups / super_group) * super_scale_bits``, ``rows * channel_scale_bits`` and
    ``tensor_scale_bits`` for the formats that store them (all 0 for the plain and int4-gN formats).
    """
    d = get_dtype(dtype)
    _check_count("rows", rows)
    _check_count("cols", cols)
    bits = rows * cols * d.bits
    groups = 0
    if d.group_size is not None:
        groups = -(-rows // d.block_rows) * -(-cols // d.group_size)
    return _bits_to_bytes(bits + _metadata_bits(d, groups, rows))


def tensor_bytes(dtype: str | DType, numel: int) -> int:
    """Exact bytes of a plain tensor of ``numel`` elements (activations, KV cache, biases, norms).

    A grouped format is grouped along the flattened tensor: ``ceil(numel / (g * block_rows))`` groups.
    That equals row-wise grouping whenever the last dimension is a multiple of the group size (e.g.
    head_dim 128) and the rows a multiple of ``block_rows``; a flat tensor is one row (per-channel
    metadata counted once).
    """
    d = get_dtype(dtype)
    _check_count("numel", numel)
    bits = numel * d.bits
    groups = 0
    if d.group_size is not None:
        groups = -(-numel // (d.group_size * d.block_rows))
    return _bits_to_bytes(bits + _metadata_bits(d, groups, 1 if numel else 0))


_COMPUTE_ALIASES: dict[str, str] = {
    "tensorfloat32": "tf32",
    "tensorfloat-32": "tf32",
}


def compute_dtype_name(name: str | DType) -> str:
    """Canonical compute dtype (one of ``COMPUTE_DTYPES``) for a name such as ``bfloat16`` or ``fp8_e4m3``."""
    if isinstance(name, DType):
        key = name.name
    else:
        key = _normalize(str(name))
        key = _COMPUTE_ALIASES.get(key, _ALIASES.get(key, key))
    if key in COMPUTE_DTYPES:
        return key
    if key.startswith("int4"):
        raise QueryError(
            f"{name!r} is a weight-only storage format; pass the dtype the matmul computes in "
            f"(the activation dtype, e.g. 'fp16' or 'bf16') as the compute dtype"
        )
    raise QueryError(f"unknown compute dtype {name!r}; valid compute dtypes: {', '.join(COMPUTE_DTYPES)}")
