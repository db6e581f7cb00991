"""prepare never deletes what it did not write, and a full disk or a read-only folder
gives one clear line with the previous cache intact and no partial folder left."""

import errno
import json
import os

import pytest

from fewshot_sparse.cli import main
from fewshot_sparse.data import make_fixed_episodes, open_prepared, prepare, read_manifest
from fewshot_sparse.errors import DataError, OutputError

TINY = dict(image_size=16, glyph_instances=12, glyph_max_classes=12, progress=False)
BIG = dict(image_size=48, glyph_instances=20, glyph_max_classes=20, progress=False)


def test_foreign_folder_with_a_manifest_is_refused(tmp_path):
    app = tmp_path / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "index.html").write_text("<html></html>")
    (app / "src" / "main.js").write_text("1")
    (app / "manifest.json").write_text(json.dumps({"name": "my app", "version": "1"}))
    with pytest.raises(DataError, match="webapp: exists, is not empty and is not a prepared"):
        prepare("glyphs", None, app, **TINY)
    assert sorted(p.name for p in app.iterdir()) == ["index.html", "manifest.json", "src"]
    assert (app / "src" / "main.js").read_text() == "1"
    assert not list(tmp_path.glob(".webapp.*"))


def test_forged_manifest_with_a_bad_hash_is_refused(tmp_path):
    out = prepare("glyphs", None, tmp_path / "cache", **TINY)
    m = read_manifest(out)
    m["content_hash"] = "sha256:not-a-hash"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="not a prepared cache"):
        prepare("glyphs", None, out, **TINY)


def test_reprepare_keeps_the_users_files(tmp_path):
    out = prepare("glyphs", None, tmp_path / "cache", **TINY)
    (out / "NOTES.txt").write_text("mine")
    (out / "train" / "README").write_text("also mine")
    (out / "extra").mkdir()
    (out / "extra" / "a.csv").write_text("1,2")
    saved = make_fixed_episodes(open_prepared(out)["test"], 3, 1, 1, 2, 0)
    saved.save(out / "episodes" / "test_3way1shot.npz")  # made stale by a new cache
    (out / "episodes" / "mine.npz").write_bytes(b"user data")
    h = read_manifest(out)["content_hash"]
    prepare("glyphs", None, out, **{**TINY, "image_size": 20})
    assert (out / "NOTES.txt").read_text() == "mine"
    assert (out / "train" / "README").read_text() == "also mine"
    assert (out / "extra" / "a.csv").read_text() == "1,2"
    assert sorted(p.name for p in (out / "episodes").iterdir()) == ["mine.npz"]
    assert read_manifest(out)["content_hash"] != h
    assert open_prepared(out)["train"].image_shape == (20, 20, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no temporaries


def test_file_in_the_way_of_a_split_is_refused(tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    (out / "train").write_text("a file called train")
    # Not a cache, not empty: refused before any work.
    with pytest.raises(DataError, match="refusing"):
        prepare("glyphs", None, out, **TINY)
    assert (out / "train").read_text() == "a file called train"


def check_full_disk(out, old_hash, capsys_err):
    assert read_manifest(out)["content_hash"] == old_hash  # the old cache is intact
    assert open_prepared(out)["train"].image_shape == (16, 16, 1)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no .partial-*
    lines = capsys_err.strip().splitlines()
    assert len(lines) == 1 and "no space left on device" in lines[0], capsys_err


def test_full_disk_real_tmpfs(small_disk, capsys):
    disk = small_disk("1m")
    if disk is None:
        pytest.skip("mounting a tmpfs is not permitted here (the simulated test covers it)")
    out = prepare("glyphs", None, disk / "cache", **TINY)
    h = read_manifest(out)["content_hash"]
    assert main(["prepare", "--dataset", "glyphs", "--out", str(out), "--image-size", "48",
                 "--glyph-instances", "20", "--glyph-max-classes", "20"]) == 2
    check_full_disk(out, h, capsys.readouterr().err)


def test_full_disk_simulated(tmp_path, monkeypatch, capsys):
    out = prepare("glyphs", None, tmp_path / "cache", **TINY)
    h = read_manifest(out)["content_hash"]

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OutputError, match="no space left on device"):
        prepare("glyphs", None, out, **BIG)
    assert main(["prepare", "--dataset", "glyphs", "--out", str(out), "--image-size", "48",
                 "--glyph-instances", "20", "--glyph-max-classes", "20"]) == 2
    check_full_disk(out, h, capsys.readouterr().err)


def test_read_only_folder(read_only_folder, capsys):
    assert main(["prepare", "--dataset", "glyphs", "--out", str(read_only_folder / "cache"),
                 "--image-size", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("read-only" in err[0] or "permission denied" in err[0]), err
