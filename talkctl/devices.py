"""Which device a stage runs on: --device auto | cpu | cuda[:N], checked once, and described for reports."""
from __future__ import annotations

import os
import platform

from talkctl.errors import UsageError


def resolve_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} asked for, but no CUDA GPU is visible here; use --device cpu")
    elif device != "cpu":
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def to_device(x, device, dtype=None):
    """`x` (a tensor on any device, or array-like) as a tensor on `device`. Host data bound for
    CUDA goes through pinned memory with non_blocking=True: a pageable copy would wait for every
    kernel queued so far (a host sync per step when done for index tensors)."""
    import numpy as np
    import torch

    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if dtype is not None and t.dtype != dtype and t.device.type == "cpu":
        t = t.to(dtype)  # convert on the host: the copy then carries the final dtype
    if str(device).startswith("cuda") and t.device.type == "cpu":
        return t.pin_memory().to(device, dtype=dtype, non_blocking=True)
    return t.to(device=device, dtype=dtype)


def save_torch_rng(group) -> None:
    """torch's generator states into an open HDF5 group (checkpoints): the CPU one, and every
    CUDA device's when CUDA is in use (densification samples on the GPU)."""
    import numpy as np
    import torch

    group.create_dataset("torch_rng", data=torch.get_rng_state().numpy())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        group.create_dataset("cuda_rng", data=np.stack([s.numpy() for s in torch.cuda.get_rng_state_all()]))


def load_torch_rng(group) -> None:
    """Restore what save_torch_rng wrote (CUDA states for the devices present in both runs)."""
    import torch

    torch.set_rng_state(torch.from_numpy(group["torch_rng"][()]))
    if "cuda_rng" in group and torch.cuda.is_available():
        states = group["cuda_rng"][()]
        for i in range(min(len(states), torch.cuda.device_count())):
            torch.cuda.set_rng_state(torch.from_numpy(states[i]), i)

