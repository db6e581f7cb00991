"""Predict on your own images: fit a head on a labelled support folder (one subfolder per
class, any number of images per class) and classify unlabelled query images.

Images are read as ``prepare`` reads a folder tree: decoded with PIL, converted to the
channel count of the set (grey ``L`` or ``RGB``; palette and alpha images become RGB)
and resized (bilinear) to the side of the model's input; a set whose channel count is
not the model's is converted as a whole (RGB -> grey with PIL's weights, grey -> RGB),
like ``eval`` on another dataset. Mixing grey and colour images in one call is refused:
it is usually a mistake, and the conversion would hide it.

Per query image: the predicted class, the head's score (logit) per class; per class:
the features the fitted classifier uses (non-zero weight rows) ranked by that class's
weight. ``predictions.csv`` and ``predictions.json`` are written when ``out`` is given.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from fewshot_sparse.data import Normalize, PreparedSplit
from fewshot_sparse.engine.device import resolve_device
from fewshot_sparse.engine.loading import (HeadSpec, load_model, model_input_shape,
                                           replace_head)
from fewshot_sparse.errors import DataError
from fewshot_sparse.files import atomic_write_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class Prediction:
    classes: list            # class names (support subfolders, sorted)
    shots: list              # support images per class
    files: list              # query files
    predicted: list          # predicted class name per query file
    scores: list             # [Q][W] head scores (logits)
    features_per_class: dict  # class -> [[feature, weight], ...] (active rows, by weight)
    active_features: list    # indices of the features the classifier uses
    n_features: int
    head: str
    input_shape: list        # [C, H, W] fed to the model
    files_written: dict

    def table(self) -> str:
        width = max([len(Path(f).name) for f in self.files] + [5])
        cw = max([len(c) for c in self.classes] + [7])
        lines = [f"{'image':<{width}}  {'predicted':<{cw}}  " +
                 "  ".join(f"{c[:10]:>10}" for c in self.classes)]
        for f, p, s in zip(self.files, self.predicted, self.scores):
            lines.append(f"{Path(f).name:<{width}}  {p:<{cw}}  " +
                         "  ".join(f"{v:>10.3f}" for v in s))
        lines.append(f"features used: {len(self.active_features)} of {self.n_features}")
        for c in self.classes:
            top = ", ".join(f"{j} ({w:+.3f})" for j, w in self.features_per_class[c][:5])
            lines.append(f"  {c}: {top or '-'}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def list_images(path: Path, what: str) -> list[Path]:
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path}: no images ({what}; expected {', '.join(IMAGE_SUFFIXES)})")
    return files


def read_support(folder) -> tuple[list[str], list[list[Path]]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: support folder not found")
    classes = sorted(p.name for p in folder.iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{folder}: {len(classes)} class folder(s); the support set needs at "
                        f"least 2 (one subfolder per class)")
    return classes, [list_images(folder / c, f"class {c}") for c in classes]


def read_query(items: Union[str, Path, Sequence]) -> list[Path]:
    items = [items] if isinstance(items, (str, Path)) else list(items)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files += list_images(p, "query")
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: query image or folder not found")
    if not files:
        raise DataError("no query images given")
    return files


def _load(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            grey = im.mode in _GREY_MODES
            return im.convert("L" if grey else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def load_images(files: Sequence[Path], shape: Sequence[int]) -> torch.Tensor:
    """``files`` as float [N, C, H, W] in [0, 1] at the model's ``shape`` (C, H, W)."""
    c, h, w = (int(v) for v in shape)
    images = [_load(f) for f in files]
    modes = {im.mode for im in images}
    if len(modes) > 1:
        grey = next(f for f, im in zip(files, images) if im.mode == "L")
        colour = next(f for f, im in zip(files, images) if im.mode == "RGB")
        raise DataError(f"images of another channel count: {grey} is grey (1 channel) but "
                        f"{colour} is colour (3 channels); give one kind (convert them)")
    target = "L" if c == 1 else "RGB"
    arrays = []
    for im in images:
        if im.mode != target:
            im = im.convert(target)
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        arrays.append(np.asarray(im, dtype=np.uint8).reshape(h, w, c))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    return x


def _normalizer(cfg, state, support: torch.Tensor) -> Normalize:
    rec = (state or {}).get("normalize")
    if isinstance(rec, dict) and "mean" in rec and "std" in rec:
        return Normalize(rec["mean"], rec["std"])
    try:  # the training split's statistics, when that cache is still there
        train = PreparedSplit(cfg.data.root, cfg.data.train_split)
        return Normalize(train.mean, train.std)
    except (DataError, OSError):
        dims = (0, 2, 3)
        return Normalize(support.mean(dims).tolist(), support.std(dims).clamp_min(1e-3).tolist())


@torch.no_grad()
def predict(checkpoint, support, query, *, head: HeadSpec = None,
            head_kwargs: Optional[dict] = None, device: str = "auto", out=None,
            print_table: bool = True) -> Prediction:
    """Fit the checkpoint's head (or ``head``) on the ``support`` folder and classify the
    ``query`` images (files and/or folders); see the module docstring."""
    classes, per_class = read_support(support)
    files = read_query(query)
    dev = resolve_device(device)
    model, cfg, path, state = load_model(checkpoint, device=dev)
    shape = model_input_shape(model, cfg, state)
    if shape is None:
        raise DataError(f"{path}: the model does not take images (no convolution and no "
                        f"recorded input shape); predict works on image models")
    head_name, _ = replace_head(model, cfg, head, head_kwargs)
    flat = [f for fs in per_class for f in fs]
    s_img = load_images(flat + files, shape)
    q_img, s_img = s_img[len(flat):], s_img[:len(flat)]
    normalize = _normalizer(cfg, state, s_img)
    model.eval()
    feats = model.encode(normalize(torch.cat([s_img, q_img]).to(dev)))
    s_feat, q_feat = feats[:len(flat)].unsqueeze(0), feats[len(flat):].unsqueeze(0)
    labels = torch.tensor([c for c, fs in enumerate(per_class) for _ in fs], device=dev)
    out_h = model.head(q_feat, s_feat, labels.unsqueeze(0), len(classes))
    scores = out_h.logits[0].float().cpu()
    weights = out_h.weights[0].float().cpu()          # [D, W]
    active = out_h.active[0].cpu()
    idx = torch.nonzero(active).flatten().tolist()
    per_feature = {}
    for c, name in enumerate(classes):
        ranked = sorted(idx, key=lambda j: -float(weights[j, c]))
        per_feature[name] = [[int(j), round(float(weights[j, c]), 6)] for j in ranked]
    pred = Prediction(
        classes=classes, shots=[len(fs) for fs in per_class], files=[str(f) for f in files],
        predicted=[classes[int(i)] for i in scores.argmax(-1)],
        scores=[[round(float(v), 6) for v in row] for row in scores],
        features_per_class=per_feature, active_features=idx,
        n_features=int(weights.shape[0]), head=head_name, input_shape=list(shape),
        files_written={})
    if out is not None:
        pred.files_written = _write(pred, Path(out))
    if print_table:
        print(pred.table())
        if pred.files_written:
            print("written: " + ", ".join(pred.files_written.values()))
    return pred


def _write(pred: Prediction, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "predicted"] + [f"score_{c}" for c in pred.classes])
    for f, p, s in zip(pred.files, pred.predicted, pred.scores):
        w.writerow([f, p] + s)
    files = {"csv": str(out / "predictions.csv"), "json": str(out / "predictions.json")}
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    atomic_write_text(out / "predictions.json",
            json.dumps({**pred.to_dict(), "files_written": files}, indent=1) + "\n")
    return files


__all__ = ["Prediction", "load_images", "predict", "read_query", "read_support"]
