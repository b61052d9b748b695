"""Exponential families used by vijax's CAVI engine and gradient-based fitting.

Every family is a frozen dataclass registered as a JAX pytree whose only field is
``natural``, a dict of natural-parameter arrays keyed by statistic name (see
:class:`~vijax.families.base.ExponentialFamily` for the shared protocol).
"""

from vijax.families.base import ExponentialFamily
from vijax.families.bernoulli import Bernoulli
from vijax.families.beta import Beta
from vijax.families.categorical import Categorical
from vijax.families.dirichlet import Dirichlet
from vijax.families.gamma import Gamma
from vijax.families.inverse_gamma import InverseGamma
from vijax.families.mvn import MultivariateNormal
from vijax.families.normal import Normal
from vijax.families.poisson import Poisson

FAMILIES: dict[str, type[ExponentialFamily]] = {
    cls.__name__: cls
    for cls in (Normal, MultivariateNormal, Gamma, InverseGamma, Beta, Dirichlet,
                Categorical, Bernoulli, Poisson)
}

__all__ = [
    "ExponentialFamily", "Normal", "MultivariateNormal", "Gamma", "InverseGamma", "Beta",
    "Dirichlet", "Categorical", "Bernoulli", "Poisson", "FAMILIES",
]
