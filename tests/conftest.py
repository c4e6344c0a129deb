"""Fixtures shared by the test files; the plain helpers are in ``helpers.py``."""

import helpers
import pytest


@pytest.fixture(scope="session")
def ring():
    """Four unequal-weight modes 14 stds apart (``helpers.ring``)."""
    return helpers.ring()


@pytest.fixture(scope="session")
def gaussian():
    """One correlated 2-D Gaussian with an exact flow map (``helpers.correlated_gaussian``)."""
    return helpers.correlated_gaussian()
