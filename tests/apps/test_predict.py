"""predict on your own images: a support folder (unequal shots), query files/folders."""

from __future__ import annotations

import json
import shutil

import pytest
from _image_folders import write_classes

from fewshot_sparse.api import predict
from fewshot_sparse.cli import main


@pytest.fixture
def support(tmp_path):
    return write_classes(tmp_path / "support", n_classes=3, per_class=[1, 2, 3], size=24)


def test_query_copies_of_the_support_are_recognised(glyph_run, support, tmp_path):
    # ProtoNet with one image in class0: a copy of it sits on that prototype.
    run_dir, _ = glyph_run
    query = tmp_path / "query"
    query.mkdir()
    shutil.copy(support / "class0" / "0.png", query / "a.png")
    pred = predict(run_dir, support, query, head="protonet", device="cpu",
                   print_table=False)
    assert pred.classes == ["class0", "class1", "class2"] and pred.shots == [1, 2, 3]
    assert pred.predicted == ["class0"]
    assert max(pred.scores[0]) == pred.scores[0][0] == pytest.approx(0.0, abs=1e-4)
    assert pred.input_shape == [1, 16, 16] and pred.n_features == 8


def test_cli_predict_writes_scores_and_features(glyph_run, support, tmp_path, capsys):
    run_dir, _ = glyph_run
    queries = write_classes(tmp_path / "q", n_classes=2, per_class=2, size=30, offset=1)
    files = [str(queries / "class0" / "0.png"), str(queries / "class1")]
    assert main(["predict", "--checkpoint", str(run_dir), "--support", str(support),
                 "--query", *files, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "features used:" in out and "class2:" in out
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(record["files"]) == 3 and len(record["scores"][0]) == 3
    assert set(record["predicted"]) <= {"class0", "class1", "class2"}
    for feats in record["features_per_class"].values():
        assert {j for j, _ in feats} == set(record["active_features"])
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,predicted,score_class0,score_class1,score_class2"
    assert len(rows) == 4


def expect_error(capsys, argv, text):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fewshot-sparse: error: ") and "\n" not in err
    assert text in err, err


def test_bad_input_is_one_line(glyph_run, support, tmp_path, capsys):
    base = ["predict", "--checkpoint", str(glyph_run[0]), "--device", "cpu"]
    q = str(support / "class2" / "0.png")
    one = write_classes(tmp_path / "one", n_classes=1, per_class=2)
    expect_error(capsys, base + ["--support", str(one), "--query", q],
                 "1 class folder(s); the support set needs at least 2")
    (support / "class3").mkdir()
    expect_error(capsys, base + ["--support", str(support), "--query", q],
                 f"{support / 'class3'}: no images (class class3")
    (support / "class3").rmdir()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    expect_error(capsys, base + ["--support", str(support), "--query", str(bad)],
                 f"{bad}: unreadable image")
    grey = write_classes(tmp_path / "grey", n_classes=1, per_class=1, channels=1)
    expect_error(capsys, base + ["--support", str(support), "--query",
                                 str(grey / "class0" / "0.png")],
                 "images of another channel count")
    expect_error(capsys, base + ["--support", str(support), "--query", str(tmp_path / "nope")],
                 "query image or folder not found")
