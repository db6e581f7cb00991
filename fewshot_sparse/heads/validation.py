"""The one input check every head (and the cvxpylayers reference) runs before it solves.

Heads follow MetaOptNet's contract ``head(query [B,Q,D], support [B,S,D],
support_labels [B,S], n_way)``. Bad input raises ``ValueError`` whose message names the
argument at fault and the shapes it saw; nothing is modified in place.
"""

from __future__ import annotations

import inspect
import math
from typing import Tuple, Union

import torch
from torch import Tensor

from fewshot_sparse.errors import ConfigError

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_head_inputs(query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> None:
    """Validate a head call; raise ``ValueError`` naming the argument at fault.

    Checks: tensors of the right rank and matching B and D; floating features on one
    device with one dtype; integer labels of shape [B, S] with values in 0..n_way-1 and
    every class present in every task's support; finite (no NaN/inf) features.
    """
    for name, t in (("query", query), ("support", support), ("support_labels", support_labels)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 2:
        # One rule for every head: a 1-way task has nothing to classify.
        raise ValueError(f"n_way must be an int >= 2 (a task needs two classes), got {n_way!r}")
    if query.dim() != 3:
        raise ValueError(f"query must be [B, Q, D] (3-d), got shape {tuple(query.shape)}")
    if support.dim() != 3:
        raise ValueError(f"support must be [B, S, D] (3-d), got shape {tuple(support.shape)}")
    if support_labels.dim() != 2:
        raise ValueError(
            f"support_labels must be [B, S] (2-d), got shape {tuple(support_labels.shape)}"
        )
    b, s, d = support.shape
    if query.shape[0] != b or query.shape[2] != d:
        raise ValueError(
            f"query shape {tuple(query.shape)} does not match support shape "
            f"{tuple(support.shape)}: need the same B (dim 0) and D (dim 2)"
        )
    if tuple(support_labels.shape) != (b, s):
        raise ValueError(
            f"support_labels shape {tuple(support_labels.shape)} does not match support "
            f"shape {tuple(support.shape)}: need [B, S] = {(b, s)}"
        )
    if b == 0 or s == 0 or d == 0:
        raise ValueError(f"support must have B, S, D >= 1, got shape {tuple(support.shape)}")
    if support.dtype not in _FLOATS:
        raise ValueError(f"support must be a floating tensor, got dtype {support.dtype}")
    if query.dtype != support.dtype:
        raise ValueError(
            f"query dtype {query.dtype} differs from support dtype {support.dtype}"
        )
    if support_labels.dtype.is_floating_point or support_labels.dtype.is_complex or (
        support_labels.dtype == torch.bool
    ):
        raise ValueError(
            f"support_labels must be an integer tensor (int64), got dtype {support_labels.dtype}"
        )
    if query.device != support.device or support_labels.device != support.device:
        raise ValueError(
            "query, support and support_labels must be on one device, got "
            f"query on {query.device}, support on {support.device}, "
            f"support_labels on {support_labels.device}"
        )
    _check_values(query, support, support_labels, n_way)


def _value_summary(query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> list:
    """[lowest label, highest label, (task, class) pairs without a support example, the
    first such pair's flat index, max |support|, max |query|], read in one host sync: a
    head call on a GPU waits once, not seven times. A max |x| is NaN or inf where the
    tensor holds a NaN or an inf (amax propagates NaN). float32 on MPS (no float64
    there): label values beyond 2^24 then print rounded."""
    b = support.shape[0]
    labels = support_labels.long()
    # counts by comparison, not scatter_add_ (nondeterministic under CUDA's deterministic
    # mode), on labels clamped to 0..n_way-1 (an out-of-range one is reported first)
    counts = (labels.clamp(0, n_way - 1)[..., None] == torch.arange(n_way, device=labels.device)).sum(1)
    missing = (counts == 0).reshape(b * n_way)
    parts = [labels.min(), labels.max(), missing.sum(), missing.to(torch.int8).argmax(),
             torch.linalg.vector_norm(support.detach(), float("inf")),
             torch.linalg.vector_norm(query.detach(), float("inf")) if query.numel() else torch.zeros((), device=query.device)]
    dtype = torch.float32 if support.device.type == "mps" else torch.float64
    return torch.stack([p.to(dtype) for p in parts]).tolist()


def _check_values(query: Tensor, support: Tensor, support_labels: Tensor, n_way: int) -> None:
    lo, hi, n_missing, first_missing, support_max, query_max = _value_summary(query, support, support_labels, n_way)
    if lo < 0 or hi >= n_way:
        raise ValueError(
            f"support_labels must lie in 0..{n_way - 1} (n_way={n_way}), got values in {int(lo)}..{int(hi)}"
        )
    if n_missing:
        task, cls = divmod(int(first_missing), n_way)
        raise ValueError(
            f"support_labels: class {cls} has no support example in task {task} "
            f"({int(n_missing)} (task, class) pairs missing); every one of the n_way="
            f"{n_way} classes needs at least one"
        )
    for name, biggest in (("support", support_max), ("query", query_max)):
        if not math.isfinite(biggest):
            raise ValueError(f"{name} features contain NaN or inf")
    _check_feature_scale(query, support, (support_max, query_max))


def max_feature_magnitude(dtype: torch.dtype, n_rows: int, dim: int) -> float:
    """The largest |feature| a head solving in ``dtype`` accepts: squared norms, Gram
    entries and their sums over ``n_rows`` rows of ``dim`` features (with a margin of
    64) stay below the dtype's largest number."""
    solve = torch.float64 if dtype == torch.float64 else torch.float32
    return math.sqrt(torch.finfo(solve).max / (64.0 * max(n_rows, 1) * max(dim, 1)))


def _check_feature_scale(query: Tensor, support: Tensor, largest: Tuple[float, float]) -> None:
    """ValueError when features are so large that the head's sums of squares would
    overflow its solve dtype (ProtoNet gave inf, the SVM and ridge heads a raw linear
    algebra error); the message names the argument, its largest |value| (``largest``:
    support's, query's) and the limit."""
    b, s, d = support.shape
    limit = max_feature_magnitude(support.dtype, s + query.shape[1], d)
    solve = "float64" if support.dtype == torch.float64 else "float32"
    for name, biggest in zip(("support", "query"), largest):
        if biggest > limit:
            raise ValueError(
                f"{name} features too large for the head's {solve} solve: max |x| = {biggest:.3g} > {limit:.3g} (sums of squares would "
                f"overflow); scale or normalise the features")


def check_nonnegative(name: str, value: Union[float, Tensor], strict: bool = False) -> None:
    """Raise ``ValueError`` if the hyperparameter ``name`` is negative (or zero when
    ``strict``), NaN or infinite. ``value`` is a number or a tensor of any shape."""
    t = torch.as_tensor(value).detach()
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {_show(value)}")
    bad = (t <= 0) if strict else (t < 0)
    if bool(bad.any()):
        need = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be {need}, got {_show(value)}")


def _show(value: Union[float, Tensor]) -> str:
    if isinstance(value, Tensor):
        return str(value.detach().cpu().tolist())
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)


# Value rules for head options, by name (the type comes from the option's default).
_POSITIVE = ("lambda2", "lam")
_NONNEGATIVE = ("lambda1", "smoothing", "tol")
_AT_LEAST_ONE = ("max_iter",)


def check_head_options(cls, kwargs: dict, prefix: str = "") -> None:
    """ConfigError ``"<prefix><option>: <what is wrong>"`` unless every option of head
    class ``cls`` in ``kwargs`` exists and has a usable value: the type of its default
    (an int where an int is expected, never 2.5 or True), finite numbers, and
    ``lambda2, lam > 0``, ``lambda1, smoothing, tol >= 0``, ``max_iter >= 1``."""
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    for key, value in kwargs.items():
        where = f"{prefix}{key}"
        if key not in params:
            raise ConfigError(f"{where}: no such option; the options are: {', '.join(params)}")
        default = params[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{where}: must be finite, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if key in _POSITIVE and not value > 0:
            raise ConfigError(f"{where}: must be > 0, got {value!r}")
        if key in _NONNEGATIVE and not value >= 0:
            raise ConfigError(f"{where}: must be >= 0, got {value!r}")
        if key in _AT_LEAST_ONE and not value >= 1:
            raise ConfigError(f"{where}: must be >= 1, got {value!r}")
