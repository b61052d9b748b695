"""NumPyro models as vijax models: ``vj.from_numpyro(model_fn, *args, **kwargs)``.

The model function is run once under ``numpyro.handlers.seed`` and ``trace``: every
sample site that is not observed becomes a latent, with the vijax support read from its
distribution's constraint (and the shape of the value it drew, plates included); every
observed site becomes an entry of the data dict. The log joint is NumPyro's own density,
``numpyro.infer.util.log_density`` with the latents and the observed values substituted,
so the same model fits new data of the same shapes.

Two things in NumPyro's code are changed while the density is evaluated, both exact on
the latents' supports:

- **Validation is off** (``numpyro.validation_enabled(False)``): NumPyro's checks that a
  value lies in the support (``where(support(x), log_prob, -inf)``) are branches on the
  latents that the compiler cannot read. vijax latents always lie in their supports, and
  the observed values are checked once, here, against their sites' supports
  (:class:`~vijax.errors.DataError` naming the site).
- **Probabilities are not clamped** for ``Bernoulli(probs)``, ``Binomial(probs)`` and
  ``Categorical(probs)``, and the ``Beta`` density is written without NumPyro's
  boundary masking: their log-probabilities are NumPyro's formulas
  (``xlogy(k, p) + xlog1py(n - k, -p)``, ``log p_k``, ``(a-1) log x + (b-1) log(1-x) -
  log B(a, b)``) on the unclamped parameters (:data:`READABLE`). NumPyro clamps ``p`` to
  ``[tiny, 1 - eps]``, a branch on the latent the compiler would refuse; the densities
  agree wherever NumPyro does not clamp.

Everything else is NumPyro's own code, read as it is: ``Normal``, ``Gamma``, ``Poisson``,
``Dirichlet``, ``Categorical(probs)`` indexed by a categorical latent (mixtures, LDA) and
``MultivariateNormal`` with a constant covariance, precision or scale (its Cholesky solve is
linear in the value). What the compiler cannot read is reported by ``vj.analyze`` /
``vj.cavi`` under the site's name, with the primitive and NumPyro's source line; e.g. a
``MultivariateNormal`` whose covariance depends on a latent (NumPyro takes its Cholesky
factor), ``Categorical(logits=...)`` or ``Bernoulli(logits=...)`` of a latent (a
``logsumexp`` / ``log_sigmoid`` normalizer). Such latents are fitted by
``vj.fit_gradient``, or the site is rewritten (``Normal(0, 1/sqrt(alpha))`` per element
instead of ``MultivariateNormal(0, precision_matrix=alpha * I)``).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np

from vijax.errors import DataError, ModelSpecError
from vijax.model import Model
from vijax import supports as S

INSTALL_HINT = ("vj.from_numpyro needs NumPyro, an optional dependency of vijax: "
                "pip install 'vijax[numpyro]' (or pip install numpyro)")


def _numpyro():
    try:
        import numpyro  # noqa: F401
        from numpyro import handlers  # noqa: F401
        from numpyro.infer.util import log_density  # noqa: F401
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return numpyro


# --------------------------------------------------------------- readable densities

def _bernoulli_log_prob(d, value):
    from jax.scipy.special import xlog1py, xlogy
    value = jnp.asarray(value, jnp.result_type(float))
    return xlogy(value, d.probs) + xlog1py(1 - value, -d.probs)


def _binomial_log_prob(d, value):
    from jax.scipy.special import gammaln, xlog1py, xlogy
    value = jnp.asarray(value, jnp.result_type(float))
    n = d.total_count
    return (gammaln(n + 1) - gammaln(value + 1) - gammaln(n - value + 1)
            + xlogy(value, d.probs) + xlog1py(n - value, -d.probs))


def _categorical_log_prob(d, value):
    from jax.scipy.special import xlogy
    K = jnp.shape(d.probs)[-1]
    return jnp.sum(xlogy(jax.nn.one_hot(value, K, dtype=jnp.result_type(d.probs)), d.probs),
                   axis=-1)


def _beta_log_prob(d, value):
    from jax.scipy.special import gammaln, xlog1py, xlogy
    a, b = d.concentration1, d.concentration0
    return (xlogy(a - 1.0, value) + xlog1py(b - 1.0, -value)
            - (gammaln(a) + gammaln(b) - gammaln(a + b)))


def _readable_table():
    import numpyro.distributions as dist
    return {dist.BernoulliProbs: _bernoulli_log_prob, dist.BinomialProbs: _binomial_log_prob,
            dist.CategoricalProbs: _categorical_log_prob, dist.Beta: _beta_log_prob}


#: NumPyro distribution class name -> the exact unclamped log-probability used instead
READABLE = ("BernoulliProbs", "BinomialProbs", "CategoricalProbs", "Beta")


def _swap(fn, table):
    """``fn`` with its innermost base distribution's ``log_prob`` replaced by the readable
    formula when it has one (wrappers: expand, mask, to_event keep working)."""
    base = getattr(fn, "base_dist", None)
    if base is not None:
        new_base = _swap(base, table)
        if new_base is base:
            return fn
        out = copy.copy(fn)
        out.base_dist = new_base
        return out
    lp = table.get(type(fn))
    if lp is None:
        return fn
    out = copy.copy(fn)
    out.__class__ = _readable_class(type(fn), lp)
    return out


_CLASSES: dict = {}


def _readable_class(cls, lp):
    """The subclass of ``cls`` whose ``log_prob`` is ``lp`` (one per class)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Readable{cls.__name__}", (cls,), {
            "log_prob": lambda self, value: lp(self, value),
            "__doc__": f"{cls.__name__} with the unclamped log-probability (vijax)."})
    return _CLASSES[cls]


def _readable_messenger():
    from numpyro.primitives import Messenger
    table = _readable_table()

    class Readable(Messenger):
        def process_message(self, msg):
            if msg["type"] == "sample":
                msg["fn"] = _swap(msg["fn"], table)
    return Readable


# --------------------------------------------------------------- supports

def _bound(c, attr, site):
    v = np.asarray(getattr(c, attr))
    if v.size == 0 or not np.all(v == v.reshape(-1)[0]):
        raise ModelSpecError(f"sample site '{site}': its support {c} has a non-uniform "
                             f"{attr}; vijax supports have one bound per latent")
    return float(v.reshape(-1)[0])


def support_of(site_name, constraint, value) -> S.Support:
    """The vijax support of a latent drawn from a distribution with NumPyro support
    ``constraint`` (``value``: the drawn value, for the shape).

    real -> ``real``; positive -> ``positive``; unit interval -> ``unit_interval``;
    simplex -> ``simplex(K)``; boolean -> ``binary``; ``integer_interval(0, K-1)`` ->
    ``categorical(K)``; nonnegative integer -> ``count``. ``independent(...)`` (event
    dimensions) keeps the value's full shape.

    Raises:
        ModelSpecError: any other constraint, naming the site.
    """
    from numpyro.distributions import constraints as C
    shape = tuple(np.shape(value))
    c = constraint
    while isinstance(c, C.independent):
        c = c.base_constraint
    name = type(c).__name__
    if c is C.real or name == "_Real":
        return S.real(shape)
    if isinstance(c, C.greater_than) and not isinstance(c, C.integer_greater_than) \
            and _bound(c, "lower_bound", site_name) == 0.0:
        return S.positive(shape)
    if isinstance(c, C.interval) and not isinstance(c, C.integer_interval) and \
            (_bound(c, "lower_bound", site_name), _bound(c, "upper_bound", site_name)) \
            == (0.0, 1.0):
        return S.unit_interval(shape)
    if c is C.simplex:
        return S.simplex(shape[-1], shape[:-1])
    if c is C.boolean:
        return S.binary(shape)
    if isinstance(c, C.integer_interval) and _bound(c, "lower_bound", site_name) == 0.0:
        K = int(_bound(c, "upper_bound", site_name)) + 1
        return S.categorical(K, shape) if K >= 2 else _refuse(site_name, constraint)
    if c is C.nonnegative_integer or isinstance(c, C.integer_greater_than) and \
            _bound(c, "lower_bound", site_name) == 0.0:
        return S.count(shape)
    return _refuse(site_name, constraint)


def _refuse(site, constraint):
    raise ModelSpecError(
        f"sample site '{site}': its distribution's support {constraint} has no vijax "
        "support (real, positive, unit interval, simplex, boolean, integer interval from 0, "
        "nonnegative integer). Reparameterize the site (e.g. sample a positive or real "
        "latent and transform it in the model) or observe it.")


# --------------------------------------------------------------- the model

class NumPyroLogJoint:
    """``log_joint(latents, data)``: NumPyro's ``log_density`` of ``model_fn(*args,
    **kwargs)`` at the latents, with the observed sites' values taken from ``data``."""

    def __init__(self, model_fn, args, kwargs, latent_names, observed_names):
        self.model_fn, self.args, self.kwargs = model_fn, args, kwargs
        self.latent_names = tuple(latent_names)
        self.observed_names = tuple(observed_names)
        self.__name__ = getattr(model_fn, "__name__", "numpyro_model")
        self._readable = _readable_messenger()

    def __call__(self, latents, data):
        numpyro = _numpyro()
        from numpyro.infer.util import log_density
        params = {n: latents[n] for n in self.latent_names}
        params.update({n: data[n] for n in self.observed_names})
        with numpyro.validation_enabled(False):
            lp, _ = log_density(self._readable(self.model_fn), self.args, self.kwargs, params)
        return jnp.asarray(lp)


def _trace(model_fn, args, kwargs, staged=True):
    """The model's trace (seeded). It is taken under ``jax.make_jaxpr`` first, so that
    sampling the latents costs no eager operations (only their shapes are needed); when
    an observed value is computed inside the model (not passed in), it is taken eagerly."""
    numpyro = _numpyro()
    from numpyro import handlers

    def get():
        with numpyro.validation_enabled(False):
            return handlers.trace(handlers.seed(model_fn, rng_seed=0)).get_trace(*args, **kwargs)

    if not staged:
        return get(), False
    box = {}

    def run():
        box["trace"] = get()
        return 0.0

    try:
        jax.make_jaxpr(run)()
        tr = box["trace"]
    except Exception:  # noqa: BLE001 - e.g. Python control flow on a drawn value
        return get(), False
    from vijax import _compat
    if any(s["type"] == "sample" and s["is_observed"] and _compat.is_tracer(s["value"])
           for s in tr.values()):
        return get(), False
    return tr, True


def _sites(tr):
    """``(supports, data)`` from a NumPyro trace (see :func:`from_numpyro`)."""
    supports, data = {}, {}
    for name, site in tr.items():
        kind = site["type"]
        if kind == "param":
            raise ModelSpecError(
                f"site '{name}' is a numpyro.param: a vijax Model has latents and data only. "
                "Give it a prior (numpyro.sample), pass it as an argument, or fit it with vj.em")
        if kind == "plate":
            size, sub = site["args"][:2]
            if sub is not None and sub != size:
                raise ModelSpecError(
                    f"plate '{name}' subsamples {sub} of {size}: vijax fits the full data "
                    "(drop subsample_size)")
            continue
        if kind != "sample":
            continue
        if site["is_observed"]:
            value = site["value"]
            ok = np.asarray(site["fn"].support(value))
            if not np.all(ok):
                raise DataError(
                    f"observed site '{name}': {int(np.sum(~ok))} value(s) lie outside the "
                    f"support {site['fn'].support} of its {type(site['fn']).__name__} "
                    "distribution")
            data[name] = value
            continue
        supports[name] = support_of(name, site["fn"].support, site["value"])
    return supports, data


def from_numpyro(model_fn, *args, **kwargs):
    """A :class:`vijax.Model` and its data from a NumPyro model function.

    Args:
        model_fn: a NumPyro model (``numpyro.sample`` statements, plates).
        *args, **kwargs: what to call it with (observed values passed as ``obs=``).

    Returns:
        ``(model, data)``: latents = the unobserved sample sites, with supports from
        their distributions' constraints and shapes from their values (plates
        included); ``data`` = ``{site: observed value}``. The log joint is NumPyro's
        ``log_density`` (see the module docstring for the two exact changes made while
        it is evaluated), so ``vj.cavi(model, data)`` and the other fitters apply, and a
        new data dict of the same shapes may be passed in place of ``data``.

    Raises:
        ImportError: NumPyro is not installed (``pip install 'vijax[numpyro]'``).
        ModelSpecError: a site vijax cannot represent, named: a support without a vijax
            counterpart, a ``numpyro.param`` site, a subsampled plate, or no latent.
        DataError: an observed value outside its site's support (named).

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, vijax as vj
        >>> def m(x):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with numpyro.plate("N", x.shape[0]):
        ...         numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> model, data = from_numpyro(m, jnp.array([1.0, 2.0, 3.0]))
        >>> model.supports, sorted(data)
        ({'mu': vj.real(shape=())}, ['x'])
        >>> float(vj.cavi(model, data).posterior["mu"].mean())
        1.5
    """
    tr, staged = _trace(model_fn, args, kwargs)
    try:
        supports, data = _sites(tr)
    except (ModelSpecError, DataError):
        raise
    except Exception:  # noqa: BLE001 - a staged value needed concretely: trace eagerly
        if not staged:
            raise
        supports, data = _sites(_trace(model_fn, args, kwargs, staged=False)[0])
    if not supports:
        raise ModelSpecError("the NumPyro model has no latent (unobserved) sample site")
    log_joint = NumPyroLogJoint(model_fn, args, kwargs, list(supports), list(data))
    return Model(log_joint, supports), data


__all__ = ["from_numpyro", "support_of", "NumPyroLogJoint", "READABLE", "INSTALL_HINT"]
