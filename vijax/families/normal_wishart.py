"""Normal-Wishart: the joint factor ``q(mu, L) = q(mu | L) q(L)`` of a mean vector and
its precision matrix, batched over leading axes (used only for declared blocks,
``blocks=[["mu", "L"]]``), and the multivariate Student-t marginal of its mean."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import gammaln

from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family, format_array, register_fields)
from vijax.families.mvn import _diag, _sym
from vijax.families.wishart import Wishart

_LOG_PI = math.log(math.pi)
_LOG_2PI = math.log(2.0 * math.pi)


def _mv(mat: Array, v: Array) -> Array:
    return jnp.einsum("...ij,...j->...i", mat, v)


@family
class NormalWishart(ExponentialFamily):
    """``L ~ W(V, nu)``, ``mu | L ~ N(m, (kappa L)^{-1})`` over ``D``-vectors ``mu``.

    Statistics ``T(mu, L) = {"L": L, "logdet": log|L|, "Lmu": L mu, "muLmu": mu^T L mu}``
    (base measure 1); natural parameters ``eta = (-V^{-1}/2 - kappa m m^T/2,
    (nu - D)/2, kappa m, -kappa/2)``. Integrating ``mu`` out leaves a Wishart with
    ``eta_W = (eta_L + eta_Lmu eta_Lmu^T / (2 kappa), eta_logdet - 1/2)``, so

    .. math:: A(\\eta) = \\tfrac{D}{2}\\log(2\\pi/\\kappa) + A_W(\\eta_W).

    Mean parameters ``E[L] = nu V``, ``E[log|L|]`` (Wishart), ``E[L mu] = E[L] m``,
    ``E[mu^T L mu] = m^T E[L] m + D/kappa``. A value is ``{"mean": mu, "precision": L}``.
    Marginals: ``L ~ W(V, nu)`` and ``mu ~ MultivariateT(nu - D + 1, m,
    V^{-1} / (kappa (nu - D + 1)))``.

    Example:
        >>> import jax.numpy as jnp
        >>> q = NormalWishart.from_params(jnp.zeros(2), 1.0, 4.0, jnp.eye(2) / 4.0)
        >>> q.mean()["precision"].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    stat_names = ("L", "logdet", "Lmu", "muLmu")
    stat_event_ndims = {"L": 2, "logdet": 0, "Lmu": 1, "muLmu": 0}
    event_ndim = 1
    support = "real"  # of the mean; the precision is positive definite
    roles = ("mean", "precision")
    role_supports = {"mean": "real", "precision": "positive_definite"}
    role_families = {"mean": "MultivariateNormal", "precision": "Wishart"}
    joint_stats = {
        frozenset({("precision", "x")}): "L",
        frozenset({("precision", "logdet")}): "logdet",
        frozenset({("precision", "x"), ("mean", "x")}): "Lmu",
        frozenset({("precision", "x"), ("mean", "xxT")}): "muLmu",
    }
    joint_kind = "matrix"
    requirement = ("mu | L ~ N(m, (kappa L)^{-1}): every term with the mean is a "
                   "contraction with the precision of the same component (c^T L mu, "
                   "mu^T L mu), and the precision appears as L and log|L|")

    # ------------------------------------------------------------ core
    @staticmethod
    def _parts(natural: Mapping[str, Array]):
        """``(m, kappa, Wishart natural parameters of the marginal of L)``."""
        kappa = -2.0 * natural["muLmu"]
        m = natural["Lmu"] / kappa[..., None]
        h = natural["Lmu"]
        wx = _sym(natural["L"]) + h[..., :, None] * h[..., None, :] / (2.0 * kappa[..., None, None])
        return m, kappa, {"x": wx, "logdet": natural["logdet"] - 0.5}

    @staticmethod
    def _dim(natural) -> int:
        return jnp.shape(natural["Lmu"])[-1]

    @classmethod
    def stats(cls, x) -> Natural:
        mu, prec = as_float_arrays(x["mean"], x["precision"])
        lmu = _mv(prec, mu)
        return {"L": prec, "logdet": jnp.linalg.slogdet(prec)[1], "Lmu": lmu,
                "muLmu": jnp.sum(mu * lmu, -1)}

    @classmethod
    def log_base_measure(cls, x) -> Array:
        mu, prec = as_float_arrays(x["mean"], x["precision"])
        return jnp.zeros(jnp.broadcast_shapes(mu.shape[:-1], prec.shape[:-2]), mu.dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        _, kappa, w = cls._parts(natural)
        d = cls._dim(natural)
        return 0.5 * d * (_LOG_2PI - jnp.log(kappa)) + Wishart.log_normalizer(w)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        m, kappa, w = cls._parts(natural)
        d = cls._dim(natural)
        mw = Wishart.mean_params(w)
        el = mw["x"]
        elm = _mv(el, m)
        return {"L": el, "logdet": mw["logdet"], "Lmu": elm,
                "muLmu": jnp.sum(m * elm, -1) + d / kappa}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        el = _sym(mean["L"])
        d = el.shape[-1]
        w = Wishart.natural_from_mean({"x": el, "logdet": mean["logdet"]})
        m = jnp.linalg.solve(el, mean["Lmu"][..., None])[..., 0]
        kappa = d / (mean["muLmu"] - jnp.sum(m * mean["Lmu"], -1))
        h = kappa[..., None] * m
        return {"L": w["x"] - h[..., :, None] * m[..., None, :] / 2.0,
                "logdet": w["logdet"] + 0.5, "Lmu": h, "muLmu": -0.5 * kappa}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        m, kappa, w = cls._parts(natural)
        safe = jnp.where((kappa > 0)[..., None, None], w["x"], -jnp.eye(m.shape[-1], dtype=m.dtype))
        return (kappa > 0) & jnp.all(jnp.isfinite(m), -1) & Wishart.is_valid_natural(
            {"x": safe, "logdet": w["logdet"]})

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        el = _sym(mean["L"])
        m = jnp.linalg.solve(el, mean["Lmu"][..., None])[..., 0]
        return Wishart.is_valid_mean({"x": el, "logdet": mean["logdet"]}) & (
            mean["muLmu"] > jnp.sum(m * mean["Lmu"], -1))

    @classmethod
    def mode(cls, natural: Mapping[str, Array]):
        """Joint mode: ``mu = m``, ``L = (nu - D) V`` (valid where ``nu > D``)."""
        m, kappa, w = cls._parts(natural)
        prec, valid = Wishart.mode({"x": w["x"], "logdet": natural["logdet"]})
        return {"mean": m, "precision": prec}, valid[..., 0, 0] & (kappa > 0)

    # ------------------------------------------------------------ usual params
    @classmethod
    def from_params(cls, loc, kappa, df, scale) -> "NormalWishart":
        """``NW(m, kappa, nu, V)``: ``L ~ W(V, nu)``, ``mu | L ~ N(m, (kappa L)^{-1})``."""
        loc, kappa = as_float_arrays(loc, kappa)
        check_param("NormalWishart.from_params", "kappa", kappa,
                    jnp.isfinite(kappa) & (kappa > 0), "finite and > 0")
        check_param("NormalWishart.from_params", "loc", loc, jnp.isfinite(loc), "finite")
        w = Wishart.from_df_scale(df, scale).natural
        batch = jnp.broadcast_shapes(loc.shape[:-1], kappa.shape, w["logdet"].shape)
        d = loc.shape[-1]
        loc = jnp.broadcast_to(loc, batch + (d,))
        kappa = jnp.broadcast_to(kappa, batch)
        h = kappa[..., None] * loc
        return cls({"L": jnp.broadcast_to(w["x"], batch + (d, d))
                    - h[..., :, None] * loc[..., None, :] / 2.0,
                    "logdet": jnp.broadcast_to(w["logdet"] + 0.5, batch), "Lmu": h,
                    "muLmu": -0.5 * kappa})

    @property
    def dim(self) -> int:
        return self._dim(self.natural)

    def params(self):
        """``(m, kappa, nu, V)``."""
        m, kappa, w = self._parts(self.natural)
        q = Wishart(w)
        return m, kappa, q.df, q.scale

    def usual_params(self) -> dict[str, Array]:
        m, kappa, nu, v = self.params()
        return {"loc": m, "kappa": kappa, "df": nu, "scale": v}

    def marginal_precision(self) -> Wishart:
        """``q(L) = W(V, nu)`` (exact)."""
        return Wishart(self._parts(self.natural)[2])

    def marginal_mean(self) -> "MultivariateT":
        """``q(mu) = MultivariateT(nu - D + 1, m, V^{-1} / (kappa (nu - D + 1)))`` (exact)."""
        m, kappa, w = self._parts(self.natural)
        d = self.dim
        nu = 2.0 * w["logdet"] + d + 1.0
        dof = nu - d + 1.0
        shape = -2.0 * _sym(w["x"]) / (kappa * dof)[..., None, None]
        return MultivariateT(dof, m, jnp.linalg.cholesky(shape))

    def marginals(self) -> dict:
        return {"mean": self.marginal_mean(), "precision": self.marginal_precision()}

    def mean(self) -> dict:
        m, _, nu, v = self.params()
        return {"mean": m, "precision": nu[..., None, None] * v}

    def variance(self) -> dict:
        """Marginal elementwise variances of ``mu`` (MultivariateT) and ``L`` (Wishart)."""
        return {"mean": self.marginal_mean().variance(),
                "precision": self.marginal_precision().variance()}

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def log_prob(self, x) -> Array:
        """``log q(mu, L)`` of a value ``{"mean": mu, "precision": L}``."""
        return self.inner(self.natural, self.stats(x)) - self.log_normalizer(self.natural)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> dict:
        """``L ~ W(V, nu)``, then ``mu = m + (sqrt(kappa) C^T)^{-1} eps`` with ``L = C C^T``."""
        m, kappa, w = self._parts(self.natural)
        k1, k2 = jax.random.split(key)
        prec = Wishart(w).sample(k1, sample_shape)
        chol = jnp.linalg.cholesky(prec)
        eps = jax.random.normal(k2, prec.shape[:-1], self.dtype)
        z = solve_triangular(jnp.swapaxes(chol, -1, -2), eps[..., None], lower=False)[..., 0]
        return {"mean": m + z / jnp.sqrt(kappa)[..., None], "precision": prec}

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "NormalWishart":
        """Small random means, ``kappa = 1``, ``E[L] = I`` with ``nu = D + 2``."""
        d = info.support.dim
        batch = tuple(info.support.shape)
        loc = 0.1 * start_random.normal(key, batch + (d,), dtype)
        df = jnp.full(batch, d + 2.0, dtype)
        scale = jnp.broadcast_to(jnp.eye(d, dtype=dtype) / (d + 2.0), batch + (d, d))
        return cls.from_params(loc, jnp.ones(batch, dtype), df, scale)

    # ------------------------------------------------------------ gradient path
    def to_unconstrained(self) -> dict[str, Array]:
        """``{"loc": m, "log_kappa": log kappa}`` plus the Wishart marginal's
        ``log_df_excess`` and ``mean_tril``."""
        m, kappa, w = self._parts(self.natural)
        return {"loc": m, "log_kappa": jnp.log(kappa), **Wishart(w).to_unconstrained()}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "NormalWishart":
        w = Wishart.from_unconstrained(
            {"log_df_excess": u["log_df_excess"], "mean_tril": u["mean_tril"]}).natural
        kappa = jnp.exp(u["log_kappa"])
        m = u["loc"]
        h = kappa[..., None] * m
        return cls({"L": w["x"] - h[..., :, None] * m[..., None, :] / 2.0,
                    "logdet": w["logdet"] + 0.5, "Lmu": h, "muLmu": -0.5 * kappa})


@dataclasses.dataclass(frozen=True)
class MultivariateT:
    """Multivariate Student-t ``t_nu(loc, S S^T)`` (``scale_tril = S``): the marginal of
    a Normal-Wishart's mean. Not an exponential family (summaries draw from it)."""

    df: Array
    loc: Array
    scale_tril: Array
    support = "real"

    @property
    def batch_shape(self):
        return jnp.broadcast_shapes(jnp.shape(self.df), jnp.shape(self.loc)[:-1])

    @property
    def dtype(self):
        return jnp.result_type(self.loc)

    def mean(self) -> Array:
        return jnp.where((self.df > 1)[..., None], self.loc, jnp.nan)

    def covariance(self) -> Array:
        """``S S^T df / (df - 2)`` (inf for ``df <= 2``)."""
        s = self.scale_tril
        safe = jnp.where(self.df > 2, self.df - 2.0, 1.0)
        cov = s @ jnp.swapaxes(s, -1, -2) * (self.df / safe)[..., None, None]
        return jnp.where((self.df > 2)[..., None, None], cov, jnp.inf)

    def variance(self) -> Array:
        return _diag(self.covariance())

    def std(self) -> Array:
        return jnp.sqrt(self.variance())

    def log_prob(self, x: Array) -> Array:
        d = self.loc.shape[-1]
        z = solve_triangular(self.scale_tril, (x - self.loc)[..., None], lower=True)[..., 0]
        nu = self.df
        return (gammaln(0.5 * (nu + d)) - gammaln(0.5 * nu) - 0.5 * d * (jnp.log(nu) + _LOG_PI)
                - jnp.sum(jnp.log(_diag(self.scale_tril)), -1)
                - 0.5 * (nu + d) * jnp.log1p(jnp.sum(z * z, -1) / nu))

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """``loc + S eps / sqrt(g / df)``, ``eps ~ N(0, I)``, ``g ~ chi^2(df)``."""
        d = self.loc.shape[-1]
        shape = tuple(sample_shape) + self.batch_shape
        k1, k2 = jax.random.split(key)
        eps = jax.random.normal(k1, shape + (d,), self.dtype)
        g = 2.0 * jax.random.gamma(k2, jnp.broadcast_to(0.5 * self.df, shape), shape, self.dtype)
        return self.loc + _mv(self.scale_tril, eps) / jnp.sqrt(g / self.df)[..., None]

    def usual_params(self) -> dict:
        return {"df": self.df, "loc": self.loc, "scale_tril": self.scale_tril}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={format_array(v)}" for k, v in self.usual_params().items())
        return f"MultivariateT({inner})"


register_fields(MultivariateT, ["df", "loc", "scale_tril"], [])
