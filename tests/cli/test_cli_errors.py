"""The command line: help works; user errors exit 2 with one line on stderr, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_sparse.cli import build_parser, main, parse_assignments
from fewshot_sparse.errors import FewshotSparseError

COMMANDS = ["prepare", "train", "eval", "inspect", "identifiability", "demo"]


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fewshot_sparse.cli", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_every_command():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    for cmd in COMMANDS:
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert cmd in capsys.readouterr().out


def _assert_user_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fewshot-sparse: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def test_missing_checkpoint(capsys, tmp_path):
    _assert_user_error(capsys, ["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--quiet"],
                       "nope.pt")
    _assert_user_error(capsys, ["inspect", "--checkpoint", str(tmp_path / "nope.pt"),
                                "--quiet"], "nope.pt")


def test_corrupt_checkpoint(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    _assert_user_error(capsys, ["eval", "--checkpoint", str(bad), "--quiet"], "bad.pt")


def test_unknown_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"train": {"epochz": 3}}')
    _assert_user_error(capsys, ["train", "--config", str(cfg)], "epochz")
    _assert_user_error(capsys, ["train", "--config", str(cfg.with_name("none.json"))])
    ok = tmp_path / "ok.json"
    ok.write_text("{}")
    _assert_user_error(capsys, ["train", "--config", str(ok), "--set", "train.nope=1"],
                       "train.nope")


def test_not_a_prepared_cache(capsys, tmp_path):
    folder = tmp_path / "random"
    folder.mkdir()
    (folder / "x.txt").write_text("hello")
    _assert_user_error(capsys, ["prepare", "--dataset", "glyphs", "--out", str(folder)],
                       str(folder))


def test_bad_usage_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval"])  # --checkpoint missing
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["eval", "--checkpoint", "x", "--shot", "1,a"])
    assert e.value.code == 2


def test_subprocess_error_has_no_traceback(tmp_path):
    r = _run("eval", "--checkpoint", str(tmp_path / "missing.pt"), "--quiet")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("fewshot-sparse: error:")
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_parse_assignments():
    assert parse_assignments(["lambda1=0.5", "learn_scale=true", "name=x"]) == {
        "lambda1": 0.5, "learn_scale": True, "name": "x"}
    with pytest.raises(FewshotSparseError):
        parse_assignments(["novalue"])


def test_parser_defaults():
    a = build_parser().parse_args(["eval", "--checkpoint", "c.pt"])
    assert (a.way, a.shot, a.query, a.episodes) == (5, [1, 5], 15, 1000)


THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _faults_touching_64mb_after_the_cli(env):
    """In a fresh interpreter: run the CLI (``--version``), then count the page faults of
    torch zero-filling a new 64 MB tensor (16,384 with 4 kB pages, ~32 with 2 MB ones)."""
    code = ("import resource\nfrom fewshot_sparse.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "import torch\nf = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "torch.zeros(64 << 20, dtype=torch.uint8)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


@pytest.mark.skipif(not THP_MODE.exists() or "[madvise]" not in THP_MODE.read_text(),
                    reason="the kernel's transparent huge pages are not in madvise mode")
def test_the_command_puts_large_tensors_on_huge_pages_unless_the_user_said_no():
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    on = _faults_touching_64mb_after_the_cli(env)
    off = _faults_touching_64mb_after_the_cli({**env, "THP_MEM_ALLOC_ENABLE": "0"})
    assert off > 8000 and on < off / 8, (on, off)
