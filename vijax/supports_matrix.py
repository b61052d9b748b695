"""Matrix-valued supports: symmetric positive-definite matrices (precision or
covariance latents; the Wishart family). Registered in :data:`vijax.supports.SUPPORTS`
on import (``vijax.supports`` imports this module)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from vijax.errors import ModelSpecError
from vijax.supports import INF, Support, register_support


@register_support
class PositiveDefinite(Support):
    """Symmetric positive-definite D x D matrices (an extra event axis pair ``(D, D)``;
    ``num_categories`` holds D). Bijection from the ``D(D+1)/2`` lower-triangular reals
    ``u``: ``C = tril(u)`` with ``exp`` on its diagonal, ``x = C C^T``, and

    .. math:: \\log|\\det dx/du| = D \\log 2 + \\sum_{i=1}^D (D - i + 2)\\, u_{ii}

    (the Cholesky map's Jacobian ``2^D prod_i C_ii^{D-i+1}``, times ``prod_i C_ii`` from
    the exponential)."""

    name = "positive_definite"
    interval = (-INF, INF, False, False)  # per entry (the diagonal alone is positive)

    def __post_init__(self):
        super().__post_init__()
        d = self.num_categories
        if d is None or int(d) != d or d < 1:
            raise ModelSpecError(
                f"positive_definite support needs an integer dimension D >= 1, got {d!r}")
        object.__setattr__(self, "num_categories", int(d))

    @property
    def dim(self) -> int:
        return self.num_categories

    @property
    def event_shape(self):
        return (self.dim, self.dim)

    @property
    def unconstrained_shape(self):
        return self.shape + (self.dim * (self.dim + 1) // 2,)

    def contains(self, x):
        x = jnp.asarray(x)
        sym = jnp.all(jnp.abs(x - jnp.swapaxes(x, -1, -2))
                      <= 1e-5 * (1.0 + jnp.abs(x)), axis=(-2, -1))
        chol = jnp.linalg.cholesky(0.5 * (x + jnp.swapaxes(x, -1, -2)))
        ok = jnp.all(jnp.isfinite(chol), axis=(-2, -1))
        return sym & ok & jnp.all(jnp.diagonal(chol, axis1=-2, axis2=-1) > 0, axis=-1)

    def _matrix(self, diag, off, dtype=None):
        d = self.dim
        m = np.full((d, d), off) + (diag - off) * np.eye(d)
        return np.broadcast_to(m, self.value_shape).astype(dtype or self.dtype())

    def canonical_point(self, dtype=None):
        return self._matrix(1.3183, 0.2117, dtype)  # eigenvalues >= 1.1: interior

    def probe_points(self):
        pts = [self._matrix(1.3183, 0.2117), self._matrix(1.0, 0.0),
               self._matrix(2.5, -0.3 / max(self.dim - 1, 1)), self._matrix(0.4, 0.15)]
        return np.stack(pts)

    def base_stats(self, point):
        point = np.asarray(point)
        return {"x": point, "logdet": np.linalg.slogdet(point.astype(np.float64))[1]}

    def _tril(self):
        return np.tril_indices(self.dim)

    def from_unconstrained(self, u):
        rows, cols = self._tril()
        chol = jnp.zeros(u.shape[:-1] + (self.dim, self.dim), u.dtype)
        chol = chol.at[..., rows, cols].set(u)
        diag = jnp.diagonal(chol, axis1=-2, axis2=-1)
        chol = chol + jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(jnp.exp(diag) - diag)
        return chol @ jnp.swapaxes(chol, -1, -2)

    def to_unconstrained(self, x):
        x = jnp.asarray(x)
        chol = jnp.linalg.cholesky(0.5 * (x + jnp.swapaxes(x, -1, -2)))
        diag = jnp.diagonal(chol, axis1=-2, axis2=-1)
        chol = chol + jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(jnp.log(diag) - diag)
        rows, cols = self._tril()
        return chol[..., rows, cols]

    def log_det_jacobian(self, u):
        d = self.dim
        rows, cols = self._tril()
        on_diag = np.flatnonzero(rows == cols)  # the entries u_ii, i = 0..D-1
        weights = np.arange(d + 1, 1, -1, dtype=np.float64)  # D - i + 2 (1-based i)
        return d * math.log(2.0) + jnp.sum(u[..., on_diag] * weights.astype(u.dtype), -1)
