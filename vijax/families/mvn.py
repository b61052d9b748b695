"""Multivariate normal distribution as an exponential family."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular
from jax.scipy.special import ndtri

from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.layout import EventLayout

_LOG_2PI = math.log(2.0 * math.pi)
_JITTER_HINT = ("Its Cholesky factorization failed; if it is only numerically singular, "
                "add a small multiple of the identity (e.g. 1e-6 * eye(D)).")


def _sym(a: Array) -> Array:
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _eye_like(a: Array) -> Array:
    return jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)


def _diag(a: Array) -> Array:
    return jnp.diagonal(a, axis1=-2, axis2=-1)


def _chol_inverse(chol: Array) -> Array:
    """``(L L^T)^{-1}`` from the Cholesky factor ``L`` (two triangular solves)."""
    return _sym(cho_solve((chol, True), _eye_like(chol)))


def _chol_solve_vec(chol: Array, b: Array) -> Array:
    return cho_solve((chol, True), b[..., None])[..., 0]


def _pd_ok(chol: Array) -> Array:
    """True where a Cholesky factorization succeeded (finite, positive diagonal)."""
    d = _diag(chol)
    return jnp.all(jnp.isfinite(chol), (-2, -1)) & jnp.all(d > 0, -1)


def _broadcast_loc_matrix(loc: Array, mat: Array) -> tuple[Array, Array]:
    batch = jnp.broadcast_shapes(loc.shape[:-1], mat.shape[:-2])
    d = loc.shape[-1]
    return jnp.broadcast_to(loc, batch + (d,)), jnp.broadcast_to(mat, batch + (d, d))


@family
class MultivariateNormal(ExponentialFamily):
    """Multivariate normal ``N(m, Sigma)`` over the last axis (size ``D``).

    Statistics ``T(x) = {"x": x, "xxT": x x^T}``; natural parameters
    ``eta = {"x": Lambda m, "xxT": -Lambda / 2}`` with precision
    ``Lambda = Sigma^{-1}`` (a non-symmetric ``"xxT"`` is symmetrized,
    ``Lambda = -(E + E^T)``); ``log h(x) = -D log(2 pi) / 2``; log-normalizer

    .. math:: A(\\eta) = \\tfrac12 \\eta_x^T \\Lambda^{-1} \\eta_x - \\tfrac12 \\log|\\Lambda|.

    Everything goes through the Cholesky factor of the precision; no explicit
    inverse is formed except for ``cov`` itself.

    ``layout`` (static, optional): the :class:`~vijax.families.layout.EventLayout` of a
    latent whose declared shape is not ``batch + (D,)`` (a coupling along several or
    non-trailing axes). With it, :meth:`mean`, :meth:`variance`, :meth:`sample` and
    :meth:`log_prob` read and return values of the declared shape; ``natural``, ``loc``,
    ``cov``, ``precision`` and ``covariance()`` stay in the family's ``batch + (D,)``
    layout. The posteriors of :func:`vijax.cavi` and :func:`vijax.fit_gradient` carry it.

    Example:
        >>> import jax.numpy as jnp
        >>> q = MultivariateNormal.from_loc_cov(jnp.zeros(2), jnp.diag(jnp.array([1., 4.])))
        >>> q.variance().tolist()
        [1.0, 4.0]
    """

    layout: Optional[EventLayout] = None

    stat_names = ("x", "xxT")
    stat_event_ndims = {"x": 1, "xxT": 2}
    event_ndim = 1
    support = "real"
    walk_stats = {("x", 1.0): "x", ("x", 2.0): "xxT"}
    pair_stat = "xxT"
    couples_elements = True

    def with_layout(self, layout: Optional[EventLayout]) -> "MultivariateNormal":
        """The same distribution whose values have ``layout.shape`` (see the class
        docstring)."""
        if layout is not None and (layout.batch_shape, layout.event_size) != (
                tuple(jnp.shape(self.natural["x"])[:-1]), self.dim):
            raise ValueError(f"layout {layout} does not match a MultivariateNormal of batch "
                             f"shape {jnp.shape(self.natural['x'])[:-1]} and dimension {self.dim}")
        return dataclasses.replace(self, layout=layout)

    def _value(self, y: Array) -> Array:
        return y if self.layout is None else self.layout.to_value(y)

    def _flat(self, x: Array) -> Array:
        return x if self.layout is None else self.layout.to_family(x)

    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"x": x, "xxT": x[..., :, None] * x[..., None, :]}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        (x,) = as_float_arrays(x)
        return jnp.full(x.shape[:-1], -0.5 * x.shape[-1] * _LOG_2PI, x.dtype)

    @classmethod
    def _precision_chol(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        precision = -2.0 * _sym(natural["xxT"])
        return precision, jnp.linalg.cholesky(precision)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        _, chol = cls._precision_chol(natural)
        w = solve_triangular(chol, natural["x"][..., None], lower=True)[..., 0]
        return 0.5 * jnp.sum(w * w, -1) - jnp.sum(jnp.log(_diag(chol)), -1)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        _, chol = cls._precision_chol(natural)
        loc = _chol_solve_vec(chol, natural["x"])
        cov = _chol_inverse(chol)
        return {"x": loc, "xxT": cov + loc[..., :, None] * loc[..., None, :]}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        loc = mean["x"]
        cov = _sym(mean["xxT"]) - loc[..., :, None] * loc[..., None, :]
        chol = jnp.linalg.cholesky(cov)
        precision = _chol_inverse(chol)
        return {"x": _chol_solve_vec(chol, loc), "xxT": -0.5 * precision}

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``(-2 eta_xxT)^-1 eta_x`` (the mean), valid where ``-eta_xxT`` is positive
        definite."""
        _, chol = cls._precision_chol(natural)
        valid = cls.is_valid_natural(natural)
        safe = jnp.where(valid[..., None, None], chol, _eye_like(chol))
        x = _chol_solve_vec(safe, natural["x"])
        return x, jnp.broadcast_to(valid[..., None], jnp.shape(x))

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        _, chol = cls._precision_chol(natural)
        return _pd_ok(chol) & jnp.all(jnp.isfinite(natural["x"]), -1)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        loc = mean["x"]
        cov = _sym(mean["xxT"]) - loc[..., :, None] * loc[..., None, :]
        return _pd_ok(jnp.linalg.cholesky(cov))

    # ------------------------------------------------------------ usual params
    @classmethod
    def from_loc_cov(cls, loc: Array, cov: Array) -> "MultivariateNormal":
        """From mean ``[..., D]`` and symmetric positive-definite covariance ``[..., D, D]``."""
        loc, cov = as_float_arrays(loc, cov)
        cls._check_matrix("from_loc_cov", "cov", loc, cov)
        loc, cov = _broadcast_loc_matrix(loc, cov)
        chol = jnp.linalg.cholesky(_sym(cov))
        check_param("MultivariateNormal.from_loc_cov", "cov", cov, _pd_ok(chol),
                    "positive definite", _JITTER_HINT)
        return cls({"x": _chol_solve_vec(chol, loc), "xxT": -0.5 * _chol_inverse(chol)})

    @classmethod
    def from_loc_precision(cls, loc: Array, precision: Array) -> "MultivariateNormal":
        """From mean ``[..., D]`` and symmetric positive-definite precision ``[..., D, D]``."""
        loc, precision = as_float_arrays(loc, precision)
        cls._check_matrix("from_loc_precision", "precision", loc, precision)
        loc, precision = _broadcast_loc_matrix(loc, _sym(precision))
        check_param("MultivariateNormal.from_loc_precision", "precision", precision,
                    _pd_ok(jnp.linalg.cholesky(precision)), "positive definite",
                    _JITTER_HINT)
        eta_x = jnp.einsum("...ij,...j->...i", precision, loc)
        return cls({"x": eta_x, "xxT": -0.5 * precision})

    @staticmethod
    def _check_matrix(where: str, name: str, loc: Array, mat: Array) -> None:
        if mat.ndim < 2 or mat.shape[-1] != mat.shape[-2] or loc.shape[-1:] != mat.shape[-1:]:
            raise ValueError(f"MultivariateNormal.{where}: {name} must have shape "
                             f"[..., D, D] matching loc [..., D]; got {name} {mat.shape}, "
                             f"loc {loc.shape}.")
        check_param(f"MultivariateNormal.{where}", "loc", loc, jnp.isfinite(loc), "finite")
        check_param(f"MultivariateNormal.{where}", name, mat,
                    jnp.all(jnp.isfinite(mat), (-2, -1)), "finite")
        tol = 1e3 * jnp.finfo(mat.dtype).eps * jnp.max(jnp.abs(mat), (-2, -1))
        check_param(f"MultivariateNormal.{where}", name, mat,
                    jnp.all(jnp.abs(mat - jnp.swapaxes(mat, -1, -2)) <= tol[..., None, None],
                            (-2, -1)), "symmetric")

    @property
    def precision(self) -> Array:
        return -2.0 * _sym(self.natural["xxT"])

    @property
    def precision_chol(self) -> Array:
        """Lower Cholesky factor ``L`` of the precision, ``Lambda = L L^T``."""
        return jnp.linalg.cholesky(self.precision)

    @property
    def loc(self) -> Array:
        return _chol_solve_vec(self.precision_chol, self.natural["x"])

    @property
    def cov(self) -> Array:
        return _chol_inverse(self.precision_chol)

    @property
    def dim(self) -> int:
        return self.natural["x"].shape[-1]

    def covariance(self) -> Array:
        return self.cov

    def mean(self) -> Array:
        return self._value(self.loc)

    def variance(self) -> Array:
        """Diagonal of the covariance."""
        return self._value(_diag(self.cov))

    def quantile(self, q: Array) -> Array:
        """Per-coordinate quantiles of the marginal normals ``N(m_i, Sigma_ii)``, shape
        ``jnp.shape(q)`` + the value shape."""
        q = self._quantile_shape(q, (self.dim,))
        return self._value(self.loc + jnp.sqrt(_diag(self.cov)) * ndtri(q))

    def usual_params(self) -> dict[str, Array]:
        return {"loc": self.loc, "cov": self.cov}

    # ------------------------------------------------------------ closed forms
    def log_prob(self, x: Array) -> Array:
        x = self._flat(x)
        chol = self.precision_chol
        loc = _chol_solve_vec(chol, self.natural["x"])
        # (x - m)^T Lambda (x - m) = |L^T (x - m)|^2
        z = jnp.einsum("...ji,...j->...i", chol, x - loc)
        return (-0.5 * jnp.sum(z * z, -1) + jnp.sum(jnp.log(_diag(chol)), -1)
                - 0.5 * self.dim * _LOG_2PI)

    def entropy(self) -> Array:
        return (0.5 * self.dim * (1.0 + _LOG_2PI)
                - jnp.sum(jnp.log(_diag(self.precision_chol)), -1))

    def kl(self, other: "MultivariateNormal") -> Array:
        """``(tr(Lq Sp) + (mq - mp)^T Lq (mq - mp) - D + log|Lp| - log|Lq|) / 2``."""
        self._check_same_family(other)
        chol_p, chol_q = self.precision_chol, other.precision_chol
        chol_p, chol_q = jnp.broadcast_arrays(chol_p, chol_q)
        # tr(Lambda_q Sigma_p) = |L_p^{-1} L_q|_F^2
        trace = jnp.sum(solve_triangular(chol_p, chol_q, lower=True) ** 2, (-2, -1))
        diff = jnp.einsum("...ji,...j->...i", chol_q, other.loc - self.loc)
        logdet = 2.0 * jnp.sum(jnp.log(_diag(chol_p)) - jnp.log(_diag(chol_q)), -1)
        return 0.5 * (trace + jnp.sum(diff * diff, -1) - self.dim + logdet)

    def expected_log_base_measure(self) -> Array:
        return self._constant(-0.5 * self.dim * _LOG_2PI)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Reparameterized ``m + L^{-T} eps`` with ``Lambda = L L^T`` (no inverse)."""
        chol = self.precision_chol
        shape = tuple(sample_shape) + chol.shape[:-1]
        eps = jax.random.normal(key, shape, self.dtype)
        chol = jnp.broadcast_to(chol, shape + shape[-1:])
        z = solve_triangular(chol, eps[..., None], lower=True, trans="T")[..., 0]
        return self._value(self.loc + z)

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "MultivariateNormal":
        """Identity covariance around small random means, in the ``info.batch_shape +
        (info.event_size,)`` layout."""
        size = info.event_size
        check_dense_size(getattr(info, "name", "?"), tuple(info.batch_shape), size, dtype)
        loc = 0.1 * start_random.normal(key, tuple(info.batch_shape) + (size,), dtype)
        cov = jnp.broadcast_to(jnp.eye(size, dtype=dtype), loc.shape + (size,))
        return cls.from_loc_cov(loc, cov)

    @classmethod
    def factor_from_unconstrained(cls, u: Mapping[str, Array]):
        """Read off the scale factor ``S`` directly: ``E[x x^T] = S S^T + m m^T``,
        ``H = sum log diag S + const``, ``x = m + S eps`` (no precision matrix and no
        refactorization)."""
        raw = u["scale_tril"]
        d = jnp.exp(_diag(raw))
        scale = scale_from_unconstrained(raw)
        loc = jnp.broadcast_to(u["loc"], scale.shape[:-1])
        mean = {"x": loc, "xxT": scale @ jnp.swapaxes(scale, -1, -2)
                + loc[..., :, None] * loc[..., None, :]}
        size = raw.shape[-1]
        entropy = jnp.sum(jnp.log(d)) + 0.5 * size * (1.0 + _LOG_2PI) * (d.size // size)

        def sample(key, shape):
            eps = jax.random.normal(key, tuple(shape) + loc.shape, loc.dtype)
            return loc + jnp.einsum("...ij,...j->...i", scale, eps)
        return mean, entropy, sample

    # ------------------------------------------------------------ gradient path
    def to_unconstrained(self) -> dict[str, Array]:
        """``{"loc": m, "scale_tril": R}`` with the covariance's Cholesky factor
        ``S = (I + tril(R, -1)) diag(exp(diag R))``: log scales on the diagonal and
        column-relative (scale-free) entries below it, so the gradient path's step sizes
        do not depend on the posterior's scale."""
        scale = jnp.linalg.cholesky(self.cov)
        d = _diag(scale)
        raw = jnp.tril(scale / d[..., None, :], -1) + jnp.vectorize(
            jnp.diag, signature="(d)->(d,d)")(jnp.log(d))
        return {"loc": self.loc, "scale_tril": raw}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "MultivariateNormal":
        """Inverse of :meth:`to_unconstrained` (only the lower triangle of
        ``scale_tril`` is used; its diagonal is exponentiated)."""
        raw = u["scale_tril"]
        scale = scale_from_unconstrained(raw)
        # Lambda = S^{-T} S^{-1}
        inv = solve_triangular(scale, _eye_like(scale), lower=True)
        precision = _sym(jnp.swapaxes(inv, -1, -2) @ inv)
        loc = jnp.broadcast_to(u["loc"], precision.shape[:-1])
        return cls({"x": jnp.einsum("...ij,...j->...i", precision, loc),
                    "xxT": -0.5 * precision})


#: bytes a dense factor may use (None: the host's physical memory, or the default
#: device's memory limit when smaller); :func:`check_dense_size` refuses beyond it
DENSE_MEMORY_LIMIT: Optional[int] = None


def dense_memory_limit() -> int:
    """:data:`DENSE_MEMORY_LIMIT`, else ``min(physical memory, device bytes_limit)``."""
    if DENSE_MEMORY_LIMIT is not None:
        return int(DENSE_MEMORY_LIMIT)
    import os
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        stats = jax.devices()[0].memory_stats() or {}
        limit = min(limit, int(stats.get("bytes_limit", limit)))
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        pass
    return int(limit)


def check_dense_size(name: str, batch_shape: tuple, size: int, dtype, copies: int = 8):
    """Raise :class:`~vijax.errors.ModelSpecError` before allocating a dense Gaussian
    whose ``copies`` arrays of ``batch x size x size`` entries (a CAVI fit holds about 8:
    natural and mean parameters, the update, Cholesky factor, inverse, workspace) exceed
    :func:`dense_memory_limit` (a huge dense event otherwise ends in an out-of-memory
    kill or a crash inside the factorization)."""
    from vijax.errors import ModelSpecError
    need = copies * math.prod(batch_shape) * size * size * jnp.dtype(dtype).itemsize
    limit = dense_memory_limit()
    if need > limit:
        raise ModelSpecError(
            f"latent '{name}': its dense Gaussian factor has an event of {size} elements "
            f"(batch {tuple(batch_shape)}), whose {size}x{size} matrices need about "
            f"{need / 2**30:.3g} GiB ({need} bytes, {copies} copies in "
            f"{jnp.dtype(dtype).name}), more than the {limit / 2**30:.3g} GiB available. "
            "Couple fewer elements (a chain x[t-1]-x[t] along one axis gets a linear-time "
            "GaussMarkov factor), split the latent, or fit a factorized q by "
            "vj.fit_gradient")


def scale_from_unconstrained(raw: Array) -> Array:
    """Cholesky factor ``(I + tril(R, -1)) diag(exp(diag R))`` of the covariance."""
    eye = _eye_like(raw)
    return (jnp.tril(raw, -1) + eye) * jnp.exp(_diag(raw))[..., None, :]
