"""TensorBoard logging for training runs (scalars, and feature-usage figures).

Only one process writes (rank 0 under DDP): on the others ``TBLogger(None)`` does nothing.
Tags: ``train/loss``, ``train/accuracy``, ``train/active_fraction``,
``train/solver_iterations``, ``train/gap_max``, ``train/unconverged``, ``lr``, and the
same ``val/*`` scalars per validation; figures under ``val_usage/*``. Training scalars
are means over the steps since the last log (``gap_max``: the largest), averaged over
ranks under DDP.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

from fewshot_sparse.analysis import compute_feature_usage, feature_usage_figures
from fewshot_sparse.files import os_error


class TBLogger:
    """A SummaryWriter at ``log_dir`` (None: a logger that drops everything).

    ``purge_step``: on resume, events at or after this step from the interrupted run
    are hidden by TensorBoard, so curves do not fork."""

    def __init__(self, log_dir: Optional[Path], purge_step: Optional[int] = None):
        self.writer, self.log_dir = None, log_dir
        if log_dir is not None:
            # Lazy: tensorboard takes about a second to import; only a writing rank pays.
            from torch.utils.tensorboard import SummaryWriter

            with self._os_errors():
                self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    @contextlib.contextmanager
    def _os_errors(self):
        """A full disk or read-only folder: one OutputError naming the log folder."""
        try:
            yield
        except OSError as e:
            raise os_error(e, "cannot write TensorBoard events to", self.log_dir) from None

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}" if prefix else k, float(v), step)

    def figures(self, prefix: str, figures: dict, step: int) -> None:
        """Log matplotlib figures (closed afterwards)."""
        if self.writer is None:
            return
        for name, fig in figures.items():
            self.writer.add_figure(f"{prefix}/{name}", fig, step, close=True)

    def flush(self) -> None:
        if self.writer is not None:
            with self._os_errors():
                self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            with self._os_errors():
                writer.close()


def log_feature_usage(logger: TBLogger, results, step: int, meta: Optional[dict] = None) -> bool:
    """Feature-usage figures of validation episodes (``fewshot_sparse.analysis``) as
    TensorBoard images. Returns False (and logs nothing) when the logger drops everything."""
    if logger.writer is None:
        return False
    stats = compute_feature_usage(results.active, results.group_norms, results.class_ids,
                                  meta=meta)
    logger.figures("val_usage", feature_usage_figures(stats), step)
    return True
