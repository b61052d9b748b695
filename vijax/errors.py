"""Exceptions raised by vijax.

Every error names the place (latent, input, parameter) and the cause, and says what
the user can do next. All derive from :class:`VijaxError`.
"""

from __future__ import annotations


class VijaxError(Exception):
    """Base class of every vijax error."""


class ModelSpecError(VijaxError, ValueError):
    """The model declaration and the log joint disagree (missing or unused latent,
    bad support declaration, non-scalar return, tracing failure)."""


class NonConjugateError(VijaxError):
    """A latent's complete conditional is not an exponential family the engine knows.

    Attributes:
        latent: the latent's name.
        primitive: the JAX primitive (or statistic pattern) that broke conjugacy.
        source: the user's ``file:line`` where it was found, if known.
    """

    def __init__(self, message: str, latent: str | None = None,
                 primitive: str | None = None, source: str | None = None):
        super().__init__(message)
        self.latent = latent
        self.primitive = primitive
        self.source = source


class UnsupportedPrimitiveError(ModelSpecError):
    """A latent-dependent value went through a JAX primitive the compiler has no rule for."""

    def __init__(self, message: str, primitive: str | None = None,
                 source: str | None = None, latent: str | None = None):
        super().__init__(message)
        self.primitive = primitive
        self.source = source
        self.latent = latent


class ArgumentTypeError(ModelSpecError, TypeError):
    """A fit option has the wrong type (e.g. a string where an optax optimizer or a PRNG
    key is expected); also a ``ValueError`` like every :class:`ModelSpecError`."""


class DataError(VijaxError, ValueError):
    """Observed data is unusable (NaN/Inf values, wrong shape or dtype)."""


class InvalidParameterError(VijaxError, ValueError):
    """A distribution or hyper-parameter is outside its valid region
    (negative scale, non-positive concentration, non-PSD covariance, ...)."""


class FitDivergedError(VijaxError, RuntimeError):
    """A fit produced a non-finite ELBO or left a family's valid region.

    Attributes:
        step: the iteration at which it happened.
        latent: the latent whose update failed, when known.
        last_state: the last finite state (posterior factors), when available.
    """

    def __init__(self, message: str, step: int | None = None,
                 latent: str | None = None, last_state=None):
        super().__init__(message)
        self.step = step
        self.latent = latent
        self.last_state = last_state


class ConvergenceWarning(UserWarning):
    """A fit returned a result it cannot vouch for: it stopped at ``max_iters`` /
    ``num_steps`` before converging, its ELBO decreased by more than the rounding bound of
    its dtype (see :mod:`vijax.inference.stopping`), or a posterior mean is not resolvable
    at the dtype's precision (an ill-conditioned precision matrix in float32).

    Pass ``strict=True`` to the fitter to raise :class:`FitDivergedError` instead; silence
    it with ``warnings.filterwarnings("ignore", category=vijax.ConvergenceWarning)``.
    """


__all__ = [
    "VijaxError", "ModelSpecError", "NonConjugateError", "UnsupportedPrimitiveError",
    "DataError", "InvalidParameterError", "FitDivergedError", "ArgumentTypeError",
]
