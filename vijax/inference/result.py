"""The result pytree shared by every fitting routine."""

from __future__ import annotations

from typing import Any, NamedTuple

from vijax import results as _results
from vijax.results.methods import with_result_methods


@with_result_methods
class FitResult(NamedTuple):
    """Result of :func:`vijax.cavi` and :func:`vijax.fit_gradient` (a pytree: works
    under ``jit`` and ``vmap``).

    Attributes:
        posterior: latent -> family object (``.mean()``, ``.variance()``, ``.sample``...).
        elbo: final ELBO (a true lower bound on ``log p(x)``).
        elbo_trace: ELBO after each sweep or step (fixed length; entries past
            ``num_iters`` repeat the last value).
        num_iters: sweeps (CAVI) or optimizer steps (gradient) run.
        converged: relative ELBO change fell below ``tol``.
        diagnostics: ``max_decrease`` (largest ELBO drop seen; > 0 beyond rounding is a
            bug or a non-conjugate term), ``nonfinite``, ``invalid_latent`` (index into
            ``order`` of a latent whose update left its family's domain, -1 if none),
            ``invalid_iter``.
        natural: natural parameters per latent (``{latent: {stat: array}}``).

    ``print(fit)`` shows one screen (ELBO, iterations, convergence, one line per latent);
    :meth:`summary`, :meth:`sample`, :meth:`posterior_predictive`, :meth:`to_arviz`,
    :meth:`save` and :meth:`load` are the functions of :mod:`vijax.results`.
    """

    posterior: dict
    elbo: Any
    elbo_trace: Any
    num_iters: Any
    converged: Any
    diagnostics: dict
    natural: dict


    @classmethod
    def load(cls, path) -> "FitResult":
        """Read a result written by :meth:`save` (see :func:`vijax.load_result`)."""
        result = _results.load_result(path)
        if not isinstance(result, cls):
            raise TypeError(f"{path} holds a {type(result).__name__}, not a {cls.__name__}; "
                            "use vijax.load_result")
        return result
