"""Evaluating on another dataset: a test-only image folder, fed at the model's input
shape (a 16x16 grey model on 40x40 RGB images), with the shapes and hash on record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _image_folders import pattern, write_classes
from PIL import Image

from fewshot_sparse.api import evaluate, feature_usage, prepare
from fewshot_sparse.cli import main
from fewshot_sparse.data import read_manifest
from fewshot_sparse.data.augment import Normalize
from fewshot_sparse.data.input_shape import FitInput, fit_images, input_transform
from fewshot_sparse.errors import DataError


@pytest.fixture(scope="module")
def rgb_test_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("xdomain")
    write_classes(root / "src" / "test", n_classes=4, per_class=5, size=40)
    return prepare("folder", root / "src", root / "cache", image_size=40, progress=False)


def test_eval_feeds_the_checkpoint_input_shape(glyph_run, rgb_test_set, tmp_path, capsys):
    run_dir, _ = glyph_run
    assert main(["eval", "--checkpoint", str(run_dir), "--data", str(rgb_test_set),
                 "--way", "3", "--shot", "1", "--query", "2", "--episodes", "4",
                 "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "holds 40x40x3 images; the model was trained on 16x16x1" in out
    assert "input: 16x16x1 (from 40x40x3)" in out
    record = json.loads(next(tmp_path.glob("eval_*.json")).read_text())
    assert record["input_shape"] == [1, 16, 16] and record["data_shape"] == [3, 40, 40]
    assert record["data_hash"] == read_manifest(rgb_test_set)["content_hash"]
    # Conv-4 with 8 channels: 8 features at 16x16 (it would be 32 at 40x40).
    assert record["results"][0]["n_features"] == 8


def test_same_shape_data_is_only_normalised(glyph_run, tmp_path):
    run_dir, cache = glyph_run
    rep = evaluate(run_dir, data=cache, way=3, shots=[1], query=2, episodes=2,
                   progress=False, print_table=False, out_dir=tmp_path)
    assert rep.input_shape == rep.data_shape == [1, 16, 16]
    norm = Normalize([0.5], [0.25])
    assert input_transform((1, 16, 16), (1, 16, 16), norm) is norm


def test_inspect_records_the_shapes(glyph_run, rgb_test_set, tmp_path):
    run_dir, _ = glyph_run
    rep = feature_usage(run_dir, data=rgb_test_set, episodes=3, way=3, shot=1, query=2,
                        out_dir=tmp_path / "inspect", progress=False)
    assert rep.stats.meta["input_shape"] == [1, 16, 16]
    assert rep.stats.meta["data_shape"] == [3, 40, 40]
    assert rep.stats.active.shape[1] == 8


def test_conversion_matches_pil_at_prepare_time():
    img = pattern(2, 1, 40)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    grey = fit_images(x, (1, 40, 40))[0].numpy()
    pil_grey = np.asarray(Image.fromarray(img).convert("L"), dtype=np.float64) / 255
    assert np.abs(grey - pil_grey).max() < 1.5 / 255
    small = fit_images(x, (3, 20, 20)).permute(1, 2, 0).numpy()
    pil_small = np.asarray(Image.fromarray(img).resize((20, 20), Image.Resampling.BILINEAR),
                           dtype=np.float64) / 255
    assert np.abs(small - pil_small).mean() < 0.02
    rgb = FitInput((3, 8, 8))(torch.rand(2, 5, 1, 8, 8))
    assert rgb.shape == (2, 5, 3, 8, 8) and torch.equal(rgb[:, :, 0], rgb[:, :, 2])


def test_shapes_that_cannot_be_converted_name_both():
    with pytest.raises(DataError, match=r"holds \(3, 40, 40\) inputs but the model takes "
                                        r"\(2, 16, 16\)"):
        input_transform((3, 40, 40), (2, 16, 16), None, where="the data")


def test_checkpoint_without_records_falls_back_to_its_config(glyph_run, rgb_test_set, tmp_path):
    # Checkpoints written before input_shape / normalize were recorded: the shape comes
    # from the first convolution and data.image_size, the statistics from the training
    # cache the config names (grey, while the evaluated images are RGB).
    from fewshot_sparse.engine.checkpoint import read_checkpoint

    run_dir, _ = glyph_run
    state = read_checkpoint(run_dir / "last.pt")
    for key in ("input_shape", "normalize", "data_hash"):
        state.pop(key, None)
    old = tmp_path / "old.pt"
    torch.save(state, old)
    rep = evaluate(old, data=rgb_test_set, way=3, shots=[1], query=2, episodes=4,
                   progress=False, print_table=False, out_dir=tmp_path / "eval")
    assert rep.input_shape == [1, 16, 16] and rep.result(1).n_features == 8
