"""16-bit images are scaled to 8 bits, not clipped at 255."""

import numpy as np
from PIL import Image

from fewshot_sparse.data import open_prepared, prepare
from fewshot_sparse.data.bit_depth import to_eight_bit


def test_sixteen_bit_values_are_scaled():
    v = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    out = np.asarray(to_eight_bit(Image.fromarray(v)))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1, 128, 255]]
    eight = Image.fromarray(np.array([[3, 200]], dtype=np.uint8))
    assert to_eight_bit(eight) is eight


def test_prepared_sixteen_bit_pngs_keep_their_grey_levels(tmp_path):
    root = tmp_path / "tree"
    for split in ("train",):
        for c, level in enumerate((16384, 32768, 49152)):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(2):
                img = np.full((12, 12), level, dtype=np.uint16)
                Image.fromarray(img).save(d / f"{i}.png")
    with Image.open(root / "train" / "class1" / "0.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    out = prepare("folder", root, tmp_path / "cache", image_size=12, progress=False)
    split = open_prepared(out)["train"]
    means = [float(np.asarray(split.images)[split.labels == c].mean()) for c in range(3)]
    assert np.allclose(means, [64, 128, 191], atol=1)  # clipped: 255, 255, 255
