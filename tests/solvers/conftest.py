"""Solver tests run in float64 (restored after each test, so no state leaks to others)."""

import pytest


@pytest.fixture(autouse=True)
def _float64(float64_default):  # tests/conftest.py
    yield
