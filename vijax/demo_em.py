"""The EM picture's numbers: the lower bound ``l(theta, theta_n)`` against the log
likelihood ``l(theta)`` for a one-parameter model.

The model is a two-component mixture with known components ``N(MU0, 1)`` and ``N(MU1, 1)``
and unknown weight ``w``: ``c_i ~ Bernoulli(w)``, ``x_i ~ N(MU[c_i], 1)``. Then

.. math:: l(w) = \\sum_i \\log(w N(x_i; MU1, 1) + (1 - w) N(x_i; MU0, 1)),

    l(w, w_n) = E_{q_n}[\\log p(x, c | w)] + H(q_n) \\le l(w),

with ``q_n(c) = p(c | x, w_n)``, so the bound touches ``l`` at ``w_n`` (their gap is
``KL(q_n || p(c | x, w))``) and its maximum is ``w_{n+1} = mean_i q_n(c_i = 1)``.

What comes from the library: the iterates ``w_n`` and ``l(w_n)`` (:func:`vijax.em`,
prepared once and run for ``n`` iterations), and ``q_n`` (the result's
``posterior["c"]``, the E-step at ``w_n``; its probabilities and entropy are computed
from the Bernoulli natural parameters on the host). ``E_{q_n}[log p(x, c | w)]``
is the model's own log joint evaluated at ``c = E_{q_n}[c]``: the compiler found it linear
in ``c`` (a Bernoulli statistic), so this is the expectation exactly. ``l(w)`` is a plain
``logaddexp`` (independent of the library).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

MU0, MU1 = 0.0, 2.0       # the known component means (unit variances)
TRUE_WEIGHT = 0.7         # weight of component 1 in the simulated data
NUM_POINTS = 40
START = 0.1               # w_0, far from the maximum so the steps are visible
NUM_BOUNDS = 3            # bounds drawn at w_0, w_1, w_2


def _log_joint(v, x):
    from jax.scipy import stats
    import jax.numpy as jnp
    c, w = v["c"], v["w"]
    return jnp.sum(c * (jnp.log(w) + stats.norm.logpdf(x, MU1, 1.0))
                   + (1 - c) * (jnp.log1p(-w) + stats.norm.logpdf(x, MU0, 1.0)))


def mixture_model(n=NUM_POINTS):
    """The :class:`vijax.Model` (``w`` unit interval, ``c`` binary of shape ``(n,)``)."""
    from vijax.model import Model
    from vijax.supports import binary, unit_interval
    return Model(_log_joint, {"w": unit_interval(), "c": binary(shape=(n,))})


def make_data(seed=0, n=NUM_POINTS):
    """``n`` points from the mixture with weight :data:`TRUE_WEIGHT` (numpy, float64)."""
    rng = np.random.default_rng(seed)
    c = rng.random(n) < TRUE_WEIGHT
    return np.where(c, MU1, MU0) + rng.standard_normal(n)


def log_likelihood(w, x):
    """``l(w) = sum_i log(w N(x_i; MU1, 1) + (1 - w) N(x_i; MU0, 1))`` for an array ``w``
    (plain numpy; ``-inf`` outside ``(0, 1)`` only at the ends)."""
    w = np.asarray(w, np.float64)[..., None]
    x = np.asarray(x, np.float64)
    c = -0.5 * np.log(2 * np.pi)
    with np.errstate(divide="ignore"):
        return np.sum(np.logaddexp(np.log(w) + c - 0.5 * (x - MU1) ** 2,
                                   np.log1p(-w) + c - 0.5 * (x - MU0) ** 2), -1)


_CHUNK = 1024


def _expected_log_joint(r, x, w):
    """``E_q[log p(x, c | w)]`` for each entry of ``w``, ``q(c_i = 1) = r_i``: the log
    joint at ``c = r`` (linear in ``c``), jitted once per length of ``w``."""
    global _JITTED
    if _JITTED is None:
        import jax
        _JITTED = jax.jit(jax.vmap(lambda r, x, wi: _log_joint({"c": r, "w": wi}, x),
                                   in_axes=(None, None, 0)))
    return _JITTED(r, x, w)


_JITTED = None


class Bound(NamedTuple):
    """One EM iteration: ``w_n``, the E-step's ``r = q_n(c = 1)`` and ``H(q_n)``,
    ``l(w_n)`` from the library's trace, and ``w_{n+1}``."""

    n: int
    w: float
    r: np.ndarray
    entropy: float
    log_likelihood: float
    w_next: float

    def __call__(self, w, x):
        """``l(w, w_n) = E_{q_n}[log p(x, c | w)] + H(q_n)`` for an array ``w``, by the
        model's log joint at ``c = r`` (exact: the log joint is linear in ``c``)."""
        w = np.asarray(w, np.float64)
        flat = w.ravel()
        pad = -flat.size % _CHUNK  # one compiled shape for every grid length
        vals = _expected_log_joint(self.r, np.asarray(x, np.float64),
                                   np.concatenate([flat, np.full(pad, 0.5)]))
        return np.asarray(vals, np.float64)[:flat.size].reshape(w.shape) + self.entropy

    @property
    def argmax(self):
        """The bound's maximizer in closed form: ``mean(r)``."""
        return float(np.mean(self.r))


class EMBound(NamedTuple):
    x: np.ndarray
    bounds: tuple        # Bound per n = 0 .. NUM_BOUNDS - 1
    iterates: np.ndarray  # w_0 .. w_NUM_BOUNDS
    trace: np.ndarray    # l(w_n) by vj.em (exact E-step: the log likelihood)
    result: Any          # the EMResult of the longest run


def em_bound(seed=0, start=START, num_bounds=NUM_BOUNDS, n=NUM_POINTS) -> EMBound:
    """Run :func:`vijax.em` from ``w_0 = start`` for ``0 .. num_bounds`` iterations and
    collect, at each ``w_n``, the E-step posterior that defines ``l(w, w_n)``.

    Raises:
        InvalidParameterError: ``start`` outside ``(0, 1)``, ``num_bounds`` or ``n`` not a
            positive int.
    """
    import jax.numpy as jnp

    from vijax.inference.em import prepare

    from vijax.errors import InvalidParameterError
    if not (isinstance(num_bounds, int) and num_bounds >= 1):
        raise InvalidParameterError(f"em_bound: num_bounds must be an int >= 1, got "
                                    f"{num_bounds!r}")
    if not (isinstance(n, int) and n >= 1):
        raise InvalidParameterError(f"em_bound: n (points) must be an int >= 1, got {n!r}")
    if not 0.0 < float(start) < 1.0:
        raise InvalidParameterError(f"em_bound: start (w_0) must lie in (0, 1): the "
                                    f"weight's log and log(1 - w) are finite only there; "
                                    f"got {start!r}")
    x = make_data(seed, n)
    prep = prepare(mixture_model(n), jnp.asarray(x), params=("w",))
    start_w = {"w": jnp.asarray(start, jnp.zeros(()).dtype)}
    runs = [prep.run(start_w, max_iters=k, tol=0.0) for k in range(num_bounds + 1)]
    iterates = np.array([float(r.params["w"]) for r in runs])
    bounds = []
    for k in range(num_bounds):
        # q_n(c_i = 1) = sigmoid(eta_i), eta the Bernoulli natural parameter (the logit);
        # read on the host (no eager JAX ops to compile)
        eta = np.asarray(runs[k].posterior["c"].natural["x"], np.float64)
        r = 0.5 * (1.0 + np.tanh(0.5 * eta))
        entropy = float(np.sum(np.logaddexp(0.0, eta) - r * eta))  # H = A(eta) - eta r
        bounds.append(Bound(k, iterates[k], r, entropy, float(runs[k].elbo),
                            iterates[k + 1]))
    return EMBound(x, tuple(bounds), iterates, np.asarray(runs[-1].trace, np.float64),
                   runs[-1])


#: the figure's numbers hold to this (float64)
TOL = 1e-10


def default_grid():
    """The grid of ``w`` on which the bounds are checked (and tabulated)."""
    return np.linspace(1e-3, 1 - 1e-3, 999)


def problems(eb: EMBound, grid=None) -> list:
    """What in ``eb`` contradicts EM's picture (empty when all holds), to :data:`TOL`
    (relative to ``max(1, |l|)``): a bound does not touch ``l`` at ``w_n`` or exceeds it
    somewhere on the grid; ``w_{n+1}`` is not the bound's closed-form maximizer
    ``mean(r)``, or a grid point beats it; the library's ``l(w_n)`` differs from the plain
    one; ``l`` decreases along the iterates."""
    grid = default_grid() if grid is None else grid
    ll = log_likelihood(grid, eb.x)
    out = []
    for bd in eb.bounds:
        lw = float(log_likelihood(bd.w, eb.x))
        tol = TOL * max(1.0, abs(lw))
        touch = float(bd(np.array([bd.w]), eb.x)[0]) - lw
        if not abs(touch) <= tol:
            out.append(f"n={bd.n}: the bound misses l at w_n by {touch:.3g}")
        excess = float(np.max(bd(grid, eb.x) - ll))
        if not excess <= tol:
            out.append(f"n={bd.n}: the bound exceeds l by {excess:.3g} on the grid")
        if not abs(bd.w_next - bd.argmax) <= TOL:
            out.append(f"n={bd.n}: EM's w_n+1 = {bd.w_next:.12g} is not the bound's argmax "
                       f"mean(r) = {bd.argmax:.12g}")
        at_next = float(bd(np.array([bd.w_next]), eb.x)[0])
        if not float(np.max(bd(grid, eb.x))) <= at_next + tol:
            out.append(f"n={bd.n}: a grid point beats the bound at w_n+1")
        if not abs(bd.log_likelihood - lw) <= tol:
            out.append(f"n={bd.n}: vj.em's l(w_n) = {bd.log_likelihood:.12g}, plain "
                       f"{lw:.12g}")
    lls = log_likelihood(eb.iterates, eb.x)
    if not np.all(np.diff(lls) > 0):
        out.append(f"the log likelihood does not increase along the iterates: {lls}")
    return out


def format_table(eb: EMBound, grid=None) -> str:
    """Per iteration: ``w_n``, ``l(w_n)`` (library and plain), the bound's value at
    ``w_n`` (touching), its largest excess over ``l`` on the grid (<= 0: below),
    ``w_{n+1}`` by EM and the bound's closed-form argmax."""
    grid = default_grid() if grid is None else grid
    ll = log_likelihood(grid, eb.x)
    lines = [f"{'n':>2} {'w_n':>9} {'l(w_n)':>12} {'bound-l at w_n':>15} "
             f"{'max(bound-l)':>13} {'w_n+1 (EM)':>11} {'argmax bound':>13}"]
    for bd in eb.bounds:
        touch = float(bd(np.array([bd.w]), eb.x)[0] - log_likelihood(bd.w, eb.x))
        above = float(np.max(bd(grid, eb.x) - ll))
        lines.append(f"{bd.n:>2} {bd.w:>9.6f} {bd.log_likelihood:>12.6f} {touch:>15.2e} "
                     f"{above:>13.2e} {bd.w_next:>11.6f} {bd.argmax:>13.6f}")
    return "\n".join(lines)


__all__ = ["mixture_model", "make_data", "log_likelihood", "Bound", "EMBound", "em_bound",
           "format_table", "problems", "default_grid"]
