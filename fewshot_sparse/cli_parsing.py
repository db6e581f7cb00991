"""Argument types and value parsing shared by the command-line modules (cli.py,
cli_jobs.py)."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from fewshot_sparse.config import parse_value, split_assignment
from fewshot_sparse.errors import FewshotSparseError


class UserError(FewshotSparseError):
    """A bad command-line value found by the CLI itself."""


def int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def name_list(text: str) -> list[str]:
    vals = [v for v in text.replace(" ", "").split(",") if v]
    if not vals:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return vals


def parse_assignments(items: Optional[Sequence[str]], what: str = "--head-set") -> dict:
    """``["k=v", ...]`` -> dict; values are JSON when they parse (0.1, true, [1,2])."""
    out = {}
    for item in items or []:
        key, text = split_assignment(item, what, "key=value")
        out[key] = parse_value(text)
    return out


def float_grid(text: str) -> list[float]:
    """``0.1,0.2,0.5`` or ``geom:START:STOP:N`` (N values spaced geometrically from START
    to STOP, both > 0)."""
    text = text.replace(" ", "")
    try:
        if text.startswith("geom:"):
            start, stop, n = text[5:].split(":")
            start, stop, n = float(start), float(stop), int(n)
            if start <= 0 or stop <= 0 or n < 1:
                raise ValueError
            if n == 1:
                return [start]
            ratio = (stop / start) ** (1.0 / (n - 1))
            return [start * ratio ** i for i in range(n)]
        vals = [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers or geom:START:STOP:N, got {text!r}")
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals
