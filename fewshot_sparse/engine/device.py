"""The one place a device name from a config or the command line becomes a torch.device.

Nothing else in the package names a device: tensors carry their own.
"""

from __future__ import annotations

import torch

from fewshot_sparse.errors import ConfigError


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.

    A bare ``"cuda"`` means GPU ``local_rank`` (under torchrun each process takes its own).
    ConfigError for a name torch does not know, or CUDA asked for where there is none.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


__all__ = ["resolve_device"]
