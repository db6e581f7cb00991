"""The solvers' mixed-precision policy: they run in their own dtypes (float32 or float64
products, float64 Newton systems; docs/math.md 6, "Dtypes") whatever autocast region a
caller has opened. Under bfloat16 autocast their float32 products ran in bfloat16: on
5-way 5-shot ReLU features the group-Lasso and SVM-CS heads stopped unconverged at a gap
of 1e-2 (tol 1e-4), and a backward called inside the region ran the implicit gradient's
products in bfloat16 too (docs/benchmarks.md, "A head in its caller's context")."""

from __future__ import annotations

import contextlib

import torch

# torch >= 2.4 says which device types have an autocast; before it, CPU and CUDA did
_autocast_available = getattr(torch.amp, "is_autocast_available", lambda device_type: device_type in ("cpu", "cuda"))


def autocast_off(device: torch.device):
    """A context with autocast off on ``device``'s type (a plain context where that type
    has none, e.g. meta)."""
    if _autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
