"""prepare takes any subset of splits (a test/ folder alone is a cross-domain test set)."""

from __future__ import annotations

import json

import pytest
from _data_formats import write_folder

from fewshot_sparse.cli import main
from fewshot_sparse.data import open_prepared, prepare
from fewshot_sparse.errors import DataError


def test_folder_with_only_test_split(tmp_path, capsys):
    root = write_folder(tmp_path / "tree", size=20, splits=("test",))
    assert main(["prepare", "--dataset", "folder", "--root", str(root),
                 "--out", str(tmp_path / "cache"), "--image-size", "20"]) == 0
    out = capsys.readouterr().out
    assert "splits: test (2 classes, 8 images, 20x20x3)" in out
    assert list(open_prepared(tmp_path / "cache")) == ["test"]


def test_splits_option_picks_a_subset(tmp_path, capsys):
    root = write_folder(tmp_path / "tree", size=20)
    assert main(["prepare", "--dataset", "folder", "--root", str(root), "--splits", "val,test",
                 "--out", str(tmp_path / "cache"), "--image-size", "20"]) == 0
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert list(manifest["splits"]) == ["val", "test"]
    assert "splits: val (3 classes" in capsys.readouterr().out


def test_glyphs_subset_renders_only_that_split(tmp_path):
    out = prepare("glyphs", None, tmp_path / "g", image_size=12, glyph_instances=3,
                  glyph_max_classes=4, progress=False, splits=["test"])
    splits = open_prepared(out)
    assert list(splits) == ["test"] and splits["test"].n_classes == 4


def test_missing_split_is_named(tmp_path, capsys):
    root = write_folder(tmp_path / "tree", size=20, splits=("test",))
    assert main(["prepare", "--dataset", "folder", "--root", str(root), "--splits", "train",
                 "--out", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fewshot-sparse: error: {root}: no split 'train' (found: test)"
    assert not (tmp_path / "cache").exists()


def test_folder_without_any_split_folder(tmp_path):
    (tmp_path / "tree" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match="no train/, val/ or test/ folder"):
        prepare("folder", tmp_path / "tree", tmp_path / "cache", progress=False)
