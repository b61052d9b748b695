"""The result pytree shared by every fitting routine."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from vijax import results as _results


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


    def __repr__(self) -> str:
        return _results.result_repr(self)

    def summary(self, quantiles: Sequence[float] = (0.025, 0.5, 0.975), **kwargs):
        """Mean, sd and quantiles per latent element, in closed form from each family
        (a ``pandas.DataFrame`` when pandas is installed; see
        :func:`vijax.results.summary`)."""
        return _results.summary(self, quantiles, **kwargs)

    def sample(self, key, num_draws: int) -> dict:
        """Joint draws from ``q`` (the product of the factors): ``{latent: array}`` with a
        leading axis of ``num_draws`` (see :func:`vijax.results.sample`)."""
        return _results.sample(self, key, num_draws)

    def posterior_predictive(self, simulator: Callable, key, num_draws: int):
        """``simulator(key_i, z_i)`` for draws ``z_i ~ q``, vmapped (see
        :func:`vijax.posterior_predictive`)."""
        return _results.posterior_predictive(self, simulator, key, num_draws)

    def to_arviz(self, key, num_draws: int, **kwargs):
        """Draws from ``q`` as an ``arviz.InferenceData`` (see :func:`vijax.to_arviz`)."""
        return _results.to_arviz(self, key, num_draws, **kwargs)

    def save(self, path):
        """Write to one ``.npz`` file (see :func:`vijax.save_result`); returns the path."""
        return _results.save_result(self, path)

    @classmethod
    def load(cls, path) -> "FitResult":
        """Read a result written by :meth:`save` (see :func:`vijax.load_result`)."""
        result = _results.load_result(path)
        if not isinstance(result, cls):
            raise TypeError(f"{path} holds a {type(result).__name__}, not a {cls.__name__}; "
                            "use vijax.load_result")
        return result
