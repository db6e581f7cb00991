"""Solver functions run through ``torch.compile`` (opt-in: ``InteriorPointSolver(compiled=True)``;
docs/benchmarks.md, "A compiled solver").

A sync-free interior-point iteration (ipm_iteration.py) is a few hundred small tensor
operations, and so is the solver's start (ipm_start.py); on a GPU each is a kernel
launch, and their count, more than their flops, sets the time of a solve. Inductor fuses
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

from fewshot_sparse.solvers.ipm_iteration import Options, iteration

BACKEND = "inductor"
# one graph per function, shape, dtype and gather width: a run meets a few of each, more
# than dynamo's default of 8 per function
RECOMPILE_LIMIT = 64
_failed: list = []  # the first compile error of this process (then: plain functions)


def compiled_call(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` compiled whole (static shapes), or plain where compiling has
    failed in this process (with one warning, the first time)."""
    if not _failed:
        try:  # (labelled for profilers: benchmarks/bench_kernels.py counts by it)
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT), torch.profiler.record_function(
                    f"compiled {fn.__name__}"):
                return _compiled(fn, BACKEND)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (any compile error: the plain twin follows)
            _failed.append(err)
            warnings.warn(f"torch.compile of the solver failed ({_root_cause(err)}); "
                          "it runs uncompiled in this process")
    return fn(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _compiled(fn: Callable, backend):
    return torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)


def advance(st, c, o: Options) -> None:
    """state <- iteration(state, consts), written into the state's own tensors (what
    graph_loop.py keeps): compiled, each value is stored where the loop keeps it by the
    kernel that makes it, not copied there by one more kernel. An output that is another
    key's input is copied first, as that input may be overwritten before it is read."""
    new = iteration(st, c, o)
    new = {k: v.clone() if any(v is t for j, t in st.items() if j != k) else v for k, v in new.items()}
    for k, v in new.items():
        if v is not st[k]:
            st[k].copy_(v)


class CompiledIteration:
    """``step(state, consts) -> state`` for graph_loop.py: ``iteration`` with options
    ``o``, compiled, written into ``state``'s tensors (returns ``state``)."""

    def __init__(self, o: Options):
        self.o = o

    def __call__(self, st, c):
        compiled_call(advance, st, c, o=self.o)
        return st


def _root_cause(err: BaseException) -> str:
    """"Type: first line" of the innermost cause (dynamo wraps a backend's error)."""
    while (getattr(err, "inner_exception", None) or err.__cause__) is not None:
        err = getattr(err, "inner_exception", None) or err.__cause__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
