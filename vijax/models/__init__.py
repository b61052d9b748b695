"""A zoo of log joints with known answers (tests, examples, benchmarks, CLI)."""

from vijax.models.base import ZooModel
from vijax.models.conjugate_pairs import beta_bernoulli, dirichlet_categorical, gamma_poisson
from vijax.models.gaussian import (bivariate_gaussian, linear_regression,
                                   linear_regression_known_noise, normal_gamma,
                                   normal_known_variance)
from vijax.models.latent_factor import lda, ppca
from vijax.models.mixture import gaussian_mixture
from vijax.models.nonconjugate import logistic_regression, student_t_location
from vijax.models.state_space import state_space

ZOO = {f.__name__: f for f in (
    bivariate_gaussian, normal_gamma, normal_known_variance, linear_regression,
    linear_regression_known_noise, beta_bernoulli, gamma_poisson, dirichlet_categorical,
    gaussian_mixture, ppca, lda, state_space, logistic_regression, student_t_location)}
ZOO["hmm"] = __import__("vijax.models.hmm", fromlist=["hmm"]).hmm  # variational HMM

from vijax.models.wishart_models import normal_wishart  # noqa: E402 (not in ZOO: suite time)
CONJUGATE = [n for n in ZOO if n not in ("logistic_regression", "student_t_location")]

__all__ = ["ZooModel", "ZOO", "CONJUGATE"] + list(ZOO)
