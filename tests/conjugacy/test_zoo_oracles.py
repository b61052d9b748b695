"""The compiler's correctness oracles (DESIGN section 2) on every conjugate zoo model.

- exactness: ``F(T(z)) == log p(x, z)`` at random points of the support;
- expectation: ``F(E_q[T]) == E_q[log p(x, z)]`` for a random mean-field q (Monte Carlo);
- families: each latent gets the family the zoo entry expects.
"""

from __future__ import annotations

import pytest

from vijax.models import CONJUGATE, ZOO

from .helpers import assert_exact, assert_expectation_matches_mc


@pytest.mark.parametrize("name", CONJUGATE)
def test_log_joint_is_exactly_multilinear_form_of_statistics(zoo, name, rng):
    case = zoo[name]
    assert_exact(case.model, case.data, rng, n_points=3, compiled=case.compiled)


@pytest.mark.parametrize("name", CONJUGATE)
def test_F_of_mean_parameters_matches_monte_carlo_expectation(zoo, name, rng):
    case = zoo[name]
    assert_expectation_matches_mc(case.model, case.data, rng, compiled=case.compiled,
                                  n_samples=3000)


@pytest.mark.parametrize("name", list(ZOO))
def test_each_latent_gets_expected_family(zoo, name):
    case = zoo[name]
    got = {n: (f.__name__ if f is not None else None) for n, f in case.analysis.families.items()}
    assert got == case.zoo_model.families
    assert {n: i.family for n, i in case.compiled.infos.items()} == case.zoo_model.families
    for n, expected in case.zoo_model.families.items():
        if expected is None:
            assert case.analysis.reasons.get(n), f"non-conjugate '{n}' has no reason"
        else:
            assert n not in case.analysis.reasons
    assert case.analysis.conjugate == case.zoo_model.conjugate


def test_conjugate_list_matches_zoo_flags():
    assert sorted(CONJUGATE) == sorted(n for n in ZOO if ZOO[n]().conjugate)
