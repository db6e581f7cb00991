"""``run_demo``: the main job end to end on the built-in glyph dataset (what
``fewshot-sparse demo`` runs): prepare -> train -> evaluate two heads -> inspect."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fewshot_sparse.apps.evaluate import evaluate
from fewshot_sparse.apps.inspect import feature_usage
from fewshot_sparse.config import load_config
from fewshot_sparse.data import open_prepared, prepare
from fewshot_sparse.engine.checkpoint import read_checkpoint
from fewshot_sparse.engine.train import train
from fewshot_sparse.errors import FewshotSparseError


def _is_prepared(path: Path) -> bool:
    """True when ``path`` holds a prepared cache; False when it does not exist.
    A folder that exists but is no prepared cache raises the data package's DataError."""
    if not path.exists():
        return False
    open_prepared(path)
    return True


def _finished_epochs(ckpt: Path) -> int:
    return int(read_checkpoint(ckpt)["epoch"])


def run_demo(out="runs/demo", *, data=None, overrides: Sequence[str] = (),
             episodes: int = 1000, inspect_episodes: int = 300, resume: bool = False,
             device: str = "auto", progress: bool = True, shots: Sequence[int] = (1, 5),
             recipe: str = "demo_glyphs") -> dict:
    """Glyphs -> train -> evaluate (group-Lasso head and ProtoNet head, same encoder) ->
    inspect. Re-running it reuses what is already there (prepared data, a finished run;
    an unfinished run is resumed). ``episodes``: test episodes per shot (the protocol's 1000).
    Returns the paths written and the eval reports."""
    out = Path(out)
    data = Path(data) if data is not None else out / "data" / "glyphs"
    say = print

    # 1. data
    if _is_prepared(data):
        say(f"[1/4] glyphs already prepared at {data}")
    else:
        say(f"[1/4] rendering the glyph dataset into {data} ...")
        prepare("glyphs", None, data, progress=progress)

    # 2. train
    run_dir = out / "run"
    cfg = load_config(recipe, [f"data.root={data}", f"out_dir={run_dir}",
                               *([f"train.device={device}"] if device != "auto" else []),
                               *overrides])
    last = run_dir / "last.pt"
    if last.is_file() and _finished_epochs(last) >= cfg.train.epochs and not resume:
        say(f"[2/4] training already finished: {run_dir}")
    else:
        again = last.is_file()
        say(f"[2/4] {'resuming' if again else 'meta-training'} {cfg.encoder.name} + "
            f"{cfg.head.name} for {cfg.train.epochs} epochs -> {run_dir}")
        train(cfg, resume=again, progress=progress)
    ckpt = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else last
    if not ckpt.is_file():
        raise FewshotSparseError(f"training wrote no checkpoint in {run_dir}")

    # 3. evaluate the trained head and ProtoNet on the same encoder
    say(f"[3/4] evaluating {ckpt} on {episodes} test episodes per shot")
    eval_dir = out / "eval"
    reports = {}
    for head in (None, "protonet"):
        rep = evaluate(ckpt, data=data, way=5, shots=shots, query=15, episodes=episodes,
                       head=head, device=device, out_dir=eval_dir, progress=progress)
        reports[rep.head] = rep
        say("")

    # 4. inspect feature usage of the trained (sparse) head
    say(f"[4/4] per-task feature usage on {inspect_episodes} test episodes")
    usage = {}
    for shot in shots:
        u = feature_usage(ckpt, data=data, episodes=inspect_episodes, way=5, shot=shot,
                          query=15, device=device, progress=progress,
                          out_dir=out / "inspect" / f"{cfg.head.name}_5way{shot}shot")
        usage[shot] = u
        say(u.summary)
        say("")

    say("demo finished. Written:")
    say(f"  prepared data        {data}")
    say(f"  run (checkpoints)    {run_dir}   (tensorboard --logdir {run_dir / 'tb'})")
    for name, rep in reports.items():
        say(f"  eval {name:<15} {rep.json_path}")
    for shot, u in usage.items():
        say(f"  inspect {shot}-shot       {u.out_dir}/  "
            f"({', '.join(p.name for k, p in u.paths.items() if p.suffix == '.png')})")
    say("")
    say(_comparison(reports))
    return {"data": data, "run_dir": run_dir, "checkpoint": ckpt, "eval": reports,
            "inspect": usage}


def _comparison(reports: dict) -> str:
    """One line per (head, shot): accuracy +- CI and features used."""
    lines = ["5-way test accuracy (mean +- 95% CI) and features used per task:"]
    for name, rep in reports.items():
        for r in rep.results:
            lines.append(f"  {name:<16} {r.shot}-shot  {100 * r.accuracy:6.2f} +- "
                         f"{100 * r.ci95:4.2f}%   features used {100 * r.active_fraction:5.1f}%")
    return "\n".join(lines)


__all__ = ["run_demo"]
