"""Solver functions run through ``torch.compile`` (opt-in: ``InteriorPointSolver(compiled=True)``;
docs/benchmarks.md, "A compiled solver").

A sync-free interior-point iteration (ipm_iteration.py) is a few hundred small tensor
operations, and so are the solver's start (ipm_start.py), the implicit gradient's
adjoint solve (group_lasso_newton.py) and, in fewshot_sparse.implicit, the backward's
pullbacks and the float32 fit's certificate; on a GPU each is a kernel launch, and their
count, more than their flops, sets the time of a solve. Inductor fuses
the elementwise chains and reductions between the matrix products and factorisations
into a few dozen kernels: the same arithmetic in another order (the plain functions are
the twins the tests compare against).

Compiling costs tens of seconds per shape, dtype and gather width (inductor keeps its
code on disk, so later processes on the same machine start faster): compiled=True is
for runs that solve the same shapes many times (meta-training, benchmarks). Where
compiling fails (no C++ compiler, an operation inductor rejects), the solver warns once
and runs the plain functions from then on in this process.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch  # (torch._dynamo loads on first use: a second of import time otherwise)

BACKEND = "inductor"
# one graph per function, shape, dtype and gather width: a run meets a few of each, more
# than dynamo's default of 8 per function
RECOMPILE_LIMIT = 64
_failed: list = []  # the first compile error of this process (then: plain functions)


def compiled_call(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` compiled whole (static shapes), or plain where compiling has
    failed in this process (with one warning, the first time)."""
    if not _failed:
        try:
            return _call_compiled(fn, args, kwargs)
        except Exception as err:  # noqa: BLE001 (any compile error: the plain twin follows)
            _failed.append(err)
            warnings.warn(f"torch.compile of the solver failed ({_root_cause(err)}); "
                          "it runs uncompiled in this process")
    return fn(*args, **kwargs)


def maybe_compiled(compiled: bool, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, through ``compiled_call`` where ``compiled``."""
    return compiled_call(fn, *args, **kwargs) if compiled else fn(*args, **kwargs)


def _call_compiled(fn: Callable, args, kwargs):
    """The compiled call, with this module's recompile limit (set and restored around it:
    ``config.patch`` costs five times as much, and every check between iterations comes
    here) and, while a profiler records, labelled "compiled <name>" (bench_kernels.py
    counts by it)."""
    config = torch._dynamo.config
    limit = config.recompile_limit
    config.recompile_limit = max(limit, RECOMPILE_LIMIT)
    try:
        if torch.autograd._profiler_enabled():
            with torch.profiler.record_function(f"compiled {fn.__name__}"):
                return _compiled(fn, BACKEND)(*args, **kwargs)
        return _compiled(fn, BACKEND)(*args, **kwargs)
    finally:
        config.recompile_limit = limit


@functools.lru_cache(maxsize=None)
def _compiled(fn: Callable, backend):
    return torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)


def _root_cause(err: BaseException) -> str:
    """"Type: first line" of the innermost cause (dynamo wraps a backend's error)."""
    while (getattr(err, "inner_exception", None) or err.__cause__) is not None:
        err = getattr(err, "inner_exception", None) or err.__cause__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
