"""Degenerate episodes: one rule for every head (n_way = 1 is refused)."""

import pytest
import torch

from fewshot_sparse.heads import HEADS, build_head


@pytest.mark.parametrize("name", sorted(HEADS))
def test_one_way_is_refused_by_every_head(name):
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(1, 3, 4, generator=g), torch.randn(1, 2, 4, generator=g)
    labels = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="n_way must be an int >= 2"):
        build_head(name)(query, support, labels, 1)
