"""Checkpoints: written atomically (temporary file, then ``os.replace``), so a run killed
while saving leaves the previous checkpoint intact.

Contents: ``model``, ``optimizer`` and ``scheduler`` state dicts, ``epoch`` (epochs
completed), ``global_step``, ``best_accuracy``, ``rng`` (torch CPU/CUDA generator states
at the time of saving), ``config`` (the run's Config as a dict), ``encoder`` (the encoder's
registry name) and ``format`` (a version number).

The training loop does not need ``rng`` to resume exactly: it reseeds torch's global
generator at the start of each epoch from (seed, epoch, rank), see ``engine/train.py``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Optional

import torch

from fewshot_sparse.errors import CheckpointError

FORMAT = 1
REQUIRED = ("format", "model", "epoch", "global_step", "config", "encoder")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(path, *, model: torch.nn.Module, epoch: int, global_step: int,
                    config: dict, encoder: str, optimizer=None, scheduler=None,
                    best_accuracy: Optional[float] = None, extra: Optional[dict] = None) -> Path:
    """Write a checkpoint to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": int(epoch),
        "global_step": int(global_step),
        "best_accuracy": best_accuracy,
        "rng": rng_state(),
        "config": config,
        "encoder": encoder,
        **(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint's dict, checked for the required keys (CheckpointError if not)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a fewshot-sparse checkpoint")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']}, "
                              f"this version reads {FORMAT}")
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
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: {name} state does not fit ({e})") from None
    return state
