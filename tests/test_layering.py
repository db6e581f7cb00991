"""The declared import stack (README, "Layout") holds: walk every import of every package
file (module level and inside functions) and check where it points.

    cli -> api -> applications (apps, identifiability) -> engine -> model
        -> heads, encoders -> implicit -> solvers -> config -> files -> errors
    data:      used by model and above; imports only config, files and errors
    analysis:  pure (numpy, matplotlib); imports only files and errors; used by engine
               and above
    reference: imported by no package module (tests and users only)

An import inside a function is refused unless it is listed in LAZY with the real cost it
avoids; never to hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fewshot_sparse"

# Rank of each top-level part: a module may import only parts of lower (or equal, for
# its own part) rank. Equal ranks in different parts may not import each other.
RANK = {
    "errors": 0,
    "files": 1,      # atomic writes (no torch)
    "config": 2,
    "solvers": 3,
    "implicit": 4,
    "heads": 5,
    "encoders": 5,
    "model": 6,
    "engine": 7,
    "apps": 8,
    "identifiability": 8,
    "api": 9,
    "": 10,          # fewshot_sparse/__init__.py: lazily exposes the api
    "cli": 11,
}
# Side packages: what they may import, and the lowest rank that may import them.
SIDE = {
    "data": ({"errors", "files", "config", "data"}, RANK["model"]),
    "analysis": ({"errors", "files", "analysis"}, RANK["engine"]),
    "reference": ({"errors", "solvers", "implicit", "heads", "reference"}, None),
}

# Imports inside functions that are allowed, and the cost each one avoids.
LAZY = {
    ("fewshot_sparse", "fewshot_sparse.api"):
        "`import fewshot_sparse.solvers` must not load the engine, data and torchvision",
    ("fewshot_sparse.cli", "fewshot_sparse.api"):
        "the api loads torch (seconds); --help, --version and usage errors should not wait",
    ("fewshot_sparse.cli_jobs", "fewshot_sparse.api"):
        "the api loads torch (seconds); --help, --version and usage errors should not wait",
    ("fewshot_sparse.analysis.figures", "matplotlib"):
        "a non-interactive backend is chosen before pyplot is imported",
    ("fewshot_sparse.analysis.figures", "matplotlib.pyplot"):
        "pyplot is imported only after the backend is chosen",
    ("fewshot_sparse.data.glyphs", "matplotlib"):
        "matplotlib (font folder) loads only when glyphs are rendered",
    ("fewshot_sparse.data.glyphs", "fontTools.ttLib"):
        "fontTools loads only when glyphs are rendered",
    ("fewshot_sparse.data.glyphs", "fontTools"):
        "fontTools loads only when glyphs are rendered",
    ("fewshot_sparse.data.safe_pickle", "_codecs"):
        "names the unpickler allows, resolved only when a pickle is read",
    ("fewshot_sparse.data.safe_pickle", "numpy._core"):
        "NumPy 2 module path, tried first (NumPy 1 has numpy.core)",
    ("fewshot_sparse.data.safe_pickle", "numpy.core"):
        "NumPy 1 module path, the fallback",
    ("fewshot_sparse.engine.tb_logging", "torch.utils.tensorboard"):
        "tensorboard loads (about a second) only when a run writes events",
    ("fewshot_sparse.identifiability.report", "matplotlib"):
        "a non-interactive backend is chosen before pyplot is imported",
    ("fewshot_sparse.identifiability.report", "matplotlib.pyplot"):
        "pyplot is imported only after the backend is chosen",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts), path.name == "__init__.py"


def _imports(path: Path, module: str, is_pkg: bool):
    """``(imported module, line, inside a function)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if is_pkg else module.rpartition(".")[0]

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:  # `from pkg import submodule` names the submodule
                    sub = f"{base}.{alias.name}"
                    yield (sub if _part(sub) is not None and _existing(sub) else base,
                           child.lineno, in_function)
            yield from visit(child, inner)

    yield from visit(tree, False)


def _part(name: str):
    """Top-level part of a package module name, or None outside the package."""
    if name == "fewshot_sparse":
        return ""
    if not name.startswith("fewshot_sparse."):
        return None
    top = name.split(".")[1]
    return "cli" if top.startswith("cli_") else top  # cli_*.py: helpers of the cli layer


def _existing(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _all_imports():
    for path, module, is_pkg in _modules():
        for target, line, in_function in _imports(path, module, is_pkg):
            yield module, target, f"{path.relative_to(PACKAGE.parent)}:{line}", in_function


def _allowed(src: str, dst: str) -> bool:
    a, b = _part(src), _part(dst)
    if b is None or a == b:
        return True
    if a in SIDE:
        return b in SIDE[a][0]
    if b in SIDE:
        lowest = SIDE[b][1]
        return lowest is not None and RANK[a] >= lowest
    return RANK[a] > RANK[b]


def test_every_package_part_has_a_place_in_the_stack():
    parts = {_part(m) for _, m, _ in _modules()}
    assert parts <= set(RANK) | set(SIDE), sorted(parts - set(RANK) - set(SIDE))


def test_imports_only_go_down_the_declared_stack():
    bad = [f"{where}: {src} imports {dst}" for src, dst, where, _ in _all_imports()
           if not _allowed(src, dst)]
    assert not bad, "imports against the declared stack:\n" + "\n".join(bad)


def test_no_import_inside_a_function_without_a_stated_cost():
    bad = []
    for src, dst, where, in_function in _all_imports():
        if in_function and (src, dst) not in LAZY and not any(
                (src, d) in LAZY for d in _parents(dst)):
            bad.append(f"{where}: {src} imports {dst} inside a function")
    assert not bad, "\n".join(bad)


def _parents(name: str):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_every_lazy_import_listed_still_exists():
    seen = {(src, dst) for src, dst, _, in_function in _all_imports() if in_function}
    modules = {m for _, m, _ in _modules()}
    stale = [k for k in LAZY if k not in seen and k[0] in modules]
    assert not stale, f"LAZY lists imports that are gone: {stale}"


def test_no_import_cycle_between_modules():
    graph: dict[str, set] = {}
    for src, dst, _, _ in _all_imports():
        if _part(dst) is not None and dst != src and not dst.startswith(src + "."):
            graph.setdefault(src, set()).add(dst)
    # A package imports its own submodules in __init__; the reverse edge (a submodule
    # importing its package's __init__) would be a cycle and is reported.
    state: dict[str, int] = {}
    cycle: list = []

    def dfs(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:  # on the current path: a cycle
                cycle.extend(stack[stack.index(nxt):] + [nxt])
                return True
            if state.get(nxt) is None and dfs(nxt, stack + [nxt]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if state.get(node) is None and dfs(node, [node]):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("src,dst,ok", [
    ("fewshot_sparse.heads.ridge", "fewshot_sparse.solvers.ridge", True),
    ("fewshot_sparse.solvers.ridge", "fewshot_sparse.heads.ridge", False),
    ("fewshot_sparse.analysis.stats", "fewshot_sparse.apps.evaluate", False),
    ("fewshot_sparse.engine.train", "fewshot_sparse.data.loader", True),
    ("fewshot_sparse.heads.ridge", "fewshot_sparse.data.loader", False),
    ("fewshot_sparse.engine.train", "fewshot_sparse.reference.group_lasso_svm", False),
    ("fewshot_sparse.encoders.mlp", "fewshot_sparse.heads", False),
    ("fewshot_sparse.api", "fewshot_sparse.cli", False),
])
def test_the_rule_itself(src, dst, ok):
    assert _allowed(src, dst) is ok


def test_no_package_file_over_350_lines():
    long = [f"{p.relative_to(PACKAGE)}: {n} lines" for p, _, _ in _modules()
            if (n := len(p.read_text().splitlines())) > 350]
    assert not long, long
