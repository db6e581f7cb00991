"""The episodes a model is scored on: a protocol that checks itself, the split it draws
from, and the one policy for the saved (fixed) episode lists.

Training's validation and the evaluation protocol share all of it: the same
:class:`EpisodeProtocol`, the same :func:`fixed_episodes` (drawn once from a seed, saved,
reused), the same loader of EpisodeBatch.

Cache policy: a saved episode list is reused only when it was drawn with these settings
on this data; otherwise it is a DataError naming the file (delete it to draw the
episodes anew). Episodes are never redrawn silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fewshot_sparse.data import (
    FixedEpisodes, PreparedSplit, episode_loader, make_fixed_episodes, read_manifest)
from fewshot_sparse.errors import ConfigError, DataError

DEFAULT_SEED = 2024  # test episodes are drawn from this seed unless told otherwise


@dataclass(frozen=True)
class EpisodeProtocol:
    """N-way, K-shot (one or several K), Q queries per class, ``episodes`` episodes per
    shot drawn from ``seed``, run ``tasks_per_batch`` at a time. Checked when built."""

    way: int = 5
    shots: tuple = (1, 5)
    query: int = 15
    episodes: int = 1000
    seed: int = DEFAULT_SEED
    tasks_per_batch: int = 8

    def __post_init__(self):
        shots = self.shots
        shots = [int(s) for s in ([shots] if isinstance(shots, int) else shots)]
        object.__setattr__(self, "shots", tuple(shots))
        for key, value in {"query": self.query, "episodes": self.episodes,
                           "tasks_per_batch": self.tasks_per_batch}.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if self.way < 2:
            raise ConfigError(f"way must be >= 2, got {self.way}")
        if not shots or min(shots) < 1:
            raise ConfigError(f"shots must be >= 1, got {shots}")

    @classmethod
    def from_val_config(cls, val) -> "EpisodeProtocol":
        """Training's validation episodes (a config's ``val`` section)."""
        return cls(way=val.n_way, shots=(val.n_shot,), query=val.n_query,
                   episodes=val.episodes, seed=val.seed, tasks_per_batch=val.tasks_per_batch)

    def file_name(self, split: str, shot: int) -> str:
        return (f"{split}_{self.way}way{shot}shot{self.query}query_{self.episodes}x"
                f"_seed{self.seed}.npz")


def open_split(data, split: str) -> PreparedSplit:
    """The ``split`` of a prepared cache (DataError naming what is wrong)."""
    root = Path(data)
    if not root.exists():
        raise DataError(f"no prepared dataset at {root} (run `fewshot-sparse prepare` first)")
    read_manifest(root)  # DataError when root is not a prepared cache
    return PreparedSplit(root, split)


def fixed_episodes(split_data, protocol: EpisodeProtocol, shot: int, path=None, *,
                   must_save: bool = True) -> tuple[FixedEpisodes, Optional[Path]]:
    """The protocol's ``shot``-shot episode list and the file holding it.

    ``path`` None: drawn, not saved. An existing ``path`` is loaded and must hold these
    settings' episodes of this data (else DataError); a missing one is drawn and saved.
    ``must_save=False``: when saving fails (OSError), the list is used unsaved and the
    returned path is None.
    """
    if path is not None:
        path = Path(path)
        if path.is_file():
            fixed = FixedEpisodes.load(path)
            _check_saved(fixed, path, split_data, protocol, shot)
            return fixed, path
    fixed = make_fixed_episodes(split_data, protocol.way, shot, protocol.query,
                                protocol.episodes, protocol.seed)
    if path is not None:
        try:
            fixed.save(path)
        except OSError:
            if must_save:
                raise
            path = None
    return fixed, path


def _check_saved(fixed: FixedEpisodes, path: Path, split_data, protocol: EpisodeProtocol,
                 shot: int) -> None:
    have = (fixed.n_way, fixed.n_shot, fixed.n_query, len(fixed), fixed.seed)
    want = (protocol.way, shot, protocol.query, protocol.episodes, protocol.seed)
    if have != want:
        raise DataError(f"{path} holds other episodes ({_describe(*have)}) than asked for "
                        f"({_describe(*want)}); delete it to draw them anew")
    try:
        fixed.check(split_data)
    except DataError as e:
        raise DataError(f"{path} no longer matches the data ({e}); delete it to draw the "
                        f"episodes anew") from None


def _describe(way, shot, query, episodes, seed) -> str:
    return f"{way}-way {shot}-shot {query}-query, {episodes} episodes, seed {seed}"


def protocol_batches(split_data, fixed: FixedEpisodes, tasks_per_batch: int):
    """A loader of EpisodeBatch over the fixed episodes, ``tasks_per_batch`` at a time."""
    return episode_loader(split_data, tasks_per_batch=tasks_per_batch, n_batches=None,
                          fixed=fixed)


__all__ = ["DEFAULT_SEED", "EpisodeProtocol", "fixed_episodes", "open_split",
           "protocol_batches"]
