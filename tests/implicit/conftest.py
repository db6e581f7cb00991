"""Implicit-gradient tests run in float64 (restored after each test) and share the CVXPY
reference of tests/solvers/cvx_glsvm.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "solvers"))


@pytest.fixture(autouse=True)
def _float64(float64_default):  # tests/conftest.py
    yield
