"""``vijax.model.all_finite``: the host NaN/Inf test of data (a BLAS sum of squares with
the exact test as fallback) agrees with ``np.isfinite(x).all()`` on every input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vijax.model import all_finite


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None])
@pytest.mark.parametrize("shape", [(7,), (30, 4), (2, 3, 5)])
def test_nan_and_inf_are_found_anywhere(dtype, bad, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(dtype)
    if bad is not None:
        x.reshape(-1)[rng.integers(x.size)] = bad
    assert all_finite(x) == (bad is None)
    assert all_finite(x.T) == (bad is None)  # not contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_finite_values_are_finite(dtype):
    """Squares overflow (sum(x * x) is Inf) for finite values: the exact test decides."""
    big = np.sqrt(np.finfo(dtype).max) * 4
    x = np.array([1.0, big, -big], dtype)
    assert all_finite(x)
    assert not all_finite(np.append(x, np.nan).astype(dtype))


def test_non_float_and_empty_arrays():
    assert all_finite(np.arange(5))
    assert all_finite(np.array([True, False]))
    assert all_finite(np.zeros((0, 3), np.float32))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]),
                  hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_agrees_with_isfinite(x):
    assert all_finite(x) == bool(np.all(np.isfinite(x)))
