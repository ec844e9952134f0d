"""The hardware layer: storage dtypes and their bytes, device and system specs, a CPU micro-benchmark, the roofline."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers; at run time they load on first use
    from .cpu_bench import measure_local_cpu
    from .devices import (
        DEVICES,
        DeviceFile,
        DeviceFileError,
        DeviceSpec,
        Link,
        LinkFile,
        custom_device,
        get_device,
        list_devices,
        load_device_file,
    )
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
    from .systems import (
        SYSTEMS,
        Network,
        NetworkFile,
        SystemFile,
        SystemSpec,
        get_system,
        list_systems,
        load_system_file,
    )

# Submodules load on first use: a profile that only needs dtype sizes does not pay for the device and
# system tables (dozens of pydantic models) or the CPU benchmark.
_SUBMODULE = {
    "measure_local_cpu": "cpu_bench",
    "DEVICES": "devices",
    "DeviceFile": "devices",
    "DeviceFileError": "devices",
    "DeviceSpec": "devices",
    "Link": "devices",
    "LinkFile": "devices",
    "custom_device": "devices",
    "get_device": "devices",
    "list_devices": "devices",
    "load_device_file": "devices",
    "BF16": "dtypes",
    "COMPUTE_DTYPES": "dtypes",
    "DTYPES": "dtypes",
    "FP8": "dtypes",
    "FP16": "dtypes",
    "FP32": "dtypes",
    "INT4": "dtypes",
    "INT8": "dtypes",
    "DType": "dtypes",
    "compute_dtype_name": "dtypes",
    "get_dtype": "dtypes",
    "int4": "dtypes",
    "tensor_bytes": "dtypes",
    "weight_bytes": "dtypes",
    "RooflinePoint": "roofline",
    "ridge_point": "roofline",
    "roofline_time": "roofline",
    "utilization": "roofline",
    "SYSTEMS": "systems",
    "Network": "systems",
    "NetworkFile": "systems",
    "SystemFile": "systems",
    "SystemSpec": "systems",
    "get_system": "systems",
    "list_systems": "systems",
    "load_system_file": "systems",
}


def __getattr__(name: str) -> Any:
    module = _SUBMODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BF16",
    "COMPUTE_DTYPES",
    "DEVICES",
    "DTYPES",
    "DType",
    "DeviceFile",
    "DeviceFileError",
    "DeviceSpec",
    "FP16",
    "FP32",
    "FP8",
    "INT4",
    "INT8",
    "Link",
    "LinkFile",
    "Network",
    "NetworkFile",
    "RooflinePoint",
    "SYSTEMS",
    "SystemFile",
    "SystemSpec",
    "compute_dtype_name",
    "custom_device",
    "get_device",
    "get_dtype",
    "get_system",
    "int4",
    "list_devices",
    "list_systems",
    "load_device_file",
    "load_system_file",
    "measure_local_cpu",
    "ridge_point",
    "roofline_time",
    "tensor_bytes",
    "utilization",
    "weight_bytes",
]
