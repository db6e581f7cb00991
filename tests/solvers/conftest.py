"""Solver tests run in float64 (restored after each test, so no state leaks to others)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
