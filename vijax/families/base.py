"""Shared base of the exponential families.

A family is a frozen dataclass with one field, ``natural``: a dict of natural
parameters keyed by statistic name. Its density (w.r.t. a base measure ``h``) is

.. math::

    \\log p(x \\mid \\eta) = \\sum_s \\langle \\eta_s, T_s(x) \\rangle + \\log h(x) - A(\\eta).

Subclasses supply the statistics ``T``, the base measure ``h``, the log-normalizer
``A`` and its closed-form gradient (the mean parameters ``mu = grad A``); entropy and
KL divergence are derived here once:

.. math::

    H = A(\\eta) - \\langle \\eta, \\mu \\rangle - E[\\log h(x)], \\qquad
    KL(p \\| q) = A(\\eta_q) - A(\\eta_p) - \\langle \\eta_q - \\eta_p, \\mu_p \\rangle.

Families override these in closed form where that is numerically better.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

from vijax.errors import InvalidParameterError
from vijax.families.arrays import (Array, Natural, as_float_arrays,  # noqa: F401
                                   check_param, float_dtype, format_array, is_tracer)


def family(cls):
    """Class decorator: make ``cls`` a frozen dataclass and register it as a pytree.

    The pytree's only children are the natural-parameter arrays, so families pass
    through ``jit``, ``vmap``, ``grad`` and ``lax`` control flow unchanged; any other
    field (e.g. :class:`~vijax.families.MultivariateNormal`'s ``layout``) is static.
    """
    cls = dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)
    meta = [f.name for f in dataclasses.fields(cls) if f.name != "natural"]
    register_fields(cls, ["natural"], meta)
    return cls


def register_fields(cls, data_fields, meta_fields):
    """Register the dataclass ``cls`` as a pytree: ``data_fields`` are children,
    ``meta_fields`` static.

    Like ``jax.tree_util.register_dataclass``, but the tree structure compares unequal
    across classes: jaxlib 0.10's dataclass nodes of two classes with the same fields
    compare *equal* (with different hashes), so a jitted function's cache could hand a
    ``Poisson`` the executable traced for a ``Bernoulli`` (both ``{"x": eta}``) when
    their hashes meet, a silent wrong result seen in the test suite. Custom nodes
    compare their classes."""
    data_fields, meta_fields = tuple(data_fields), tuple(meta_fields)
    keys = tuple(jax.tree_util.GetAttrKey(f) for f in data_fields)

    def flatten_with_keys(obj):
        children = tuple((k, getattr(obj, f)) for k, f in zip(keys, data_fields))
        return children, tuple(getattr(obj, f) for f in meta_fields)

    def flatten(obj):
        return (tuple(getattr(obj, f) for f in data_fields),
                tuple(getattr(obj, f) for f in meta_fields))

    def unflatten(meta, children):
        return cls(**dict(zip(data_fields, children)), **dict(zip(meta_fields, meta)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


@dataclasses.dataclass(frozen=True, eq=False)
class ExponentialFamily:
    """Base class of the exponential families (see the module docstring).

    Attributes:
        natural: natural parameters keyed by statistic name; arrays of shape
            ``batch_shape + stat_event_shape``.
        stat_names: the statistic names, in a fixed order.
        stat_event_ndims: trailing axes of each statistic (and its natural parameter).
        event_ndim: trailing axes of a sample.
        support: ``"real"``, ``"positive"``, ``"unit_interval"``, ``"simplex"``,
            ``"binary"``, ``"categorical"`` or ``"count"``.
    """

    natural: Natural

    stat_names: ClassVar[tuple[str, ...]] = ()
    stat_event_ndims: ClassVar[Mapping[str, int]] = {}
    event_ndim: ClassVar[int] = 0
    support: ClassVar[str] = ""
    #: every finite natural parameter is valid (the domain of ``A`` is all of R^n)
    natural_domain_is_real: ClassVar[bool] = False
    #: for the conjugacy compiler: ``(walk statistic, power) -> statistic`` of every way a
    #: latent may appear in a log joint this family is conjugate to (e.g. the Gamma's
    #: ``{("x", 1.0): "x", ("log", 1.0): "log"}``); empty: the compiler never picks it
    walk_stats: ClassVar[Mapping[tuple[str, float], str]] = {}
    #: the statistic holding a product ``x_i x_j`` of two first powers (None: such
    #: products are not conjugate); without ``couples_elements`` only ``i == j``
    pair_stat: ClassVar[str | None] = None
    #: the family is one dense event over the coupled axes of its latent (the compiler
    #: gives it an :class:`~vijax.families.layout.EventLayout`)
    couples_elements: ClassVar[bool] = False
    #: for EM's M-step regularization: statistics whose natural parameters are expected
    #: counts (a pseudo-count floor is added to each; Dirichlet ``log``, Beta ``log`` and
    #: ``log1m``), summed over the event axes to decide that an entry is empty
    count_stats: ClassVar[tuple[str, ...]] = ()
    #: for EM: ``(linear statistic, sign)`` of a scale parameter whose natural parameter of
    #: ``log`` is half a count (Gamma precision ``("x", 1.0)``, InverseGamma variance
    #: ``("inv", -1.0)``): regularized like scikit-learn's ``reg_covar``; None: not one
    scale_stat: ClassVar[tuple[str, float] | None] = None

    # ---------------------------------------------------------------- per family
    @classmethod
    def stats(cls, x: Array) -> Natural:
        """Sufficient statistics ``T(x)`` of a (batched) sample."""
        raise NotImplementedError

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        """``log h(x)``, with the sample's batch shape."""
        raise NotImplementedError

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        """``A(eta)``, with the parameters' batch shape."""
        raise NotImplementedError

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        """Inverse of :meth:`mean_params`."""
        raise NotImplementedError

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        """Boolean array (batch shape): natural parameters inside the domain of ``A``."""
        raise NotImplementedError

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]):
        """Instance from the real-valued parameterization of :meth:`to_unconstrained`."""
        raise NotImplementedError

    def to_unconstrained(self) -> dict[str, Array]:
        """Real-valued parameters for gradient-based fitting."""
        raise NotImplementedError

    @classmethod
    def default_start(cls, key: Array, info: Any, dtype: Any):
        """A sensible starting member for a latent (``info`` has ``support``, and for
        a dense family ``batch_shape`` and ``event_size``); ``key`` breaks symmetry
        where that matters (mixtures)."""
        raise NotImplementedError(f"{cls.__name__} has no default start")

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Draw ``sample_shape + batch_shape + event_shape`` samples."""
        raise NotImplementedError

    def mean(self) -> Array:
        """Mean of a sample."""
        raise NotImplementedError

    def variance(self) -> Array:
        """Elementwise variance of a sample."""
        raise NotImplementedError

    def quantile(self, q: Any) -> Array:
        """Quantiles at probabilities ``q`` (elementwise; marginal for vector families),
        of shape ``jnp.shape(q) + batch_shape + event_shape``."""
        raise NotImplementedError(f"{type(self).__name__} has no quantile function")

    def usual_params(self) -> dict[str, Array]:
        """The usual parameters by name (what ``repr`` prints)."""
        raise NotImplementedError

    def expected_log_base_measure(self) -> Array:
        """``E_q[log h(x)]`` (batch shape)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- generic
    @classmethod
    def point_stats(cls, x: Array, support: Any) -> Natural:
        """Statistics ``T(z)`` of a latent's value ``z`` in the family's layout
        (``support`` is the latent's :class:`~vijax.supports.Support`)."""
        return cls.stats(x)

    @classmethod
    def from_user_value(cls, value: Any):
        """A member from what a user may pass as ``init`` besides a family instance
        (probabilities for the discrete families); None when nothing else is accepted."""
        return None

    @classmethod
    def factor_from_unconstrained(cls, u: Mapping[str, Array]):
        """``(mean parameters, total entropy, sampler)`` of the member with unconstrained
        parameters ``u`` (the gradient path); ``sampler(key, sample_shape)`` draws in the
        family's layout. Families with a cheaper route (the dense Gaussian) override."""
        q = cls.from_unconstrained(u)
        return cls.mean_params(q.natural), jnp.sum(q.entropy()), q.sample

    def with_layout(self, layout: Any):
        """The same distribution with values in ``layout.shape`` (families that couple
        elements override; others are unchanged)."""
        return self

    def std(self) -> Array:
        """Elementwise standard deviation, ``sqrt(variance())``."""
        return jnp.sqrt(self.variance())

    def _quantile_shape(self, q: Any, event_shape: tuple[int, ...] = ()) -> Array:
        """``q`` as a float array of shape ``jnp.shape(q) + (1,) * (batch + event)``,
        ready to broadcast against per-element parameters."""
        q = jnp.asarray(q, self.dtype)
        return jnp.reshape(q, q.shape + (1,) * (len(self.batch_shape) + len(event_shape)))

    def __repr__(self) -> str:
        try:
            params = self.usual_params()
        except NotImplementedError:
            params = self.natural
        inner = ", ".join(f"{k}={format_array(v)}" for k, v in params.items())
        return f"{type(self).__name__}({inner})"
    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        """Mean parameters ``mu = E[T(x)] = grad A(eta)`` (autodiff; families override)."""
        return cls.mean_params_autodiff(natural)

    @classmethod
    def mean_and_log_normalizer(cls, natural: Mapping[str, Array]) -> tuple[Natural, Array]:
        """``(grad A(eta), A(eta))`` together (families that share work override it)."""
        return cls.mean_params(natural), cls.log_normalizer(natural)

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """The mode ``argmax_x <eta, T(x)> + log h(x)`` and a boolean ``valid``
        (broadcast to the mode's shape) that is False where no maximum exists inside the
        support (e.g. a Gamma with shape <= 1). Families without a closed form raise.

        This is also the closed-form maximizer of any function ``<eta, T(x)> + c`` in
        ``x`` (EM's conditional M-step, :func:`vijax.em`).
        """
        raise NotImplementedError(f"{cls.__name__} has no closed-form mode")

    @classmethod
    def has_mode(cls) -> bool:
        """True when :meth:`mode` has a closed form for this family."""
        return cls.mode.__func__ is not ExponentialFamily.mode.__func__

    @classmethod
    def mean_params_autodiff(cls, natural: Mapping[str, Array]) -> Natural:
        """``grad A(eta)`` by automatic differentiation (reference for the closed forms)."""
        return jax.grad(lambda n: jnp.sum(cls.log_normalizer(n)))(dict(natural))

    @classmethod
    def inner(cls, a: Mapping[str, Array], b: Mapping[str, Array]) -> Array:
        """``sum_s <a_s, b_s>`` over each statistic's event axes (batch axes remain)."""
        total = 0.0
        for name in cls.stat_names:
            nd = cls.stat_event_ndims[name]
            prod = a[name] * b[name]
            total = total + (jnp.sum(prod, axis=tuple(range(-nd, 0))) if nd else prod)
        return total

    @classmethod
    def from_natural(cls, natural: Mapping[str, Array]):
        """Instance from natural parameters; validates them when they are concrete.

        Raises:
            InvalidParameterError: concrete parameters outside the family's domain.
        """
        missing = set(cls.stat_names) - set(natural)
        extra = set(natural) - set(cls.stat_names)
        if missing or extra:
            raise InvalidParameterError(
                f"{cls.__name__}.from_natural: expected keys {cls.stat_names}, "
                f"got {tuple(natural)}.")
        arrays = as_float_arrays(*(natural[k] for k in cls.stat_names))
        natural = dict(zip(cls.stat_names, arrays))
        check_param(f"{cls.__name__}.from_natural", "natural", natural,
                    cls.is_valid_natural(natural), "inside the family's natural domain",
                    f"See the {cls.__name__} docstring for the natural parameters, or build "
                    "it from its usual parameters.")
        return cls(natural)

    @classmethod
    def from_mean(cls, mean: Mapping[str, Array]):
        """Instance from mean parameters ``E[T(x)]``.

        Raises:
            InvalidParameterError: concrete mean parameters that no member attains.
        """
        mean = dict(zip(cls.stat_names, as_float_arrays(*(mean[k] for k in cls.stat_names))))
        natural = cls.natural_from_mean(mean)
        ok = cls.is_valid_mean(mean) & cls.is_valid_natural(natural)
        check_param(f"{cls.__name__}.from_mean", "mean", mean, ok,
                    "attainable by some member (e.g. E[x^2] > E[x]^2, E[log x] < log E[x])",
                    "Check that the mean parameters are expectations of the statistics "
                    f"{cls.stat_names} under one distribution.")
        return cls(natural)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        """Boolean array: mean parameters in the interior of the mean domain."""
        return jnp.asarray(True)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        shapes = []
        for name in self.stat_names:
            shape = jnp.shape(self.natural[name])
            nd = self.stat_event_ndims[name]
            shapes.append(shape[:len(shape) - nd])
        return jnp.broadcast_shapes(*shapes)

    @property
    def dtype(self):
        return jnp.result_type(*self.natural.values())

    def mean_parameters(self) -> Natural:
        """``E[T(x)]`` under this distribution."""
        return self.mean_params(self.natural)

    def log_normalizer_value(self) -> Array:
        """``A(eta)`` of this distribution."""
        return self.log_normalizer(self.natural)

    def is_valid(self) -> Array:
        """Boolean array (batch shape): parameters inside the family's domain."""
        return self.is_valid_natural(self.natural)

    def log_prob(self, x: Array) -> Array:
        """``log p(x)``; ``x`` has shape ``sample_shape + batch_shape + event_shape``."""
        x = jnp.asarray(x)
        return (self.inner(self.natural, self.stats(x)) + self.log_base_measure(x)
                - self.log_normalizer(self.natural))

    def entropy(self) -> Array:
        """``H = A(eta) - <eta, mu> - E[log h(x)]``."""
        mu = self.mean_parameters()
        return (self.log_normalizer(self.natural) - self.inner(self.natural, mu)
                - self.expected_log_base_measure())

    def kl(self, other: "ExponentialFamily") -> Array:
        """``KL(self || other) = A(eta_q) - A(eta_p) - <eta_q - eta_p, mu_p>``."""
        self._check_same_family(other)
        mu = self.mean_parameters()
        diff = {k: other.natural[k] - self.natural[k] for k in self.stat_names}
        return (self.log_normalizer(other.natural) - self.log_normalizer(self.natural)
                - self.inner(diff, mu))

    def _check_same_family(self, other) -> None:
        if type(other) is not type(self):
            raise TypeError(f"{type(self).__name__}.kl: other must be a "
                            f"{type(self).__name__}, got {type(other).__name__}.")

    def _constant(self, value: float) -> Array:
        """``value`` broadcast to the batch shape in the parameters' dtype."""
        return jnp.full(self.batch_shape, value, self.dtype)
