"""Family tests run in float64 (exactness is claimed); other test dirs are unaffected."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def float64():
    with jax.enable_x64(True):
        yield
