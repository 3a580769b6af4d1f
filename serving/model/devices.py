"""Device and dtype selection: cpu, cuda, and Huawei Ascend `npu` through torch_npu when it is installed.

Every device-specific branch lives here, so the engine only ever sees a torch.device and a dtype.
"""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from typing import Any


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"
    npu = "npu"


class DType(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


# What each device is supported with here; fp16 on CPU is slow and numerically poor, fp32 on accelerators wastes
# half the memory, so both are refused rather than silently accepted.
SUPPORTED_DTYPES: dict[Device, tuple[DType, ...]] = {
    Device.cpu: (DType.float32, DType.bfloat16),
    Device.cuda: (DType.bfloat16, DType.float16),
    Device.npu: (DType.bfloat16, DType.float16),
}
DEFAULT_DTYPE = {Device.cpu: DType.float32, Device.cuda: DType.bfloat16, Device.npu: DType.bfloat16}


class DeviceError(ValueError):
    """The requested device/dtype cannot be used on this machine."""


def resolve(device: Device | str, dtype: DType | str | None) -> tuple[Any, Any]:
    """Return (torch.device, torch.dtype) after checking the device exists and supports the dtype."""
    import torch

    device = Device(device)
    dt = DType(dtype) if dtype else DEFAULT_DTYPE[device]
    if dt not in SUPPORTED_DTYPES[device]:
        allowed = ", ".join(d.value for d in SUPPORTED_DTYPES[device])
        raise DeviceError(f"dtype {dt.value} is not supported on {device.value} (use one of: {allowed})")
    if device is Device.cuda and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is visible to torch")
    if device is Device.npu:
        if importlib.util.find_spec("torch_npu") is None:
            raise DeviceError("--device npu: torch_npu is not installed (pip install torch-npu matching torch)")
        import torch_npu  # noqa: F401  # registers the "npu" device type with torch

        if not torch.npu.is_available():  # type: ignore[attr-defined]
            raise DeviceError("--device npu: torch_npu found no Ascend device")
    return torch.device(device.value), getattr(torch, dt.value)


def synchronize(device: Any) -> None:
    """Wait for queued kernels (benchmarks and memory figures need it on accelerators)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)  # type: ignore[attr-defined]


def empty_cache(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "npu":
        torch.npu.empty_cache()  # type: ignore[attr-defined]
