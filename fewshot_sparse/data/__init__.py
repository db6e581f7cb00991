"""fewshot_sparse.data: dataset readers per on-disk format, the prepared cache, the
seeded episodic sampler / loader and batched augmentation.

    prepare("miniimagenet", "/data/mini", "caches/mini")   # once, any published format
    splits = open_prepared("caches/mini")                    # memory-mapped
    for batch in episode_loader(splits["train"], n_way=5, n_shot=5, n_query=15,
                                tasks_per_batch=8, n_batches=1000, seed=0): ...
"""

from .augment import EpisodeAugment, Normalize
from .cache import PreparedSplit, open_prepared, read_manifest
from .episodes import EpisodeBatch
from .fixed_episodes import FixedEpisodes, make_fixed_episodes
from .loader import episode_loader
from .prepare import MANIFEST, DataWarning, prepare
from .sampler import EpisodeIndices, EpisodeSampler

__all__ = [
    "EpisodeBatch", "prepare", "DataWarning", "MANIFEST", "PreparedSplit", "open_prepared", "read_manifest",
    "EpisodeSampler", "EpisodeIndices", "FixedEpisodes", "make_fixed_episodes", "episode_loader",
    "EpisodeAugment", "Normalize",
]
