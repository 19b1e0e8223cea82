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
