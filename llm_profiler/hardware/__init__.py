"""The hardware layer: storage dtypes and their bytes, device specs, a CPU micro-benchmark, the roofline."""

from .cpu_bench import measure_local_cpu
from .devices import DEVICES, DeviceSpec, custom_device, get_device, list_devices
from .dtypes import (
    BF16,
    COMPUTE_DTYPES,
    DTYPES,
    FP8,
    FP16,
    FP32,
    INT4,
    INT8,
    DType,
    compute_dtype_name,
    get_dtype,
    int4,
    tensor_bytes,
    weight_bytes,
)
from .roofline import RooflinePoint, ridge_point, roofline_time, utilization

__all__ = [
    "BF16",
    "COMPUTE_DTYPES",
    "DEVICES",
    "DTYPES",
    "FP8",
    "FP16",
    "FP32",
    "INT4",
    "INT8",
    "DType",
    "DeviceSpec",
    "RooflinePoint",
    "compute_dtype_name",
    "custom_device",
    "get_device",
    "get_dtype",
    "int4",
    "list_devices",
    "measure_local_cpu",
    "ridge_point",
    "roofline_time",
    "tensor_bytes",
    "utilization",
    "weight_bytes",
]
