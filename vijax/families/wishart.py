"""Wishart distribution over symmetric positive-definite matrices."""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular
from jax.scipy.special import digamma, gammaln

from vijax.errors import InvalidParameterError
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.gamma import trigamma
from vijax.families.mvn import _diag, _eye_like, _pd_ok, _sym, scale_from_unconstrained

_LOG2 = math.log(2.0)
_JITTER = ("Its Cholesky factorization failed; if it is only numerically singular, add a "
           "small multiple of the identity.")


def multigammaln(a: Array, d: int) -> Array:
    """``log Gamma_D(a) = D(D-1)/4 log(pi) + sum_{j=1}^D lgamma(a + (1 - j)/2)``."""
    j = jnp.arange(d, dtype=jnp.result_type(a))
    return d * (d - 1) / 4.0 * math.log(math.pi) + jnp.sum(
        gammaln(a[..., None] - 0.5 * j), -1)


def multidigamma(a: Array, d: int) -> Array:
    """``d/da log Gamma_D(a) = sum_{j=1}^D digamma(a + (1 - j)/2)``."""
    j = jnp.arange(d, dtype=jnp.result_type(a))
    return jnp.sum(digamma(a[..., None] - 0.5 * j), -1)


def _logdet_chol(chol: Array) -> Array:
    return 2.0 * jnp.sum(jnp.log(_diag(chol)), -1)


def _inverse(chol: Array) -> Array:
    return _sym(cho_solve((chol, True), _eye_like(chol)))


def checked_df_scale(where: str, df: Array, scale: Array):
    """``(df, scale, chol(scale))`` as float arrays, after checking a Wishart-type
    ``(df, scale)`` pair: ``scale`` ``[..., D, D]`` finite, symmetric and positive
    definite, ``df`` finite and ``> D - 1``. ``where`` names the constructor."""
    df, scale = as_float_arrays(df, scale)
    if scale.ndim < 2 or scale.shape[-1] != scale.shape[-2]:
        raise InvalidParameterError(
            f"{where}: scale must have shape [..., D, D]; got {scale.shape}.")
    d = scale.shape[-1]
    check_param(where, "scale", scale, jnp.all(jnp.isfinite(scale), (-2, -1)), "finite")
    tol = 1e3 * jnp.finfo(scale.dtype).eps * jnp.max(jnp.abs(scale), (-2, -1))
    check_param(where, "scale", scale, jnp.all(
        jnp.abs(scale - jnp.swapaxes(scale, -1, -2)) <= tol[..., None, None], (-2, -1)),
        "symmetric")
    chol = jnp.linalg.cholesky(_sym(scale))
    check_param(where, "scale", scale, _pd_ok(chol), "positive definite", _JITTER)
    check_param(where, "df", df, jnp.isfinite(df) & (df > d - 1),
                f"finite and > D - 1 = {d - 1}")
    return df, scale, chol


def _diag_matrix(v: Array) -> Array:
    return v[..., :, None] * jnp.eye(v.shape[-1], dtype=v.dtype)


@family
class Wishart(ExponentialFamily):
    """Wishart ``W(V, nu)`` over ``D x D`` positive-definite matrices ``L``:
    ``p(L) = |L|^{(nu-D-1)/2} exp(-tr(V^{-1} L)/2) / (2^{nu D/2} |V|^{nu/2} Gamma_D(nu/2))``.

    Statistics ``T(L) = {"x": L, "logdet": log|L|}``; natural parameters
    ``eta = {"x": -V^{-1}/2, "logdet": (nu - D - 1)/2}`` (a non-symmetric ``"x"`` is
    symmetrized: ``<eta, L>`` only sees its symmetric part); ``h = 1`` and

    .. math:: A(\\eta) = \\log\\Gamma_D(\\nu/2) - \\tfrac{\\nu}{2}\\log|-\\eta_x|.

    Mean parameters ``E[L] = nu V``, ``E[log|L|] = sum_j digamma((nu+1-j)/2) + D log 2 +
    log|V|``. Valid for ``nu > D - 1`` and ``V`` positive definite.

    Example:
        >>> import jax.numpy as jnp
        >>> q = Wishart.from_df_scale(5.0, jnp.eye(2) / 5.0)
        >>> jnp.round(q.mean(), 12).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    stat_names = ("x", "logdet")
    stat_event_ndims = {"x": 2, "logdet": 0}
    event_ndim = 2
    support = "positive_definite"
    walk_stats = {("x", 1.0): "x", ("logdet", 1.0): "logdet"}

    # ------------------------------------------------------------ core
    @staticmethod
    def _dim(natural: Mapping[str, Array]) -> int:
        return jnp.shape(natural["x"])[-1]

    @classmethod
    def _parts(cls, natural: Mapping[str, Array]):
        """``(nu, chol of V^{-1} = -2 sym(eta_x), D)``."""
        d = cls._dim(natural)
        nu = 2.0 * natural["logdet"] + d + 1.0
        chol = jnp.linalg.cholesky(-2.0 * _sym(natural["x"]))
        return nu, chol, d

    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"x": x, "logdet": jnp.linalg.slogdet(x)[1]}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        (x,) = as_float_arrays(x)
        return jnp.zeros(x.shape[:-2], x.dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        nu, chol, d = cls._parts(natural)
        # log|-eta_x| = log|V^{-1}| - D log 2
        return multigammaln(0.5 * nu, d) - 0.5 * nu * (_logdet_chol(chol) - d * _LOG2)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        nu, chol, d = cls._parts(natural)
        scale = _inverse(chol)
        return {"x": nu[..., None, None] * scale,
                "logdet": multidigamma(0.5 * nu, d) + d * _LOG2 - _logdet_chol(chol)}

    @classmethod
    def df_from_gap(cls, gap: Array, d: int, num_iters: int = 40) -> Array:
        """Solve ``g(nu) = D log(nu/2) - sum_j digamma((nu+1-j)/2) = gap`` for
        ``nu > D - 1`` (``g`` decreases from +inf to 0; ``gap = log|E L| - E log|L|``).
        Newton's method on ``t = log(nu - D + 1)`` from ``nu ~ D(D+1)/(2 gap)``."""
        gap = jnp.maximum(gap, jnp.finfo(jnp.result_type(gap)).tiny ** 0.5)

        def g(nu):
            return d * jnp.log(0.5 * nu) - multidigamma(0.5 * nu, d)

        def dg(nu):
            j = jnp.arange(d, dtype=nu.dtype)
            return d / nu - 0.5 * jnp.sum(trigamma(0.5 * nu[..., None] - 0.5 * j), -1)

        nu0 = jnp.maximum(d * (d + 1) / (2.0 * gap), d - 1.0 + 1e-3) + 0.5 * (d - 1)
        t0 = jnp.log(nu0 - d + 1.0)

        def newton(_, t):
            nu = d - 1.0 + jnp.exp(t)
            step = (g(nu) - gap) / (dg(nu) * jnp.exp(t))
            return t - jnp.clip(step, -2.0, 2.0)

        t = jax.lax.fori_loop(0, num_iters, newton, t0)
        return d - 1.0 + jnp.exp(t)

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        m = _sym(mean["x"])
        d = m.shape[-1]
        chol_m = jnp.linalg.cholesky(m)
        nu = cls.df_from_gap(_logdet_chol(chol_m) - mean["logdet"], d)
        # V = M / nu  ->  eta_x = -nu M^{-1} / 2
        return {"x": -0.5 * nu[..., None, None] * _inverse(chol_m),
                "logdet": 0.5 * (nu - d - 1.0)}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        nu, chol, d = cls._parts(natural)
        return _pd_ok(chol) & (nu > d - 1.0) & jnp.isfinite(nu)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        chol = jnp.linalg.cholesky(_sym(mean["x"]))
        return _pd_ok(chol) & (_logdet_chol(chol) > mean["logdet"])

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``(nu - D - 1) V = eta_logdet (-eta_x)^{-1}``, valid where ``nu > D + 1``."""
        nu, chol, d = cls._parts(natural)
        valid = _pd_ok(chol) & (natural["logdet"] > 0) & jnp.isfinite(nu)
        safe = jnp.where(valid[..., None, None], chol, _eye_like(chol))
        x = (nu - d - 1.0)[..., None, None] * _inverse(safe)
        return x, jnp.broadcast_to(valid[..., None, None], x.shape)

    # ------------------------------------------------------------ usual params
    @classmethod
    def from_df_scale(cls, df: Array, scale: Array) -> "Wishart":
        """``W(scale, df)``: ``scale`` ``[..., D, D]`` symmetric positive definite and
        ``df > D - 1``."""
        df, scale, chol = checked_df_scale("Wishart.from_df_scale", df, scale)
        d = scale.shape[-1]
        prec = _inverse(chol)
        batch = jnp.broadcast_shapes(df.shape, scale.shape[:-2])
        return cls({"x": jnp.broadcast_to(-0.5 * prec, batch + (d, d)),
                    "logdet": jnp.broadcast_to(0.5 * (df - d - 1.0), batch)})

    @property
    def dim(self) -> int:
        return self._dim(self.natural)

    @property
    def df(self) -> Array:
        return 2.0 * self.natural["logdet"] + self.dim + 1.0

    @property
    def scale(self) -> Array:
        return _inverse(jnp.linalg.cholesky(-2.0 * _sym(self.natural["x"])))

    def mean(self) -> Array:
        return self.df[..., None, None] * self.scale

    def variance(self) -> Array:
        """``Var(L_ij) = nu (V_ij^2 + V_ii V_jj)``."""
        v = self.scale
        dg = _diag(v)
        return self.df[..., None, None] * (v * v + dg[..., :, None] * dg[..., None, :])

    def usual_params(self) -> dict[str, Array]:
        return {"df": self.df, "scale": self.scale}

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Bartlett: ``L = C A A^T C^T`` with ``V = C C^T``, ``A`` lower triangular,
        ``A_ii^2 ~ chi^2(nu - i)`` (i = 0..D-1, ``jax.random.gamma``: reparameterized)
        and ``A_ij ~ N(0, 1)`` below the diagonal."""
        d, dtype = self.dim, self.dtype
        chol_v = jnp.linalg.cholesky(self.scale)
        shape = tuple(sample_shape) + self.batch_shape
        k1, k2 = jax.random.split(key)
        conc = 0.5 * (self.df[..., None] - jnp.arange(d, dtype=dtype))
        diag = jnp.sqrt(2.0 * jax.random.gamma(k1, jnp.broadcast_to(conc, shape + (d,)),
                                               shape + (d,), dtype))
        low = jnp.tril(jax.random.normal(k2, shape + (d, d), dtype), -1)
        a = low + _diag_matrix(diag)
        ca = jnp.broadcast_to(chol_v, shape + (d, d)) @ a
        return ca @ jnp.swapaxes(ca, -1, -2)

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "Wishart":
        """Mean identity with ``nu = D + 2`` (a mode exists)."""
        d = info.support.dim
        df = jnp.full(tuple(info.support.shape), d + 2.0, dtype)
        scale = jnp.broadcast_to(jnp.eye(d, dtype=dtype) / (d + 2.0), df.shape + (d, d))
        return cls.from_df_scale(df, scale)

    # ------------------------------------------------------------ gradient path
    def to_unconstrained(self) -> dict[str, Array]:
        """``{"log_df_excess": log(nu - D + 1), "mean_tril": R}`` with the mean's
        Cholesky factor ``S = (I + tril(R, -1)) diag(exp(diag R))``, ``E[L] = S S^T``
        (the spread and the location are separate directions, as the Gamma's)."""
        chol = jnp.linalg.cholesky(self.mean())
        dg = _diag(chol)
        raw = jnp.tril(chol / dg[..., None, :], -1) + _diag_matrix(jnp.log(dg))
        return {"log_df_excess": jnp.log(self.df - self.dim + 1.0), "mean_tril": raw}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "Wishart":
        raw = u["mean_tril"]
        d = raw.shape[-1]
        s = scale_from_unconstrained(raw)
        nu = d - 1.0 + jnp.exp(u["log_df_excess"])
        # V^{-1} = nu M^{-1} = nu S^{-T} S^{-1}
        inv = solve_triangular(s, _eye_like(s), lower=True)
        prec = nu[..., None, None] * _sym(jnp.swapaxes(inv, -1, -2) @ inv)
        return cls({"x": -0.5 * prec, "logdet": 0.5 * (nu - d - 1.0)})
