"""A pretend CUDA device on the CPU, for tests that code keeps device tensors off the host.

Inside `fake_cuda()`:
- torch.cuda reports one GPU; `device="cuda"` in factory functions, `.to("cuda")` and
  `.cuda()` make CPU tensors of the subclass `DeviceTensor`; operations on them give
  DeviceTensors (torch's subclass propagation), `.cpu()` / `.to("cpu")` give plain tensors.
- A DeviceTensor refuses host conversion exactly where a CUDA tensor does: `np.asarray(t)`,
  `np.array(t)`, `t.numpy()` (and so h5py writes of it) raise TypeError with torch's message.
  `float(t)`, `t.item()`, `t.tolist()` stay allowed (on CUDA they are legal, if slow).
- `pin_memory()` is a no-op and torch.cuda's memory/synchronisation calls do nothing.
Module.to() replaces parameters (torch.__future__ overwrite-on-conversion), so parameters
moved "to the GPU" are DeviceTensors too. It checks host conversions only, not device
mismatches between tensors.
"""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import torch
from torch.overrides import TorchFunctionMode

_NUMPY = {torch.Tensor.numpy, torch.Tensor.__array__}
_TO_HOST = {torch.Tensor.cpu}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.type_as, torch.Tensor.new_tensor,
          torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full, torch.Tensor.new_empty}


_PARSERS = {torch.device, torch._C._nn._parse_to}


def _is_cuda(x) -> bool:
    return (isinstance(x, str) and x.startswith("cuda")) or (isinstance(x, torch.device) and x.type == "cuda")


def _strip(args, kwargs):
    """Replace cuda device arguments by cpu; True when one was found."""
    found = False

    def fix(v):
        nonlocal found
        if _is_cuda(v):
            found = True
            return torch.device("cpu")
        return v

    args = tuple(fix(a) for a in args)
    kwargs = {k: fix(v) for k, v in kwargs.items()}
    return args, kwargs, found


class DeviceTensor(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _NUMPY:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. "
                            "Use Tensor.cpu() to copy the tensor to host memory first.")
        if func in _TO_HOST or (func is torch.Tensor.to and _to_cpu(args, kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out
        return super().__torch_function__(func, types, args, kwargs)


def _to_cpu(args, kwargs) -> bool:
    targets = list(args[1:]) + [kwargs.get("device")]
    return any((isinstance(t, str) and t == "cpu") or (isinstance(t, torch.device) and t.type == "cpu")
               for t in targets)


def _mark(out):
    if isinstance(out, torch.Tensor) and not isinstance(out, DeviceTensor):
        if isinstance(out, torch.nn.Parameter):
            return torch.nn.Parameter(out.data.as_subclass(DeviceTensor), out.requires_grad)
        return out.as_subclass(DeviceTensor)
    return out


class _FakeCudaMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PARSERS:  # torch.device("cuda") stays a cuda device (what code compares)
            return func(*args, **kwargs)
        args, kwargs, to_cuda = _strip(args, kwargs)
        if func is torch.Tensor.cuda:
            to_cuda = True
            args = args[:1]
            kwargs = {}
            func = torch.Tensor.clone
        out = func(*args, **kwargs)
        if to_cuda:
            if isinstance(out, (tuple, list)):
                return type(out)(_mark(o) for o in out)
            return _mark(out)
        return out


@contextmanager
def fake_cuda(monkeypatch):
    """One pretend GPU for the duration (monkeypatch undoes the torch.cuda patches)."""
    cuda = torch.cuda
    for name, value in (("is_available", lambda: True), ("device_count", lambda: 1),
                        ("is_initialized", lambda: False), ("synchronize", lambda *a, **k: None),
                        ("get_device_name", lambda *a, **k: "fake GPU (CPU)"),
                        ("get_device_properties",
                         lambda *a, **k: SimpleNamespace(name="fake GPU (CPU)", total_memory=80 << 30)),
                        ("max_memory_allocated", lambda *a, **k: 0),
                        ("reset_peak_memory_stats", lambda *a, **k: None),
                        ("manual_seed", lambda *a, **k: None), ("manual_seed_all", lambda *a, **k: None)):
        monkeypatch.setattr(cuda, name, value)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self, *a, **k: True)
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        with _FakeCudaMode():
            yield
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
