"""A grid of identifiability benchmarks: one base config, named conditions (each a list of
``key=value`` overrides), one ``run_identifiability`` per condition in its own folder, and
one table of mean +- std over seeds per (condition, head).

A condition whose ``results.json`` already holds the same config is read back instead of
run again, so an interrupted grid resumes and the table can be rebuilt for free.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence, Union

from fewshot_sparse.identifiability.benchmark import run_identifiability
from fewshot_sparse.identifiability.config import load_identifiability_config
from fewshot_sparse.identifiability.report import json_safe, label, write_text_atomic

COLUMNS = (("accuracy", "acc"), ("active_fraction", "used"), ("mcc", "MCC"), ("r2", "R2"),
           ("dci_d", "DCI-D"), ("support_f1", "supp-F1"))


def _cached(path: Path, cfg) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    same = data.get("config") == json_safe(dataclasses.asdict(cfg))
    return data if same else None


def run_grid(base, conditions: dict, out_dir: Union[str, Path], *,
             overrides: Sequence[str] = (), progress: bool = True) -> dict:
    """Run (or read back) every condition; returns ``{"rows": [...], "table": str}`` with
    one row per (condition, head, lambda1): the summary of run_identifiability plus
    ``condition``. Writes ``grid.json`` and ``grid.md`` (the table) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, extra in conditions.items():
        sets = list(overrides) + list(extra)
        cfg = load_identifiability_config(base, sets)
        folder = out / name
        data = _cached(folder / "results.json", cfg)
        if data is None:
            if progress:
                print(f"== {name}: {' '.join(extra) or '(base)'}", flush=True)
            res = run_identifiability(cfg, (), folder, progress=progress)
            summary = res["summary"]
        else:
            summary = data["summary"]
        for s in summary:
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
    """A Markdown table: condition, head, then mean ± std of each column."""
    lines = ["| condition | head | " + " | ".join(name for _, name in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for s in rows:
        cells = [_cell(s, key) for key, _ in columns]
        lines.append(f"| {s['condition']} | {label(s['head'], s['lambda1'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
