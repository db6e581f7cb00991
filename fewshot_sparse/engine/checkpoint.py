"""Checkpoints: written atomically (temporary file, then ``os.replace``), so a run killed
while saving leaves the previous checkpoint intact.

Contents: ``model``, ``optimizer`` and ``scheduler`` state dicts, ``epoch`` (epochs
completed), ``global_step``, ``best_accuracy``, ``rng`` (torch CPU/CUDA generator states
at the time of saving, as tensors), ``config`` (the run's Config as a plain dict),
``encoder`` (the encoder's registry name) and ``format`` (a version number).

Only tensors and plain containers (dict, list, tuple, str, int, float, bool, None) are
written, and a checkpoint is always read with ``torch.load(..., weights_only=True)``:
a file holding any other object (which unpickling could use to run code) is refused
with a ``CheckpointError`` naming the file, before anything in it runs.
See docs/failure-behaviour.md.

The training loop does not need ``rng`` to resume exactly: it reseeds torch's global
generator at the start of each epoch from (seed, epoch, rank), see ``engine/train.py``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Optional

import torch

from fewshot_sparse.errors import CheckpointError
from fewshot_sparse.files import atomic_write_bytes

FORMAT = 1
REQUIRED = ("format", "model", "epoch", "global_step", "config", "encoder")
_PLAIN = (str, int, float, bool, type(None))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def check_plain(obj, where: str = "checkpoint") -> None:
    """TypeError unless ``obj`` holds only tensors and plain containers/scalars."""
    if isinstance(obj, (torch.Tensor,) + _PLAIN):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            check_plain(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} is not a tensor or plain value; "
                    f"checkpoints hold only tensors and plain containers")


def _plain_config(config) -> dict:
    try:
        return json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint config is not plain JSON data ({e})") from None


def save_checkpoint(path, *, model: torch.nn.Module, epoch: int, global_step: int,
                    config: dict, encoder: str, optimizer=None, scheduler=None,
                    best_accuracy: Optional[float] = None, extra: Optional[dict] = None) -> Path:
    """Write a checkpoint to ``path`` atomically; returns the path. On a full disk or a
    read-only folder: OutputError, and the previous checkpoint at ``path`` stays intact.

    TypeError when something to be saved is not a tensor or plain value (it could not be
    read back with ``weights_only=True``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": int(epoch),
        "global_step": int(global_step),
        "best_accuracy": None if best_accuracy is None else float(best_accuracy),
        "rng": rng_state(),
        "config": _plain_config(config),
        "encoder": str(encoder),
        **(extra or {}),
    }
    check_plain(state)
    buffer = io.BytesIO()  # serialised in memory: a full disk fails in the write below,
    torch.save(state, buffer)  # with ENOSPC, not inside torch's zip writer
    atomic_write_bytes(path, buffer.getbuffer())
    return path


def _detail(e: BaseException) -> str:
    """A short one-line cause (torch's messages span many lines of advice)."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    lines = [s for s in lines if not s.startswith(("Weights only load failed", "Please file",
                                                   "Check the documentation"))]
    return (lines[0] if lines else type(e).__name__)[:200]


def read_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint's dict, checked for the required keys (CheckpointError if not).

    Read with ``weights_only=True``: a file holding anything but tensors and plain
    containers is refused and nothing in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL\s+(\S+)|unsupported\s+class\s+(\S+)", str(e), re.I)
        if found:
            raise CheckpointError(
                f"{path}: refused: the file holds a Python object "
                f"({(found.group(1) or found.group(2)).rstrip('.,')}), not only tensors and "
                f"plain containers; loading it could run code") from None
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt "
                              f"({_detail(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError,
            AttributeError, TypeError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt "
                              f"({_detail(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a fewshot-sparse checkpoint")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']}, "
                              f"this version reads {FORMAT}")
    if isinstance(state["config"], str):  # a config saved as a JSON string
        try:
            state["config"] = json.loads(state["config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: saved config is not valid JSON ({e})") from None
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: saved config is not a JSON object")
    if not isinstance(state["model"], dict):
        raise CheckpointError(f"{path}: 'model' is not a state dict")
    for name, value in state["model"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: model entry {name!r} is not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: model weights {name!r} hold NaN or inf")
    return state


def load_checkpoint(path, *, model: torch.nn.Module, encoder: Optional[str] = None,
                    optimizer=None, scheduler=None, map_location="cpu") -> dict:
    """Restore ``model`` (and optimizer/scheduler when given) from ``path``.

    CheckpointError when the checkpoint was made with another encoder than ``encoder``,
    lacks a key, or its weights do not fit the model. Returns the checkpoint dict.
    """
    state = read_checkpoint(path, map_location)
    if encoder is not None and state["encoder"] != encoder:
        raise CheckpointError(f"{path}: checkpoint of encoder {state['encoder']!r}, "
                              f"the model uses {encoder!r}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit the model "
                              f"({' '.join(first[:3])[:300]})") from None
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if state.get(name) is None:
            raise CheckpointError(f"{path}: checkpoint has no {name} state to resume from")
        try:
            obj.load_state_dict(state[name])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{path}: {name} state does not fit ({e})") from None
    return state
