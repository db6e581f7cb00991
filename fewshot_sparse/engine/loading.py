"""A trained model back from disk, ready to score: find the checkpoint in a run folder,
rebuild the model its config describes, load the weights, swap the head if asked, and
the input normalisation the model was trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from fewshot_sparse.config import config_from_dict
from fewshot_sparse.data import Normalize, PreparedSplit
from fewshot_sparse.engine.checkpoint import load_checkpoint, read_checkpoint
from fewshot_sparse.errors import CheckpointError, ConfigError, DataError
from fewshot_sparse.heads import HEADS, build_head
from fewshot_sparse.model import build_model, check_model_config

# A head override: None (keep the checkpoint's), a registry name, {"name", "kwargs"} or
# a (name, kwargs) pair.
HeadSpec = Union[None, str, dict, Sequence]


def find_checkpoint(path) -> Path:
    """``path`` itself when it is a file; in a run directory its ``best.pt``, else
    ``last.pt`` (else the last ``*.pt`` there or under ``checkpoints/``)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("best.pt", "last.pt", "checkpoint.pt"):
        if (path / name).is_file():
            return path / name
    cands = sorted(path.glob("*.pt")) + sorted(path.glob("checkpoints/*.pt"))
    if not cands:
        raise CheckpointError(f"no checkpoint (*.pt) in directory {path}")
    return cands[-1]


def run_dir_of(path: Path) -> Path:
    """The run directory a checkpoint file belongs to."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def load_model(checkpoint, *, device="cpu"):
    """``(model, config, checkpoint path, checkpoint dict)`` from a checkpoint file (or a
    run directory, see :func:`find_checkpoint`) written by ``engine/train.py``.

    The model is rebuilt from the checkpoint's own config (encoder, head and their
    kwargs), then its weights are loaded (CheckpointError when they do not fit).
    """
    path = find_checkpoint(checkpoint)
    state = read_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"])
        check_model_config(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config does not load ({e})") from None
    model = build_model(cfg)
    load_checkpoint(path, model=model, encoder=state["encoder"])
    state.pop("optimizer", None)
    state.pop("model", None)
    return model.to(device), cfg, path, state


def head_spec(head: HeadSpec, head_kwargs: Optional[dict] = None) -> tuple[Optional[str], dict]:
    """``(name or None, kwargs)`` of a head override."""
    if head is None:
        return None, dict(head_kwargs or {})
    if isinstance(head, str):
        return head, dict(head_kwargs or {})
    if isinstance(head, dict):
        if "name" not in head:
            raise ConfigError(f"head override {head!r} needs a 'name'")
        return head["name"], {**head.get("kwargs", {}), **(head_kwargs or {})}
    name, kw = head
    return name, {**dict(kw), **(head_kwargs or {})}


def replace_head(model, cfg, head: HeadSpec, head_kwargs: Optional[dict] = None):
    """Put the requested head on ``model`` (in place); returns ``(name, kwargs)`` of the
    head now in use.

    Another head is built fresh. The checkpoint's own head with changed options keeps
    what it learned (e.g. a learned logit scale) except the entries the change touches:
    those whose initial value differs between the head as trained and the head asked for.
    """
    name, kw = head_spec(head, head_kwargs)
    if cfg is not None:
        own_name, own_kw = cfg.head.name, dict(cfg.head.kwargs)
    else:  # an in-memory model: its head's registry name (kwargs unknown: defaults)
        own_name = next((n for n, c in HEADS.items() if type(model.head) is c),
                        type(model.head).__name__)
        own_kw = {}
    if name is None and not kw:
        return own_name, own_kw
    same = name is None or name == own_name
    if same:
        name, kw = own_name, {**own_kw, **kw}
    new = _build_head(name, kw)
    if same:
        base = _build_head(name, own_kw).state_dict()
        trained, fresh = model.head.state_dict(), new.state_dict()
        keep = {k: v for k, v in trained.items()
                if k in fresh and k in base and fresh[k].shape == v.shape
                and torch.equal(base[k], fresh[k])}
        new.load_state_dict({**fresh, **keep})
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.head = new.to(device)
    return name, kw


def _build_head(name: str, kw: dict):
    try:
        return build_head(name, **kw)
    except (TypeError, ValueError) as e:  # the head's own checks of its values
        raise ConfigError(f"head {name!r}: {e}") from None


def make_normalizer(data, split_data, ckpt_state: Optional[dict] = None, *,
                    train_root=None, channels: Optional[int] = None) -> Normalize:
    """The evaluation transform: per-channel (x - mean) / std with the statistics training
    used: the checkpoint's record of them (``normalize``, written by engine/train.py),
    else those of the training split at ``train_root`` (the cache the model was trained
    on, when it is still there), else of the training split of ``data``, else of the
    evaluated split. ``channels``: the model's input channels; statistics of another
    channel count are averaged (3 -> 1) or repeated (1 -> 3), as the images are."""
    rec = (ckpt_state or {}).get("normalize")
    if isinstance(rec, dict) and "mean" in rec and "std" in rec:
        mean, std = list(rec["mean"]), list(rec["std"])
    else:
        stats = split_data
        for root in (train_root, data):
            if root is None or getattr(split_data, "split", None) == "train" and root == data:
                continue
            try:
                stats = PreparedSplit(root, "train")
                break
            except (DataError, OSError):
                continue
        mean, std = list(stats.mean), list(stats.std)
    if channels is not None and len(mean) != channels:
        if len(mean) == 3 and channels == 1:
            mean, std = [sum(mean) / 3], [sum(std) / 3]
        elif len(mean) == 1:
            mean, std = mean * channels, std * channels
    return Normalize(mean, std)


def model_input_shape(model, cfg, ckpt_state: Optional[dict] = None) -> Optional[tuple]:
    """The ``(C, H, W)`` images the model was trained on: the checkpoint's record
    (``input_shape``), else the first convolution's input channels at the config's
    ``data.image_size``; None when unknown (an in-memory model, a vector encoder)."""
    rec = (ckpt_state or {}).get("input_shape")
    if isinstance(rec, (list, tuple)) and len(rec) == 3 and all(isinstance(v, int) for v in rec):
        return tuple(rec)
    if cfg is None:
        return None
    conv = next((m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        return None
    return (int(conv.in_channels), int(cfg.data.image_size), int(cfg.data.image_size))


__all__ = ["HeadSpec", "find_checkpoint", "head_spec", "load_model", "make_normalizer",
           "model_input_shape",
           "replace_head", "run_dir_of"]
