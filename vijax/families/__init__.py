"""Exponential families used by vijax's CAVI engine and gradient-based fitting.

Every family is a frozen dataclass registered as a JAX pytree whose only field is
``natural``, a dict of natural-parameter arrays keyed by statistic name (see
:class:`~vijax.families.base.ExponentialFamily` for the shared protocol). The registry
(:mod:`vijax.families.registry`) is where the rest of vijax finds them: a new family is
one module plus one ``register`` line below.
"""

from vijax.families import registry
from vijax.families.base import ExponentialFamily
from vijax.families.bernoulli import Bernoulli
from vijax.families.beta import Beta
from vijax.families.categorical import Categorical
from vijax.families.dirichlet import Dirichlet
from vijax.families.gamma import Gamma
from vijax.families.gauss_markov import GaussMarkov
from vijax.families.inverse_gamma import InverseGamma
from vijax.families.markov_chain import MarkovChain
from vijax.families.mvn import MultivariateNormal
from vijax.families.normal import Normal
from vijax.families.poisson import Poisson
from vijax.families.registry import FAMILIES, register
from vijax.families.wishart import Wishart
from vijax.families.inverse_wishart import InverseWishart
from vijax.families.normal_gamma import NormalGamma, StudentT
from vijax.families.normal_wishart import MultivariateT, NormalWishart

# Registration order: the first family of a support is its default q; among the
# conjugate ones the compiler picks the first that fits (see the registry).
register(Normal)
register(MultivariateNormal)
register(Gamma)
register(InverseGamma)
register(Beta)
register(Dirichlet)
register(Categorical)
register(MarkovChain)  # after Categorical: chains only where the compiler finds one
register(Bernoulli)
register(Poisson)
register(Wishart)
register(InverseWishart)  # after Wishart: picked only for S^{-1} statistics
register(GaussMarkov)  # never picked by select (no couples_elements): chains only

__all__ = [
    "ExponentialFamily", "Normal", "MultivariateNormal", "Gamma", "InverseGamma", "Beta",
    "Dirichlet", "Categorical", "Bernoulli", "Poisson", "FAMILIES", "register", "registry",
]
__all__ += ["MarkovChain"]
__all__ += ["Wishart"]
__all__ += ["InverseWishart"]
__all__ += ["GaussMarkov"]

# joint families of declared blocks (never picked for a single latent)
registry.register_joint(NormalGamma)
registry.register_joint(NormalWishart)
__all__ += ["NormalGamma", "NormalWishart", "StudentT", "MultivariateT"]
