"""Shared test configuration: GPU tests are skipped on machines without CUDA."""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite's problems are tiny: intra-op threads only add OpenMP barrier waits, which
# become 10-50x slowdowns when another process (a DDP rank, a DataLoader worker) holds
# the other core. Child processes inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def float64_default():
    """Run a test with float64 as torch's default dtype, restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
