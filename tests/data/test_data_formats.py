"""Every supported on-disk format, written tiny by the tests, read through prepare()."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import numpy as np
import pytest

from _data_formats import (MINI_SPLITS, TIERED_SPLITS, image, py2_dumps, write_folder, write_l2l,
                           write_metaoptnet_mini, write_ravi, write_tiered_metaoptnet, write_tiered_ren)
from fewshot_sparse.data import DataWarning, PreparedSplit, open_prepared, prepare, read_manifest
from fewshot_sparse.data.safe_pickle import safe_load, safe_loads
from fewshot_sparse.errors import DataError


def run_prepare(*args, **kw):
    """prepare() with the expected published-count warnings (tiny sets) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return prepare(*args, progress=False, **kw)


def check_cache(out, class_names, per_class, *, size=84, channels=3, tol=0):
    splits = open_prepared(out)
    assert list(splits) == ["train", "val", "test"]
    for split, names in class_names.items():
        s = splits[split]
        assert isinstance(s.images, np.memmap)
        assert s.images.dtype == np.uint8 and s.image_shape == (size, size, channels)
        assert s.labels.dtype == np.int64
        assert s.class_names == names
        assert s.class_counts.tolist() == [per_class] * len(names)
        # every image sits under the label it was written with (class code in channel 0)
        code = s.images[:, size // 2, size // 2, 0].astype(int)
        np.testing.assert_allclose(code, 10 * s.labels + 5, atol=tol)
    return splits


def test_learn2learn_mini(tmp_path):
    root = write_l2l(tmp_path / "mini")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = prepare("miniimagenet", root, tmp_path / "cache", progress=False)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert "miniimagenet split train: 3 classes / 18 images, published 64 / 38400" in msgs and len(msgs) == 3
    check_cache(out, MINI_SPLITS, 6)
    m = read_manifest(out)
    assert m["source_format"] == "learn2learn" and m["dataset"] == "miniimagenet"
    assert m["content_hash"].startswith("sha256:")
    assert m["splits"]["val"]["class_counts"] == [6, 6]
    assert (out / "train" / "images.npy").is_file() and (out / "train" / "labels.npy").is_file()
    # exact pixels survive (lossless format)
    s = PreparedSplit(out, "train")
    i = int(s.indices_by_class[2][1])
    assert np.array_equal(s.images[i], image(2, 1))


def test_torchmeta_val_name_and_explicit_format(tmp_path):
    root = write_l2l(tmp_path / "mini", val_name="val")
    out = run_prepare("miniimagenet", root, tmp_path / "cache", fmt="l2l")
    check_cache(out, MINI_SPLITS, 6)


def test_metaoptnet_mini_python2_pickle(tmp_path):
    root = write_metaoptnet_mini(tmp_path / "mopt", py2=True)
    with pytest.raises(UnicodeDecodeError):  # really a Python 2 pickle: needs latin1
        pickle.loads((root / "miniImageNet_category_split_val.pickle").read_bytes())
    out = run_prepare("miniimagenet", root, tmp_path / "cache")
    assert read_manifest(out)["source_format"] == "metaoptnet"
    check_cache(out, MINI_SPLITS, 6)


def test_metaoptnet_mini_python3_pickle(tmp_path):
    root = write_metaoptnet_mini(tmp_path / "mopt", py2=False)
    check_cache(run_prepare("miniimagenet", root, tmp_path / "cache", fmt="metaoptnet"), MINI_SPLITS, 6)


def test_ravi_csv_jpegs_resized(tmp_path):
    root = write_ravi(tmp_path / "ravi", per_class=3, src_size=(100, 90))
    out = run_prepare("miniimagenet", root, tmp_path / "cache")
    assert read_manifest(out)["source_format"] == "ravi"
    check_cache(out, MINI_SPLITS, 3, tol=3)
    out = run_prepare("miniimagenet", root, tmp_path / "c32", image_size=32)
    check_cache(out, MINI_SPLITS, 3, size=32, tol=3)


def tiered_names(prefix_split=True):
    return {s: [f"{s}_n{c:03d}" for c in range(n)] for s, n in TIERED_SPLITS.items()}


def test_tiered_ren_png_pickles(tmp_path):
    root = write_tiered_ren(tmp_path / "tiered")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = prepare("tieredimagenet", root, tmp_path / "cache", progress=False)
    assert [str(w.message).split(":")[0] for w in caught] == [f"tieredimagenet split {s}" for s in TIERED_SPLITS]
    assert read_manifest(out)["source_format"] == "ren"
    check_cache(out, tiered_names(), 5)


@pytest.mark.parametrize("compressed", [True, False])
def test_tiered_metaoptnet_npz(tmp_path, compressed):
    root = write_tiered_metaoptnet(tmp_path / "tiered", compressed=compressed)
    out = run_prepare("tieredimagenet", root, tmp_path / "cache")
    assert read_manifest(out)["source_format"] == "metaoptnet"
    names = {"train": ["train/0", "train/1", "train/2"], "val": ["val/3", "val/4"], "test": ["test/5", "test/6"]}
    check_cache(out, names, 5)


def test_folder_tree_rgb_and_grey(tmp_path):
    root = write_folder(tmp_path / "tree", size=40)
    out = run_prepare("folder", root, tmp_path / "cache", image_size=40)
    names = {s: [f"{s}_class{c}" for c in range(2 + i % 2)] for i, s in enumerate(["train", "val", "test"])}
    check_cache(out, names, 4, size=40)
    grey = write_folder(tmp_path / "grey", size=28, grey=True)
    out = run_prepare("folder", grey, tmp_path / "gcache", image_size=28)
    check_cache(out, names, 4, size=28, channels=1)


def test_folder_without_val_test(tmp_path):
    root = write_folder(tmp_path / "tree", splits=("train",))
    out = run_prepare("folder", root, tmp_path / "cache")
    assert list(open_prepared(out)) == ["train"]
    assert open_prepared(out)["train"].image_shape == (84, 84, 3)


def test_reprepare_replaces_cache_and_refuses_foreign_folder(tmp_path):
    root = write_l2l(tmp_path / "mini")
    out = run_prepare("miniimagenet", root, tmp_path / "cache")
    h1 = read_manifest(out)["content_hash"]
    out = run_prepare("miniimagenet", root, tmp_path / "cache")
    assert read_manifest(out)["content_hash"] == h1  # deterministic content hash
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a prepared cache"):
        run_prepare("miniimagenet", root, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------- broken inputs

def assert_clean(tmp_path, name="cache"):
    """A failed prepare leaves neither the output nor a temporary folder behind."""
    assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]


def expect_error(tmp_path, dataset, root, match, **kw):
    with pytest.raises(DataError, match=match) as err:
        run_prepare(dataset, root, tmp_path / "cache", **kw)
    assert "\n" not in str(err.value)
    assert_clean(tmp_path)
    return err


def test_missing_file(tmp_path):
    root = write_l2l(tmp_path / "mini")
    os.remove(root / "mini-imagenet-cache-test.pkl")
    expect_error(tmp_path, "miniimagenet", root, r"missing mini-imagenet-cache-test\.pkl \(split test\)")


def test_no_recognised_files(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path, "miniimagenet", tmp_path / "empty", "no miniimagenet files found")
    expect_error(tmp_path, "tieredimagenet", tmp_path / "nowhere", "folder not found")
    expect_error(tmp_path, "imagenet", tmp_path, "unknown dataset")
    expect_error(tmp_path, "miniimagenet", tmp_path / "empty", "unknown miniimagenet format", fmt="hdf5")


def rewrite(path, fn):
    with open(path, "rb") as f:
        d = pickle.load(f)
    d = fn(d)
    with open(path, "wb") as f:
        pickle.dump(d, f)


def test_wrong_key(tmp_path):
    root = write_l2l(tmp_path / "mini")
    rewrite(root / "mini-imagenet-cache-validation.pkl", lambda d: {"images": d["image_data"], "class_dict": d["class_dict"]})
    expect_error(tmp_path, "miniimagenet", root, r"validation\.pkl: missing key 'image_data'")


def test_wrong_dtype(tmp_path):
    root = write_l2l(tmp_path / "mini")
    rewrite(root / "mini-imagenet-cache-train.pkl", lambda d: {**d, "image_data": d["image_data"].astype(np.float32)})
    expect_error(tmp_path, "miniimagenet", root, r"train\.pkl: 'image_data' has dtype float32, expected uint8")


def test_wrong_shape(tmp_path):
    root = write_l2l(tmp_path / "mini")
    rewrite(root / "mini-imagenet-cache-train.pkl", lambda d: {**d, "image_data": d["image_data"][..., 0]})
    expect_error(tmp_path, "miniimagenet", root, r"'image_data' has shape \(18, 84, 84\)")
    root = write_l2l(tmp_path / "mini80", size=80)
    expect_error(tmp_path, "miniimagenet", root, "holds 80x80 images, expected 84x84")


def test_bad_class_dict_rows(tmp_path):
    root = write_l2l(tmp_path / "mini")
    rewrite(root / "mini-imagenet-cache-test.pkl", lambda d: {**d, "class_dict": {**d["class_dict"], "n0300": [0, 99]}})
    expect_error(tmp_path, "miniimagenet", root, r"class_dict\['n0300'\] names row 99")


def test_metaoptnet_label_count_mismatch(tmp_path):
    root = write_metaoptnet_mini(tmp_path / "mopt", py2=False)
    rewrite(root / "miniImageNet_category_split_test.pickle", lambda d: {**d, "labels": d["labels"][:-1]})
    expect_error(tmp_path, "miniimagenet", root, r"'labels' has shape \(11,\), expected \(12,\)")


def test_corrupt_pickle(tmp_path):
    root = write_l2l(tmp_path / "mini")
    p = root / "mini-imagenet-cache-train.pkl"
    p.write_bytes(p.read_bytes()[:5000])
    expect_error(tmp_path, "miniimagenet", root, r"train\.pkl: not a readable pickle")


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_refused(tmp_path):
    root = write_l2l(tmp_path / "mini")
    target = tmp_path / "pwned"
    with open(root / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"image_data": Evil(target), "class_dict": {}}, f)
    expect_error(tmp_path, "miniimagenet", root, r"train\.pkl: refused to unpickle (posix|os|nt)\.system")
    assert not target.exists()
    with pytest.raises(DataError, match="refused to unpickle builtins.eval"):
        safe_loads(pickle.dumps(_EvalReduce()))


class _EvalReduce:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_safe_pickle_allows_data(tmp_path):
    d = {"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "s": np.int64(3), "l": [1, 2.5, "x", b"y"],
         "t": (1,), "set": {1, 2}, "dt": np.dtype("<f4")}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        back = safe_loads(pickle.dumps(d, protocol=protocol))
        assert np.array_equal(back["a"], d["a"]) and back["l"] == d["l"] and back["set"] == {1, 2}
    back = safe_loads(py2_dumps(d))  # Python 2 str -> latin1 fallback
    assert np.array_equal(back["a"], d["a"]) and back["l"][2] == "x"
    with pytest.raises(DataError, match="file not found"):
        safe_load(tmp_path / "nope.pkl")


def test_corrupt_png(tmp_path):
    root = write_tiered_ren(tmp_path / "tiered")
    p = root / "val_images_png.pkl"
    with open(p, "rb") as f:
        items = pickle.load(f)
    items[3] = np.frombuffer(b"\x89PNG\r\n\x1a\nbroken", dtype=np.uint8)
    with open(p, "wb") as f:
        pickle.dump(items, f)
    expect_error(tmp_path, "tieredimagenet", root, r"val_images_png\.pkl image 3 \(split val, class val_n\d+\): unreadable image")


def test_tiered_labels_wrong_key_and_length(tmp_path):
    root = write_tiered_ren(tmp_path / "tiered")
    rewrite(root / "test_labels.pkl", lambda d: {"specific": d["label_specific"]})
    expect_error(tmp_path, "tieredimagenet", root, r"test_labels\.pkl: missing key 'label_specific'")
    root = write_tiered_ren(tmp_path / "tiered2")
    rewrite(root / "train_labels.pkl", lambda d: {**d, "label_specific": d["label_specific"][:-2]})
    expect_error(tmp_path, "tieredimagenet", root, r"train_images_png\.pkl: holds 15 images but train_labels\.pkl has 13")


def test_npz_wrong_key_and_dtype(tmp_path):
    root = write_tiered_metaoptnet(tmp_path / "t")
    np.savez(root / "val_images.npz", data=np.zeros((10, 84, 84, 3), np.uint8))
    expect_error(tmp_path, "tieredimagenet", root, r"val_images\.npz: missing key 'images'")
    np.savez(root / "val_images.npz", images=np.zeros((10, 84, 84, 3), np.float64))
    expect_error(tmp_path, "tieredimagenet", root, r"val_images\.npz: 'images' has dtype float64")


def test_csv_missing_and_unreadable_image(tmp_path):
    root = write_ravi(tmp_path / "ravi", per_class=2)
    os.remove(root / "images" / "n020000000001.jpg")
    expect_error(tmp_path, "miniimagenet", root, r"n020000000001\.jpg: missing image \(split val, class n0200\)")
    root = write_ravi(tmp_path / "ravi2", per_class=2)
    (root / "images" / "n030100000000.jpg").write_bytes(b"not a jpeg")
    expect_error(tmp_path, "miniimagenet", root, r"n030100000000\.jpg \(split test, class n0301\): unreadable image")
    (root / "train.csv").write_text("file,class\n")
    expect_error(tmp_path, "miniimagenet", root, "header 'filename,label'")


def test_overlapping_classes_across_splits(tmp_path):
    root = write_tiered_ren(tmp_path / "tiered")
    rewrite(root / "test_labels.pkl", lambda d: {**d, "label_specific_str": ["train_n001", "test_n001"]})
    expect_error(tmp_path, "tieredimagenet", root, r"class 'train_n001' is in both split train and split test")


def test_not_a_cache(tmp_path):
    with pytest.raises(DataError, match=r"not a prepared cache \(no manifest.json\)"):
        open_prepared(tmp_path)
    out = run_prepare("miniimagenet", write_l2l(tmp_path / "mini"), tmp_path / "cache")
    with pytest.raises(DataError, match="no split 'extra'"):
        PreparedSplit(out, "extra")
    m = json.loads((out / "manifest.json").read_text())
    m["format"] = "something else"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="manifest"):
        open_prepared(out)


@pytest.mark.parametrize("writer,dataset,names", [
    (write_l2l, "miniimagenet", MINI_SPLITS),
    (write_tiered_ren, "tieredimagenet", tiered_names()),
    (write_tiered_metaoptnet, "tieredimagenet",
     {"train": ["train/0", "train/1", "train/2"], "val": ["val/3", "val/4"], "test": ["test/5", "test/6"]}),
])
def test_streams_in_chunks(tmp_path, monkeypatch, writer, dataset, names):
    """Splits larger than one chunk are streamed piecewise into the memory map."""
    import fewshot_sparse.data.readers.common as readers

    monkeypatch.setattr(readers, "CHUNK", 4)
    root = writer(tmp_path / "src")
    per_class = 6 if dataset == "miniimagenet" else 5
    check_cache(run_prepare(dataset, root, tmp_path / "cache"), names, per_class)
