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


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size="1m", readonly=False)``: a folder on a tmpfs of that size (a full
    disk or a read-only folder for real), unmounted afterwards. Returns None where mounting
    is not permitted (not root, or a container without the capability): the test then
    simulates the failure or skips."""
    import subprocess

    mounts = []

    def make(size="1m", readonly=False):
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        if os.geteuid() != 0:
            return None
        opts = f"size={size}" + (",ro" if readonly else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                           capture_output=True)
        if r.returncode != 0:
            return None
        mounts.append(where)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="session")
def glyphs16(tmp_path_factory):
    """The built-in glyph set, 12 classes x 12 images per split, 16x16 grey: rendered
    once per session (finding the fonts takes most of a minute on a busy machine)."""
    from fewshot_sparse.data import prepare

    out = tmp_path_factory.mktemp("data") / "glyphs_tiny"
    prepare("glyphs", None, out, image_size=16, glyph_instances=12, glyph_max_classes=12,
            progress=False)
    return out


@pytest.fixture
def read_only_folder(small_disk, tmp_path):
    """A read-only folder: a read-only tmpfs where mounting is permitted, else a chmod 555
    folder (skipped as root, who ignores permissions); its mode is restored afterwards."""
    disk = small_disk("1m", readonly=True)
    if disk is None:
        if os.geteuid() == 0:
            pytest.skip("root ignores permissions and mounting is not permitted")
        disk = tmp_path / "ro"
        disk.mkdir()
        disk.chmod(0o555)
    yield disk
    if not os.path.ismount(disk):
        disk.chmod(0o755)

