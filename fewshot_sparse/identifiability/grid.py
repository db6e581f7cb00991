"""A grid of identifiability benchmarks: one base config, named conditions (each a list of
``key=value`` overrides), one ``run_identifiability`` per (condition, seed) in its own
folder ``<condition>/seed=<s>``, and one table of mean +- std over seeds per
(condition, head).

A (condition, seed) whose ``results.json`` already holds the same config is read back
instead of run again, so an interrupted grid resumes, the table can be rebuilt for free,
and separate processes can run disjoint ``only_seeds`` at the same time.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Optional, Sequence, Union

from fewshot_sparse.identifiability.benchmark import run_identifiability
from fewshot_sparse.identifiability.config import load_identifiability_config
from fewshot_sparse.identifiability.report import json_safe, label, summarize, write_text_atomic

COLUMNS = (("accuracy", "acc"), ("active_fraction", "used"), ("mcc", "MCC"), ("r2", "R2"),
           ("dci_d", "DCI-D"), ("support_f1", "supp-F1"))


def _cached(path: Path, cfg) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    same = data.get("config") == json_safe(dataclasses.asdict(cfg))
    return data if same else None


def run_grid(base, conditions: dict, out_dir: Union[str, Path], *,
             overrides: Sequence[str] = (), only_seeds: Optional[Sequence[int]] = None,
             progress: bool = True) -> dict:
    """Run (or read back) every (condition, seed); with ``only_seeds``, run only those
    seeds and read back whichever others are finished. Returns ``{"rows": [...],
    "table": str}``, one row per (condition, head, lambda1): the summary over the finished
    seeds (``n_seeds`` says how many) plus ``condition``. Writes ``grid.json`` and
    ``grid.md`` (the table) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, extra in conditions.items():
        cfg = load_identifiability_config(base, list(overrides) + list(extra))
        runs = []
        for seed in cfg.seeds:
            one = dataclasses.replace(cfg, seeds=[seed])
            folder = out / name / f"seed={seed}"
            data = _cached(folder / "results.json", one)
            if data is None and (only_seeds is None or seed in only_seeds):
                if progress:
                    print(f"== {name}, seed {seed}: {' '.join(extra) or '(base)'}", flush=True)
                data = run_identifiability(one, (), folder, progress=progress)
            if data is not None:
                runs += data["rows"]
        for s in summarize(runs):
            rows.append({"condition": name, **s})
    table = format_grid(rows)
    write_text_atomic(out / "grid.json", json.dumps(json_safe(rows), indent=2) + "\n")
    write_text_atomic(out / "grid.md", table + "\n")
    if progress:
        print(table)
    return {"rows": rows, "table": table}


def _cell(s: dict, key: str) -> str:
    mean, std = s.get(key), s.get(key + "_std")
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{mean:.2f} ± {std:.2f}"


def format_grid(rows: list[dict], columns=COLUMNS) -> str:
    """A Markdown table: condition, head, seeds, then mean ± std of each column."""
    lines = ["| condition | head | seeds | " + " | ".join(name for _, name in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for s in rows:
        cells = [_cell(s, key) for key, _ in columns]
        lines.append(f"| {s['condition']} | {label(s['head'], s['lambda1'])} | {s['n_seeds']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
