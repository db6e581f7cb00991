"""Writers of tiny datasets in the exact published on-disk formats (test helpers).

Every image encodes its (class, instance) in its pixels so a test can check that the
prepared cache put each image under the right label: channel 0 = 10 * class + 5,
channel 1 = 3 * instance, channel 2 = 200 (flat colours survive JPEG within a few levels).
"""

from __future__ import annotations

import csv
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

MINI_SPLITS = {"train": ["n0100", "n0101", "n0102"], "val": ["n0200", "n0201"], "test": ["n0300", "n0301"]}


def image(cls: int, inst: int, size: int = 84, channels: int = 3) -> np.ndarray:
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[..., 0] = 10 * cls + 5
    img[..., 1] = (3 * inst) % 256
    img[..., 2] = 200
    return img[..., :channels]


def split_arrays(n_classes: int, per_class: int, size: int = 84, interleave: bool = True):
    """Images [N, size, size, 3] and labels; classes interleaved (row order != class order)."""
    pairs = [(c, i) for i in range(per_class) for c in range(n_classes)] if interleave else \
        [(c, i) for c in range(n_classes) for i in range(per_class)]
    images = np.stack([image(c, i, size) for c, i in pairs])
    labels = np.array([c for c, _ in pairs], dtype=np.int64)
    return images, labels


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING) and names numpy.core, as a
    pickle written under Python 2 (MetaOptNet's files) does."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2str
    dispatch[str] = save_py2str


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.", b"numpy.core.")


def write_l2l(root: Path, per_class: int = 6, val_name: str = "validation", size: int = 84) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, names in MINI_SPLITS.items():
        images, labels = split_arrays(len(names), per_class, size)
        class_dict = {n: np.nonzero(labels == c)[0].tolist() for c, n in enumerate(names)}
        fname = f"mini-imagenet-cache-{val_name if split == 'val' else split}.pkl"
        with open(root / fname, "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=4)
    return root


MOPT_FILES = {"train": "miniImageNet_category_split_train_phase_train.pickle",
              "val": "miniImageNet_category_split_val.pickle",
              "test": "miniImageNet_category_split_test.pickle"}


def write_metaoptnet_mini(root: Path, per_class: int = 6, py2: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    offset = 0
    for split, names in MINI_SPLITS.items():
        images, labels = split_arrays(len(names), per_class)
        glob = labels + offset  # Gidaris' files number val/test classes after the train ones
        d = {"data": images, "labels": glob.tolist(),
             "catname2label": {n: offset + c for c, n in enumerate(names)},
             "label2catname": {offset + c: n for c, n in enumerate(names)}}
        blob = py2_dumps(d) if py2 else pickle.dumps(d, protocol=2)
        (root / MOPT_FILES[split]).write_bytes(blob)
        offset += len(names)
    # the extra phase files MetaOptNet ships (held-out images of the train classes)
    for extra in ("val", "test"):
        (root / f"miniImageNet_category_split_train_phase_{extra}.pickle").write_bytes(b"not read")
    return root


def write_ravi(root: Path, per_class: int = 4, src_size=(100, 90)) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, names in MINI_SPLITS.items():
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            for c, name in enumerate(names):
                for i in range(per_class):
                    fn = f"{name}{i:08d}.jpg"
                    Image.fromarray(image(c, i, 1)[0, 0][None, None].repeat(src_size[1], 0).repeat(src_size[0], 1)) \
                        .save(root / "images" / fn, quality=95)
                    w.writerow([fn, name])
    return root


TIERED_SPLITS = {"train": 3, "val": 2, "test": 2}


def _tiered_labels(n_classes, per_class):
    images, labels = split_arrays(n_classes, per_class)
    return images, labels, {"label_specific": labels, "label_general": labels // 2,
                            "label_specific_str": [f"n09{c:03d}" for c in range(n_classes)],
                            "label_general_str": [f"g{c}" for c in range(n_classes)]}


def write_tiered_ren(root: Path, per_class: int = 5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, n in TIERED_SPLITS.items():
        images, labels, lab = _tiered_labels(n, per_class)
        lab["label_specific_str"] = [f"{split}_n{c:03d}" for c in range(n)]
        pngs = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))  # as cv2.imencode returns
        with open(root / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump(pngs, f, protocol=2)
        with open(root / f"{split}_labels.pkl", "wb") as f:
            pickle.dump(lab, f, protocol=2)
    return root


def write_tiered_metaoptnet(root: Path, per_class: int = 5, compressed: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    offset = 0
    for split, n in TIERED_SPLITS.items():
        images, labels = split_arrays(n, per_class)
        (np.savez_compressed if compressed else np.savez)(root / f"{split}_images.npz", images=images)
        with open(root / f"{split}_labels.pkl", "wb") as f:
            pickle.dump({"labels": (labels + offset).tolist()}, f, protocol=2)
        offset += n
    return root


def write_folder(root: Path, per_class: int = 4, size: int = 40, grey: bool = False,
                 splits=("train", "val", "test")) -> Path:
    for s, split in enumerate(splits):
        for c in range(2 + s % 2):
            d = root / split / f"{split}_class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = image(c, i, size, 1 if grey else 3)
                Image.fromarray(img[..., 0] if grey else img).save(d / f"{i}.png")
    return root
