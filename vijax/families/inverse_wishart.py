"""Inverse-Wishart distribution over symmetric positive-definite (covariance) matrices."""

from __future__ import annotations

import math
from typing import Mapping

import jax.numpy as jnp

from vijax.families.base import Array, ExponentialFamily, Natural, as_float_arrays, family
from vijax.families.mvn import _eye_like, _pd_ok, _sym
from vijax.families.wishart import (Wishart, _inverse, _logdet_chol, checked_df_scale,
                                    multidigamma, multigammaln)

_LOG2 = math.log(2.0)


@family
class InverseWishart(ExponentialFamily):
    """Inverse-Wishart ``IW(Psi, nu)`` over ``D x D`` positive-definite matrices ``S``
    (``S^{-1} ~ W(Psi^{-1}, nu)``):
    ``p(S) = |Psi|^{nu/2} |S|^{-(nu+D+1)/2} exp(-tr(Psi S^{-1})/2) / (2^{nu D/2} Gamma_D(nu/2))``.

    Statistics ``T(S) = {"inv": S^{-1}, "logdet": log|S|}``; natural parameters
    ``eta = {"inv": -Psi/2, "logdet": -(nu + D + 1)/2}`` (a non-symmetric ``"inv"`` is
    symmetrized); ``h = 1`` and

    .. math:: A(\\eta) = \\log\\Gamma_D(\\nu/2) - \\tfrac{\\nu}{2}\\log|-\\eta_{inv}|.

    Mean parameters ``E[S^{-1}] = nu Psi^{-1}``, ``E[log|S|] = log|Psi| - D log 2 -
    sum_j digamma((nu+1-j)/2)``. Valid for ``nu > D - 1`` and ``Psi`` positive definite;
    ``E[S] = Psi / (nu - D - 1)`` needs ``nu > D + 1``.

    Example:
        >>> import jax.numpy as jnp
        >>> q = InverseWishart.from_df_scale(6.0, 3.0 * jnp.eye(2))
        >>> jnp.round(q.mean(), 12).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    stat_names = ("inv", "logdet")
    stat_event_ndims = {"inv": 2, "logdet": 0}
    event_ndim = 2
    support = "positive_definite"
    # "inv" is the walk statistic of the matrix inverse (rules_covariance), not of an
    # elementwise reciprocal (which no positive-definite family accepts)
    walk_stats = {("inv", 1.0): "inv", ("logdet", 1.0): "logdet"}

    # ------------------------------------------------------------ core
    @staticmethod
    def _dim(natural: Mapping[str, Array]) -> int:
        return jnp.shape(natural["inv"])[-1]

    @classmethod
    def _parts(cls, natural: Mapping[str, Array]):
        """``(nu, chol of Psi = -2 sym(eta_inv), D)``."""
        d = cls._dim(natural)
        nu = -2.0 * natural["logdet"] - d - 1.0
        chol = jnp.linalg.cholesky(-2.0 * _sym(natural["inv"]))
        return nu, chol, d

    @classmethod
    def _wishart_of_inverse(cls, natural: Mapping[str, Array]) -> Natural:
        """Natural parameters of ``S^{-1} ~ W(Psi^{-1}, nu)``."""
        d = cls._dim(natural)
        return {"x": natural["inv"], "logdet": -natural["logdet"] - d - 1.0}

    @classmethod
    def stats(cls, x: Array) -> Natural:
        chol = jnp.linalg.cholesky(_sym(x))
        return {"inv": _inverse(chol), "logdet": _logdet_chol(chol)}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        (x,) = as_float_arrays(x)
        return jnp.zeros(x.shape[:-2], x.dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        nu, chol, d = cls._parts(natural)
        # log|-eta_inv| = log|Psi| - D log 2
        return multigammaln(0.5 * nu, d) - 0.5 * nu * (_logdet_chol(chol) - d * _LOG2)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        nu, chol, d = cls._parts(natural)
        return {"inv": nu[..., None, None] * _inverse(chol),
                "logdet": _logdet_chol(chol) - d * _LOG2 - multidigamma(0.5 * nu, d)}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        # S^{-1} ~ W(V, nu) with E[S^{-1}] = M and E[log|S^{-1}|] = -E[log|S|]
        w = Wishart.natural_from_mean({"x": mean["inv"], "logdet": -mean["logdet"]})
        d = jnp.shape(mean["inv"])[-1]
        return {"inv": w["x"], "logdet": -w["logdet"] - d - 1.0}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        nu, chol, d = cls._parts(natural)
        return _pd_ok(chol) & (nu > d - 1.0) & jnp.isfinite(nu)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        """``E[S^{-1}]`` positive definite and ``log|E S^{-1}| > E log|S^{-1}|`` (Jensen)."""
        chol = jnp.linalg.cholesky(_sym(mean["inv"]))
        return _pd_ok(chol) & (_logdet_chol(chol) + mean["logdet"] > 0)

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``Psi / (nu + D + 1) = eta_inv / eta_logdet`` (exists for every valid member)."""
        nu, chol, d = cls._parts(natural)
        valid = _pd_ok(chol) & (nu > d - 1.0) & jnp.isfinite(nu)
        scale = jnp.where(valid[..., None, None], -2.0 * _sym(natural["inv"]),
                          _eye_like(chol))
        x = scale / jnp.where(valid, nu + d + 1.0, 1.0)[..., None, None]
        return x, jnp.broadcast_to(valid[..., None, None], x.shape)

    # ------------------------------------------------------------ usual params
    @classmethod
    def from_df_scale(cls, df: Array, scale: Array) -> "InverseWishart":
        """``IW(scale, df)``: ``scale`` (``Psi``) ``[..., D, D]`` symmetric positive
        definite and ``df > D - 1``."""
        df, scale, _ = checked_df_scale("InverseWishart.from_df_scale", df, scale)
        d = scale.shape[-1]
        batch = jnp.broadcast_shapes(df.shape, scale.shape[:-2])
        return cls({"inv": jnp.broadcast_to(-0.5 * _sym(scale), batch + (d, d)),
                    "logdet": jnp.broadcast_to(-0.5 * (df + d + 1.0), batch)})

    @property
    def dim(self) -> int:
        return self._dim(self.natural)

    @property
    def df(self) -> Array:
        return -2.0 * self.natural["logdet"] - self.dim - 1.0

    @property
    def scale(self) -> Array:
        return -2.0 * _sym(self.natural["inv"])

    def mean(self) -> Array:
        """``Psi / (nu - D - 1)`` (NaN where ``nu <= D + 1``: no finite mean)."""
        excess = self.df - self.dim - 1.0
        return self.scale / jnp.where(excess > 0, excess, jnp.nan)[..., None, None]

    def variance(self) -> Array:
        """``Var(S_ij) = ((n+2) Psi_ij^2 + n Psi_ii Psi_jj) / ((n+1) n^2 (n-2))`` with
        ``n = nu - D - 1`` (NaN where ``nu <= D + 3``)."""
        psi = self.scale
        dg = jnp.diagonal(psi, axis1=-2, axis2=-1)
        n = (self.df - self.dim - 1.0)[..., None, None]
        den = (n + 1.0) * n * n * (n - 2.0)
        return jnp.where(n > 2.0, ((n + 2.0) * psi * psi + n * dg[..., :, None]
                                   * dg[..., None, :]) / den, jnp.nan)

    def usual_params(self) -> dict[str, Array]:
        return {"df": self.df, "scale": self.scale}

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """``S = W^{-1}`` with ``W ~ W(Psi^{-1}, nu)`` drawn by Bartlett's construction."""
        w = Wishart(self._wishart_of_inverse(self.natural)).sample(key, sample_shape)
        return _inverse(jnp.linalg.cholesky(_sym(w)))

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "InverseWishart":
        """Mean identity with ``nu = D + 2`` (``Psi = I``)."""
        d = info.support.dim
        df = jnp.full(tuple(info.support.shape), d + 2.0, dtype)
        return cls.from_df_scale(df, jnp.broadcast_to(jnp.eye(d, dtype=dtype),
                                                      df.shape + (d, d)))

    # ------------------------------------------------------------ gradient path
    def to_unconstrained(self) -> dict[str, Array]:
        """Those of the Wishart of ``S^{-1}``: ``{"log_df_excess": log(nu - D + 1),
        "mean_tril": R}`` with ``E[S^{-1}] = S S^T``, ``S`` from ``R`` as in
        :meth:`Wishart.to_unconstrained`."""
        return Wishart(self._wishart_of_inverse(self.natural)).to_unconstrained()

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "InverseWishart":
        w = Wishart.from_unconstrained(u).natural
        d = jnp.shape(w["x"])[-1]
        return cls({"inv": w["x"], "logdet": -w["logdet"] - d - 1.0})


__all__ = ["InverseWishart"]
