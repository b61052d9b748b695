"""The result pytree shared by every fitting routine."""

from __future__ import annotations

from typing import Any, NamedTuple


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
    """

    posterior: dict
    elbo: Any
    elbo_trace: Any
    num_iters: Any
    converged: Any
    diagnostics: dict
    natural: dict

