"""The methods every result class shares (``FitResult``, ``EMResult``, ``LaplaceResult``):
one screen of ``repr`` and the functions of :mod:`vijax.results` bound to the result.

``@with_result_methods`` on a result class adds them; a class that defines one of the
names itself (EM's own ``repr``) keeps its own.
"""

from __future__ import annotations

from typing import Callable, Sequence

from vijax.results.arviz_export import to_arviz as _to_arviz
from vijax.results.display import result_repr as _repr
from vijax.results.draws import posterior_predictive as _predictive
from vijax.results.draws import sample as _sample
from vijax.results.io import save_result as _save
from vijax.results.summary import summary as _summary


def __repr__(self) -> str:
    return _repr(self)


def summary(self, quantiles: Sequence[float] = (0.025, 0.5, 0.975), **kwargs):
    """Mean, sd and quantiles per latent element, in closed form from each family where
    it has one (a ``pandas.DataFrame`` when pandas is installed; see
    :func:`vijax.summary`). A Laplace result needs ``supports=model``."""
    return _summary(self, quantiles, **kwargs)


def sample(self, key, num_draws: int, **kwargs) -> dict:
    """Joint draws from the approximation: ``{latent: array}`` with a leading axis of
    ``num_draws`` (see :func:`vijax.results.sample`)."""
    return _sample(self, key, num_draws, **kwargs)


def posterior_predictive(self, simulator: Callable, key, num_draws: int, **kwargs):
    """``simulator(key_i, z_i)`` for draws ``z_i`` of the approximation, vmapped (see
    :func:`vijax.posterior_predictive`)."""
    return _predictive(self, simulator, key, num_draws, **kwargs)


def to_arviz(self, key, num_draws: int, **kwargs):
    """Draws as an ``arviz.InferenceData`` (see :func:`vijax.to_arviz`)."""
    return _to_arviz(self, key, num_draws, **kwargs)


def save(self, path):
    """Write to one ``.npz`` file (see :func:`vijax.save_result`); returns the path."""
    return _save(self, path)


_METHODS = {f.__name__: f for f in (__repr__, summary, sample, posterior_predictive,
                                     to_arviz, save)}


def with_result_methods(cls):
    """Class decorator: add the shared result methods ``cls`` does not define itself
    (a NamedTuple's generated ``__repr__`` does not count as its own)."""
    for name, fn in _METHODS.items():
        own = cls.__dict__.get(name)
        if own is None or getattr(own, "__module__", None) != cls.__module__:
            setattr(cls, name, fn)
    return cls
