"""Support declarations for latent variables.

A support says where a latent lives and how it is shaped: ``vj.simplex(4, shape=(2,))``
is two probability vectors of length 4 (value shape ``(2, 4)``). Each kind is a small
class that knows

- membership (:meth:`Support.contains`) and the interval its values lie in,
- a canonical interior point (the compiler resolves support guards there) and a few
  probe points (the data checks evaluate the log joint there),
- the base statistics the walker tracks for a latent of this support,
- a bijection ``x = f(u)`` from unconstrained reals, with ``log |det df/du|``
  (the gradient path and the Laplace approximation work on ``u``).

``Support(kind, shape, K)`` builds the class registered for ``kind`` (``SUPPORTS``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax.errors import ModelSpecError

INF = float("inf")


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
    """Where a latent lives (base of the support classes).

    Attributes:
        kind: the class's declared name, one of ``KINDS``.
        shape: the batch shape (independent elements).
        num_categories: K for ``simplex`` (the extra event axis) and ``categorical``.

    Class attributes, declared by each kind:
        is_discrete: values are integers (no bijection; enumeration or CAVI).
        integer_valued: every value is an integer (binary, categorical, count).
        interval: ``(lo, hi, lo_closed, hi_closed)`` of one entry's value, or None.
        canonical: the entry value of :meth:`canonical_point` (chosen away from 0, 1 and
            other special values so that guards such as ``x != 0`` take the branch of a
            generic point).
        probes: four entry values of :meth:`probe_points`.
    """

    kind: str
    shape: Tuple[int, ...] = ()
    num_categories: int | None = None

    name: ClassVar[str] = ""
    is_discrete: ClassVar[bool] = False
    integer_valued: ClassVar[bool] = False
    unit_sum_event: ClassVar[bool] = False
    needs_categories: ClassVar[bool] = False
    interval: ClassVar[tuple | None] = None
    canonical: ClassVar[float] = 0.0
    probes: ClassVar[tuple] = ()

    def __new__(cls, *args, **kwargs):
        if cls is Support:
            kind = args[0] if args else kwargs.get("kind")
            if kind not in SUPPORTS:
                raise ModelSpecError(
                    f"unknown support kind {kind!r}; expected one of {KINDS}")
            cls = SUPPORTS[kind]
        return object.__new__(cls)

    def __post_init__(self):
        if self.kind != self.name:
            raise ModelSpecError(f"{type(self).__name__} support has kind {self.name!r}, "
                                 f"got {self.kind!r}")
        object.__setattr__(self, "shape", _as_shape(self.shape))
        if self.needs_categories:
            k = self.num_categories
            if k is None or int(k) != k or k < 2:
                raise ModelSpecError(
                    f"{self.kind} support needs an integer number of categories K >= 2, got {k!r}")
            object.__setattr__(self, "num_categories", int(k))

    # ------------------------------------------------------------------ shapes
    @property
    def event_shape(self) -> Tuple[int, ...]:
        """Trailing axes of one value beyond ``shape`` (the simplex's K)."""
        return ()

    @property
    def value_shape(self) -> Tuple[int, ...]:
        """Shape of a value of the latent (the simplex adds its event axis K)."""
        return self.shape + self.event_shape

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def dtype(self):
        return np.dtype(np.int32) if self.is_discrete else default_float()

    @property
    def unconstrained_shape(self) -> Tuple[int, ...]:
        return self.value_shape

    # --------------------------------------------------------------- membership
    def contains(self, x):
        """Elementwise membership test (over ``shape``)."""
        raise NotImplementedError

    def canonical_point(self, dtype=None):
        """A valid interior point with the latent's value shape."""
        return np.full(self.value_shape, self.canonical, dtype or self.dtype())

    def probe_points(self):
        """Four valid points of the latent, stacked on a leading axis."""
        pts = [np.full(self.value_shape, v) for v in self.probes]
        return np.stack(pts).astype(self.dtype())

    def support_values(self):
        """All values of one element of a binary or categorical latent."""
        raise ModelSpecError(f"{self.kind} support has no finite set of values")

    def base_stats(self, point):
        """Walk-time base statistics of a latent at a (numpy) value: ``x`` and the
        logarithms its families' statistics need."""
        return {"x": np.asarray(point)}

    # ---------------------------------------------------------------- bijection
    def _no_bijection(self, what):
        if self.is_discrete:
            raise ModelSpecError(
                f"{self.kind} support has no bijection to unconstrained space ({what}); "
                "discrete latents are handled by enumeration or by CAVI")
        raise NotImplementedError(f"{type(self).__name__}.{what}")

    def from_unconstrained(self, u):
        """x = f(u)."""
        self._no_bijection("from_unconstrained")

    def to_unconstrained(self, x):
        """u = f^{-1}(x)."""
        self._no_bijection("to_unconstrained")

    def log_det_jacobian(self, u):
        """log |det df/du| summed over each element's event (shape ``shape``)."""
        self._no_bijection("log_det_jacobian")

    def __repr__(self):
        extra = f"{self.num_categories}, " if self.num_categories is not None else ""
        return f"vj.{self.kind}({extra}shape={self.shape})"


SUPPORTS: dict[str, type[Support]] = {}


def register_support(cls: type[Support]) -> type[Support]:
    """Add a support class under its ``name`` (class decorator)."""
    SUPPORTS[cls.name] = cls
    return cls


@register_support
class Real(Support):
    """The real line; identity bijection."""

    name = "real"
    interval = (-INF, INF, False, False)
    canonical = 0.3183
    probes = (0.3183, -1.2, 2.1, 0.05)

    def contains(self, x):
        return jnp.isfinite(jnp.asarray(x))

    def from_unconstrained(self, u):
        return u

    def to_unconstrained(self, x):
        return jnp.asarray(x)

    def log_det_jacobian(self, u):
        return jnp.zeros(u.shape, u.dtype)


@register_support
class Positive(Support):
    """The positive reals; ``x = exp(u)``."""

    name = "positive"
    interval = (0.0, INF, False, False)
    canonical = 0.7071
    probes = (0.7071, 0.2, 3.3, 12.0)

    def contains(self, x):
        x = jnp.asarray(x)
        return jnp.isfinite(x) & (x > 0)

    def base_stats(self, point):
        point = np.asarray(point)
        return {"x": point, "log": np.log(point)}

    def from_unconstrained(self, u):
        return jnp.exp(u)

    def to_unconstrained(self, x):
        return jnp.log(jnp.asarray(x))

    def log_det_jacobian(self, u):
        return u


@register_support
class UnitInterval(Support):
    """The open interval (0, 1); ``x = sigmoid(u)``."""

    name = "unit_interval"
    interval = (0.0, 1.0, False, False)
    canonical = 0.4142
    probes = (0.4142, 0.1, 0.9, 0.63)

    def contains(self, x):
        x = jnp.asarray(x)
        return (x > 0) & (x < 1)

    def base_stats(self, point):
        point = np.asarray(point)
        return {"x": point, "log": np.log(point), "log1m": np.log1p(-point)}

    def from_unconstrained(self, u):
        return jax.nn.sigmoid(u)

    def to_unconstrained(self, x):
        x = jnp.asarray(x)
        return jnp.log(x) - jnp.log1p(-x)

    def log_det_jacobian(self, u):
        return jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)


@register_support
class Simplex(Support):
    """Probability vectors of length K (an extra event axis); additive log-ratio
    softmax ``x = softmax([u, 0])``."""

    name = "simplex"
    interval = (0.0, 1.0, False, False)
    unit_sum_event = True
    needs_categories = True

    @property
    def event_shape(self):
        return (self.num_categories,)

    @property
    def unconstrained_shape(self):
        return self.shape + (self.num_categories - 1,)

    def contains(self, x):
        x = jnp.asarray(x)
        ok = jnp.all(x >= 0, axis=-1) & jnp.all(jnp.isfinite(x), axis=-1)
        return ok & (jnp.abs(jnp.sum(x, axis=-1) - 1) < 1e-5)

    def canonical_point(self, dtype=None):
        return np.full(self.value_shape, 1.0 / self.num_categories, dtype or self.dtype())

    def probe_points(self):
        base = np.full(self.value_shape, 1.0 / self.num_categories)
        first = np.zeros(self.value_shape)
        first[..., 0] = 1.0
        pts = [base, 0.5 * base + 0.5 * first, 0.9 * base + 0.1 * first,
               0.1 * base + 0.9 * first]
        return np.stack(pts).astype(self.dtype())

    def base_stats(self, point):
        point = np.asarray(point)
        return {"x": point, "log": np.log(point)}

    def from_unconstrained(self, u):
        zeros = jnp.zeros(u.shape[:-1] + (1,), u.dtype)
        return jax.nn.softmax(jnp.concatenate([u, zeros], axis=-1), axis=-1)

    def to_unconstrained(self, x):
        x = jnp.asarray(x)
        return jnp.log(x[..., :-1]) - jnp.log(x[..., -1:])

    def log_det_jacobian(self, u):
        zeros = jnp.zeros(u.shape[:-1] + (1,), u.dtype)
        # For x = softmax([u, 0]) the Jacobian determinant is prod_k x_k.
        return jnp.sum(jax.nn.log_softmax(jnp.concatenate([u, zeros], -1), -1), axis=-1)


class _Discrete(Support):
    """Integer values: no bijection (enumeration or CAVI)."""

    is_discrete = True
    integer_valued = True

    def base_stats(self, point):
        return {"x": np.asarray(point).astype(np.float64)}


@register_support
class Binary(_Discrete):
    """The values {0, 1}."""

    name = "binary"
    interval = (0.0, 1.0, True, True)
    canonical = 0
    probes = (0, 1, 0, 1)

    def contains(self, x):
        x = jnp.asarray(x)
        return (x == 0) | (x == 1)

    def support_values(self):
        return jnp.arange(2)


@register_support
class Categorical(_Discrete):
    """The class indices {0, ..., K-1}."""

    name = "categorical"
    needs_categories = True
    canonical = 0
    probes = (0, 1, 0, 1)

    def contains(self, x):
        x = jnp.asarray(x)
        return (x >= 0) & (x < self.num_categories) & (x == jnp.round(x))

    def probe_points(self):
        pts = [np.full(self.shape, v % self.num_categories) for v in self.probes]
        return np.stack(pts).astype(self.dtype())

    def support_values(self):
        return jnp.arange(self.num_categories)

    def base_stats(self, point):
        point = np.asarray(point)
        if point.size and np.all(point == point.flat[0]):  # e.g. the canonical point:
            row = np.eye(self.num_categories)[point.flat[0]]  # a view, not [N, K] values
            return {"onehot": np.broadcast_to(row, point.shape + row.shape), "x": point}
        return {"onehot": np.eye(self.num_categories)[point], "x": point}


@register_support
class Count(_Discrete):
    """The counts {0, 1, 2, ...}."""

    name = "count"
    interval = (0.0, INF, True, False)
    canonical = 1
    probes = (1, 0, 3, 7)

    def contains(self, x):
        x = jnp.asarray(x)
        return (x >= 0) & (x == jnp.round(x)) & jnp.isfinite(x)


# matrix supports live in their own module (registered on import)
from vijax import supports_matrix  # noqa: E402,F401  (registers PositiveDefinite)

KINDS = tuple(SUPPORTS)
DISCRETE = tuple(k for k, c in SUPPORTS.items() if c.is_discrete)


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


def positive_definite(D: int, shape=()) -> Support:
    """Symmetric positive-definite D x D matrix (precision or covariance); value shape
    is ``shape + (D, D)``."""
    return Support("positive_definite", shape, D)


__all__ = ["Support", "real", "positive", "unit_interval", "simplex", "binary",
           "categorical", "count", "positive_definite", "KINDS", "SUPPORTS", "register_support"]
