"""An iteration ``step(state, consts) -> state`` replayed as a captured CUDA graph.

A solver iteration on a GPU launches a few hundred small kernels; launched one by one from
Python each costs several microseconds of host time, far more than the GPU spends on it
(benchmarks.md). Captured once as a CUDA graph, the whole iteration is one launch.

A graph reads and writes fixed addresses, so the loop keeps its state and constants in
static buffers: ``load`` copies a call's values into them, each ``step`` replaces the
state by the step's output (in place), and code between steps (the convergence checks)
reads ``state`` and writes through ``write``. The same loop runs without capture off
CUDA: the plain-PyTorch twin the tests compare the graph against (same buffers, same
order of writes), and the fallback when a capture fails.

Loops are cached by key (shapes, dtypes, device, options), so repeated solves of the same
shape (every training step) capture once. ``step`` must depend on nothing but its two
arguments and the key. Loops given the same ``share`` key (the solver's: the same shapes,
another gather width) share their buffers: a solve that moves to another loop of its
shape copies nothing, and one set of buffers serves them all.

A capture can succeed and still replay something else than the code says (a value read
on the host at capture time is frozen into the graph). So the first VERIFIED_REPLAYS
replays of each graph are checked against the uncaptured step from the same state: the
second one runs from a state the capture never saw. On a disagreement the loop warns,
keeps the uncaptured result and runs uncaptured from then on.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Callable, Dict, Hashable

import torch
from torch import Tensor

Tensors = Dict[str, Tensor]
CACHE_SIZE = 16  # captured loops kept (each holds its buffers and graph memory): a few
# shapes, each with the gather widths one solve meets (group_lasso_ipm.py)
VERIFIED_REPLAYS = 2
_AGREE = 1e-5  # replay against uncaptured step: |difference| <= _AGREE (max |value| + |value|)
_cache: "OrderedDict[Hashable, GraphLoop]" = OrderedDict()


class GraphLoop:
    """Static buffers for ``state`` and ``consts`` and, on CUDA, the captured graph of one
    ``step``; captured lazily at the first ``step`` (after ``load``)."""

    def __init__(self, step: Callable[[Tensors, Tensors], Tensors], state: Tensors, consts: Tensors,
                 capture: bool = True, share: Hashable = None, buffers=None):
        self._step = step
        self.share = share
        if buffers is None:
            self.state = {k: v.clone() for k, v in state.items()}
            self.consts = {k: v.clone() for k, v in consts.items()}
        else:  # another loop's (state, consts) buffers, loaded with this call's values
            self.state, self.consts = dict(buffers[0]), dict(buffers[1])
            self.load(state, consts)
        self._graph = None
        self._capture = capture and next(iter(self.state.values())).device.type == "cuda"
        self._unverified = 0  # replays still to check against the uncaptured step

    def load(self, state: Tensors, consts: Tensors) -> None:
        """Copy a new call's values into the buffers (same keys, shapes and dtypes)."""
        self.write(**state)
        for k, v in consts.items():
            if v is not self.consts[k]:
                self.consts[k].copy_(v)

    def write(self, **values: Tensor) -> None:
        for k, v in values.items():
            if v is not self.state[k]:
                self.state[k].copy_(v)

    def step(self) -> None:
        if self._capture and self._graph is None:
            self._graph = self._captured()
            self._unverified = VERIFIED_REPLAYS
        if self._graph is None:
            self._advance()
        elif self._unverified:
            self._unverified -= 1
            want = self._step({k: v.clone() for k, v in self.state.items()}, self.consts)
            self._graph.replay()
            self._verify(want)
        else:
            self._graph.replay()

    def _verify(self, want: Tensors) -> None:
        """Keep the graph if its replay wrote ``want`` (the uncaptured step); else warn, write
        ``want`` and run uncaptured from now on."""
        bad = [k for k, ok in zip(want, _agreement(self.state, want)) if not ok]
        if bad:
            self._graph, self._capture = None, False
            self.write(**want)
            warnings.warn(f"the CUDA graph's replay disagrees with the uncaptured iteration on {', '.join(bad)}; "
                          "the iterations run uncaptured")

    def _advance(self) -> None:
        """state <- step(state, consts). An output that shares memory with another state
        buffer is copied first: written in place, that buffer could change before it is read."""
        new = self._step(self.state, self.consts)
        ptrs = {k: v.untyped_storage().data_ptr() for k, v in self.state.items()}
        for k, v in new.items():
            if any(p == v.untyped_storage().data_ptr() for j, p in ptrs.items() if j != k):
                new[k] = v.clone()
        self.write(**new)

    def _captured(self):
        """The graph of one step, or None (with a warning) where capture fails."""
        device = next(iter(self.state.values())).device
        try:
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up on copies: library handles, workspaces
                for _ in range(2):
                    self._step({k: v.clone() for k, v in self.state.items()}, self.consts)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # on the warm-up's stream (cuBLAS / cuSOLVER state is per stream); other threads'
            # CUDA calls (a data loader pinning memory) must not invalidate the capture
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                self._advance()
            return graph
        except RuntimeError as err:  # e.g. an operation that cannot be captured
            self._capture = False
            warnings.warn(f"CUDA graph capture failed ({str(err).splitlines()[0]}); the iterations run uncaptured")
            return None


def _agreement(got: Tensors, want: Tensors) -> list:
    """Per key of ``want``, whether ``got`` holds the same values (within _AGREE for floats,
    NaN equal to NaN): one host sync."""
    flags = []
    for k, w in want.items():
        g = got[k]
        if w.is_floating_point() and w.numel():
            scale = torch.where(w.isfinite(), w.abs(), 0.0).amax()
            close = ((g - w).abs() <= _AGREE * (scale + w.abs())) | (g == w) | (g.isnan() & w.isnan())
            flags.append(close.all())
        else:
            flags.append((g == w).all())
    return torch.stack(flags).tolist() if flags else []


def graph_loop(key: Hashable, step: Callable[[Tensors, Tensors], Tensors], state: Tensors, consts: Tensors,
               capture: bool = True, share: Hashable = None) -> GraphLoop:
    """The cached loop for ``key`` loaded with ``state`` and ``consts`` (a new one on a miss,
    on the buffers of a cached loop with the same ``share`` key where there is one: the
    same keys, shapes and dtypes); ``capture``: as a CUDA graph on CUDA (else static
    buffers, uncaptured)."""
    loop = _cache.pop(key, None)
    if loop is None:
        sibling = next((other for other in _cache.values() if share is not None and other.share == share), None)
        loop = GraphLoop(step, state, consts, capture, share, None if sibling is None else (sibling.state, sibling.consts))
    else:
        loop.load(state, consts)
    _cache[key] = loop
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return loop


def clear_graph_cache() -> None:
    """Free every cached loop (its buffers and graph memory)."""
    _cache.clear()
