"""Support declarations for latent variables.

A support says where a latent lives and how it is shaped: ``vj.real(shape=(3,))`` is a
vector of three reals, ``vj.simplex(4, shape=(2,))`` two probability vectors of length 4
(value shape ``(2, 4)``). Each support knows

- membership (:meth:`Support.contains`),
- a canonical interior point (the compiler resolves support guards there),
- a bijection ``x = f(u)`` from unconstrained reals, with ``log |det df/du|``
  (the gradient path and the Laplace approximation work on ``u``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax.errors import ModelSpecError

KINDS = ("real", "positive", "unit_interval", "simplex", "binary", "categorical", "count")
DISCRETE = ("binary", "categorical", "count")

# Interior points chosen away from 0, 1 and other special values so that guards such
# as ``x != 0`` or ``x >= 1`` take the branch of a generic point.
_CANONICAL = {"real": 0.3183, "positive": 0.7071, "unit_interval": 0.4142,
              "binary": 0, "categorical": 0, "count": 1}


def default_float():
    """float64 when jax_enable_x64 is on, else float32 (no computation involved)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def _as_shape(shape) -> Tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as e:
        raise ModelSpecError(f"shape must be a tuple of ints, got {shape!r}") from e
    if any(s < 0 for s in shape):
        raise ModelSpecError(f"shape must be non-negative, got {shape!r}")
    return shape


@dataclasses.dataclass(frozen=True)
class Support:
    """Where a latent lives.

    Attributes:
        kind: one of ``KINDS``.
        shape: the batch shape (independent elements).
        num_categories: K for ``simplex`` (the extra event axis) and ``categorical``.
    """

    kind: str
    shape: Tuple[int, ...] = ()
    num_categories: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ModelSpecError(f"unknown support kind {self.kind!r}; expected one of {KINDS}")
        object.__setattr__(self, "shape", _as_shape(self.shape))
        if self.kind in ("simplex", "categorical"):
            k = self.num_categories
            if k is None or int(k) != k or k < 2:
                raise ModelSpecError(
                    f"{self.kind} support needs an integer number of categories K >= 2, got {k!r}")
            object.__setattr__(self, "num_categories", int(k))

    # ------------------------------------------------------------------ shapes
    @property
    def is_discrete(self) -> bool:
        return self.kind in DISCRETE

    @property
    def value_shape(self) -> Tuple[int, ...]:
        """Shape of a value of the latent (the simplex adds its event axis K)."""
        if self.kind == "simplex":
            return self.shape + (self.num_categories,)
        return self.shape

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def dtype(self):
        if self.is_discrete:
            return np.dtype(np.int32)
        return default_float()

    @property
    def unconstrained_shape(self) -> Tuple[int, ...]:
        if self.kind == "simplex":
            return self.shape + (self.num_categories - 1,)
        return self.shape

    # --------------------------------------------------------------- membership
    def contains(self, x):
        """Elementwise membership test (over ``shape``)."""
        x = jnp.asarray(x)
        k = self.kind
        if k == "real":
            return jnp.isfinite(x)
        if k == "positive":
            return jnp.isfinite(x) & (x > 0)
        if k == "unit_interval":
            return (x > 0) & (x < 1)
        if k == "simplex":
            ok = jnp.all(x >= 0, axis=-1) & jnp.all(jnp.isfinite(x), axis=-1)
            return ok & (jnp.abs(jnp.sum(x, axis=-1) - 1) < 1e-5)
        if k == "binary":
            return (x == 0) | (x == 1)
        if k == "categorical":
            return (x >= 0) & (x < self.num_categories) & (x == jnp.round(x))
        return (x >= 0) & (x == jnp.round(x)) & jnp.isfinite(x)  # count

    def canonical_point(self, dtype=None):
        """A valid interior point with the latent's value shape."""
        dt = dtype or self.dtype()
        if self.kind == "simplex":
            return np.full(self.value_shape, 1.0 / self.num_categories, dt)
        return np.full(self.shape, _CANONICAL[self.kind], dt)

    def support_values(self):
        """All values of one element of a binary or categorical latent."""
        if self.kind == "binary":
            return jnp.arange(2)
        if self.kind == "categorical":
            return jnp.arange(self.num_categories)
        raise ModelSpecError(f"{self.kind} support has no finite set of values")

    # ---------------------------------------------------------------- bijection
    def _need_continuous(self, what):
        if self.is_discrete:
            raise ModelSpecError(
                f"{self.kind} support has no bijection to unconstrained space ({what}); "
                "discrete latents are handled by enumeration or by CAVI")

    def from_unconstrained(self, u):
        """x = f(u): identity, exp, sigmoid, or additive log-ratio softmax."""
        self._need_continuous("from_unconstrained")
        k = self.kind
        if k == "real":
            return u
        if k == "positive":
            return jnp.exp(u)
        if k == "unit_interval":
            return jax.nn.sigmoid(u)
        zeros = jnp.zeros(u.shape[:-1] + (1,), u.dtype)
        return jax.nn.softmax(jnp.concatenate([u, zeros], axis=-1), axis=-1)

    def to_unconstrained(self, x):
        """u = f^{-1}(x)."""
        self._need_continuous("to_unconstrained")
        x = jnp.asarray(x)
        k = self.kind
        if k == "real":
            return x
        if k == "positive":
            return jnp.log(x)
        if k == "unit_interval":
            return jnp.log(x) - jnp.log1p(-x)
        return jnp.log(x[..., :-1]) - jnp.log(x[..., -1:])

    def log_det_jacobian(self, u):
        """log |det df/du| summed over each element's event (shape ``shape``)."""
        self._need_continuous("log_det_jacobian")
        k = self.kind
        if k == "real":
            return jnp.zeros(u.shape, u.dtype)
        if k == "positive":
            return u
        if k == "unit_interval":
            return jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
        zeros = jnp.zeros(u.shape[:-1] + (1,), u.dtype)
        # For x = softmax([u, 0]) the Jacobian determinant is prod_k x_k.
        return jnp.sum(jax.nn.log_softmax(jnp.concatenate([u, zeros], -1), -1), axis=-1)

    def __repr__(self):
        extra = f"{self.num_categories}, " if self.num_categories is not None else ""
        return f"vj.{self.kind}({extra}shape={self.shape})"


def real(shape=()) -> Support:
    """Real-valued latent of the given shape."""
    return Support("real", shape)


def positive(shape=()) -> Support:
    """Positive latent (precisions, rates, variances)."""
    return Support("positive", shape)


def unit_interval(shape=()) -> Support:
    """Latent in (0, 1) (probabilities)."""
    return Support("unit_interval", shape)


def simplex(K: int, shape=()) -> Support:
    """Probability vector(s) of length K; value shape is ``shape + (K,)``."""
    return Support("simplex", shape, K)


def binary(shape=()) -> Support:
    """Latent in {0, 1}."""
    return Support("binary", shape)


def categorical(K: int, shape=()) -> Support:
    """Latent in {0, ..., K-1} (integer)."""
    return Support("categorical", shape, K)


def count(shape=()) -> Support:
    """Latent in {0, 1, 2, ...}."""
    return Support("count", shape)


__all__ = ["Support", "real", "positive", "unit_interval", "simplex", "binary",
           "categorical", "count", "KINDS"]
