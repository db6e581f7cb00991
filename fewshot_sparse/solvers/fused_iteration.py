"""The interior-point iteration fused by ``torch.compile`` (opt-in:
``InteriorPointSolver(compiled=True)``; docs/benchmarks.md, "Fused iterations").

One sync-free iteration (ipm_iteration.py) is a few hundred small tensor operations; on a
GPU each is a kernel launch, and their count, more than their flops, sets the time of a
solve. Inductor fuses the elementwise chains and reductions between the matrix products
and factorisations into a few dozen kernels, the same arithmetic in another order (the
iterates agree with the plain iteration's to round-off; the tests compare them).

Compiling costs tens of seconds per shape, dtype and gather width (inductor keeps its
code on disk, so later processes on the same machine start faster); a solve with
compiled=True is for runs that solve the same shapes many times (meta-training,
benchmarks). Where compiling fails (no C++ compiler, an operation inductor rejects), the
solver warns once and runs the plain iteration from then on in this process.
"""

from __future__ import annotations

import functools
import warnings

import torch  # (torch._dynamo loads on first use: a second of import time otherwise)

from fewshot_sparse.solvers.ipm_iteration import Options, iteration

BACKEND = "inductor"
# one graph per shape, dtype and gather width: a run meets a few of each, more than
# dynamo's default of 8 per function
RECOMPILE_LIMIT = 64
_failed: list = []  # the first compile error of this process (then: plain iterations)


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


@functools.lru_cache(maxsize=None)
def _compiled(backend):
    return torch.compile(advance, backend=backend, fullgraph=True, dynamic=False)


class FusedIteration:
    """``step(state, consts) -> state``: ``iteration`` with options ``o``, compiled and
    written into ``state``'s tensors (returns ``state``)."""

    def __init__(self, o: Options):
        self.o = o

    def __call__(self, st, c):
        if not _failed:
            try:
                with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                    _compiled(BACKEND)(st, c, o=self.o)
                return st
            except Exception as err:  # noqa: BLE001 (any compile error: the plain twin follows)
                _failed.append(err)
                warnings.warn(f"torch.compile of the solver iteration failed ({_root_cause(err)}); "
                              "the iterations run uncompiled in this process")
        return iteration(st, c, o=self.o)


def _root_cause(err: BaseException) -> str:
    """"Type: first line" of the innermost cause (dynamo wraps a backend's error)."""
    while (getattr(err, "inner_exception", None) or err.__cause__) is not None:
        err = getattr(err, "inner_exception", None) or err.__cause__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
