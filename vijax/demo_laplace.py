"""The "compare with Laplace" picture's numbers: one skewed one-dimensional posterior, its
exact density, Gibbs draws, the Laplace Gaussians and the CAVI factor.

The model is the zoo's Gamma-Poisson pair, ``lam ~ Gamma(a0, b0)``, ``x_i ~ Poisson(lam)``,
with few counts, so the exact posterior ``Gamma(a0 + sum x, b0 + n)`` is visibly skewed
(skewness ``2 / sqrt(a)``). Each approximation comes from the library, fitted to the
model's log joint:

- CAVI (:func:`vijax.cavi`): the model is one conjugate block, so one update is the exact
  posterior (KL 0 up to quadrature error);
- Gibbs (:func:`vijax.gibbs`): independent exact draws (one block: each sweep draws from
  the posterior itself);
- Laplace (:func:`vijax.laplace`) on ``u = log lam`` (the library's default for a positive
  latent): ``q(u) = N(u*, s^2)``, a log-normal in ``lam``; its mode ``u*`` is the exact
  mode of the density of ``u``, ``log(a / b)``;
- Laplace on ``lam`` itself (the same log joint declared real): ``N(lam*, 1 / -l''(lam*))``
  with ``lam* = (a - 1) / b`` the exact mode. It puts mass on ``lam < 0`` where the
  posterior is 0, so ``KL(q || p)`` is infinite.

``KL(q || p) = int q log(q / p)`` is computed by the trapezoid rule on a grid of ``u``
(KL does not depend on the parameterization), fine enough that its error is far below
the digits printed.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

#: the counts observed (few, so the posterior is skewed): Gamma(3 + 3, 2 + 4) = Gamma(6, 6)
COUNTS = (0, 1, 0, 2)
#: points of the quadrature grids (u for KL, lam for the density and the figure)
GRID_POINTS = 4001


class Row(NamedTuple):
    """One line of the table: summaries of one approximation of ``p(lam | x)``.

    ``kl`` is ``KL(q || p)`` (``inf`` when q has mass where p has none, ``nan`` for draws:
    no density)."""

    name: str
    mean: float
    sd: float
    mode: float
    skewness: float
    kl: float


class SkewedPosterior(NamedTuple):
    """Everything :func:`skewed_posterior` computed (numbers for the table and figure)."""

    counts: Any          # the data
    shape: float         # exact posterior Gamma(shape, rate)
    rate: float
    cavi: Any            # vijax.families.Gamma, the CAVI factor
    laplace_log: Any     # LaplaceResult on u = log lam
    laplace_lam: Any     # LaplaceResult with lam declared real
    draws: np.ndarray    # Gibbs draws of lam [chains, samples]
    rows: tuple          # Row per approximation: exact, CAVI, Gibbs, Laplace(log), Laplace
    lam: np.ndarray      # grid of lam for densities
    densities: dict      # name -> density on ``lam`` (exact, CAVI, Laplace (log lam), ...)

    @property
    def laplace_lam_params(self):
        """``(mean, sd)`` of the Gaussian in ``lam``."""
        return (float(self.laplace_lam.mean["lam"]),
                math.sqrt(float(self.laplace_lam.variance["lam"])))

    @property
    def laplace_log_params(self):
        """``(u*, s)`` of the Gaussian in ``u = log lam``."""
        return _log_params(self.laplace_log)


def _log_params(lap):
    """``(u*, s)`` of a one-dimensional LaplaceResult, ``s^2`` the inverse of the
    precision ``-2 eta_xxT`` (read on the host: no eager inversion)."""
    prec = -2.0 * float(np.asarray(lap.posterior.natural["xxT"]).reshape(()))
    return float(np.asarray(lap.map_unconstrained["lam"])), 1.0 / math.sqrt(prec)


def gamma_log_pdf(lam, a, b):
    """``log Gamma(lam; a, rate b)``, ``-inf`` for ``lam <= 0``."""
    lam = np.asarray(lam, np.float64)
    pos = lam > 0
    safe = np.where(pos, lam, 1.0)
    out = (a - 1.0) * np.log(safe) - b * safe + a * math.log(b) - math.lgamma(a)
    return np.where(pos, out, -np.inf)


def normal_log_pdf(x, m, s):
    return -0.5 * ((np.asarray(x, np.float64) - m) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))


def trapezoid(y, x):
    """``int y dx`` by the trapezoid rule (numpy's name changed between versions)."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


def kl_quadrature(log_q_u, log_p_u, u):
    """``KL(q || p) = int q (log q - log p) du`` on the grid ``u``; terms where ``q`` is 0
    count 0, a point where ``q > 0`` and ``p = 0`` gives ``inf``."""
    lq, lp = np.asarray(log_q_u), np.asarray(log_p_u)
    q = np.exp(lq)
    if np.any((q > 0) & ~np.isfinite(lp)):
        return math.inf
    integrand = np.where(q > 0, q * (lq - np.where(np.isfinite(lp), lp, 0.0)), 0.0)
    return trapezoid(integrand, u)


def gamma_summary(a, b):
    """``(mean, sd, mode, skewness)`` of ``Gamma(a, rate b)`` (mode 0 when ``a <= 1``)."""
    return a / b, math.sqrt(a) / b, max(a - 1.0, 0.0) / b, 2.0 / math.sqrt(a)


def lognormal_summary(m, s):
    """``(mean, sd, mode, skewness)`` of ``exp(u)``, ``u ~ N(m, s^2)``."""
    e = math.exp(s * s)
    mean = math.exp(m + s * s / 2)
    return mean, mean * math.sqrt(e - 1.0), math.exp(m - s * s), (e + 2.0) * math.sqrt(e - 1.0)


def draws_summary(d, grid):
    """``(mean, sd, mode, skewness)`` of draws; the mode is the maximum of a Gaussian
    kernel density estimate (Silverman's bandwidth) on ``grid``: a rough estimate (for
    the demo's Gamma(6, 6) and 8000 draws, bias ~0.02 and spread ~0.05)."""
    d = np.asarray(d, np.float64).ravel()
    m, sd = d.mean(), d.std(ddof=1)
    skew = float(np.mean(((d - m) / d.std()) ** 3))
    h = 1.06 * sd * d.size ** -0.2
    sub = d[:: max(1, d.size // 4000)]  # the KDE's mode from at most ~4000 draws
    kde = np.exp(-0.5 * ((grid[:, None] - sub[None, :]) / h) ** 2).sum(1)
    return float(m), float(sd), float(grid[int(np.argmax(kde))]), skew


def skewed_posterior(counts=COUNTS, seed=0, num_draws=4000, num_chains=2) -> SkewedPosterior:
    """Fit the zoo's Gamma-Poisson model to ``counts`` by CAVI, Laplace (on ``log lam``
    and on ``lam``) and Gibbs, and summarize each against the exact posterior.

    Returns:
        :class:`SkewedPosterior`; ``rows`` in the order exact, CAVI, Gibbs, Laplace on
        ``log lam``, Laplace on ``lam``.

    Raises:
        DataError: ``counts`` not a non-empty 1-d sequence of non-negative integers.
        InvalidParameterError: ``num_draws`` < 2 or ``num_chains`` < 1.
        FitDivergedError: a Laplace fit found no strict mode (from :func:`vijax.laplace`).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from vijax.inference.cavi import cavi
    from vijax.inference.gibbs import gibbs
    from vijax.inference.laplace import laplace
    from vijax.model import Model
    from vijax.models.conjugate_pairs import GAMMA_PRIOR, gamma_poisson
    from vijax.supports import real

    from vijax.errors import DataError, InvalidParameterError
    c = np.asarray(counts)
    if c.ndim != 1 or c.size < 1 or not np.all(np.isfinite(c)) or np.any(c < 0) \
            or np.any(c != np.round(c)):
        raise DataError(f"skewed_posterior: counts must be a non-empty 1-d sequence of "
                        f"non-negative integers (Poisson data), got {counts!r}")
    for name, v, least in (("num_draws", num_draws, 2), ("num_chains", num_chains, 1)):
        if not (isinstance(v, int) and v >= least):
            raise InvalidParameterError(f"skewed_posterior: {name} must be an int >= "
                                        f"{least}, got {v!r}")
    model = gamma_poisson().model
    x = jnp.asarray(c, jnp.int32)
    a = GAMMA_PRIOR[0] + float(np.sum(c))
    b = GAMMA_PRIOR[1] + float(c.size)

    q = cavi(model, x, key=jax.random.key(seed)).posterior["lam"]
    # a one-dimensional concave target: plain gradient ascent (step 0.1, curvature ~6)
    # reaches the mode in ~25 steps, and compiles in a fraction of L-BFGS's time; the
    # result's `ok` (a strict, stationary mode) is checked by `problems`
    opt = optax.sgd(0.1)
    lap_log = laplace(model, x, optimizer=opt)
    lap_lam = laplace(Model(model.log_joint, {"lam": real()}), x, optimizer=opt,
                      init={"lam": float(np.mean(c)) + 0.5})
    draws = np.asarray(gibbs(model, x, jax.random.key(seed + 1), num_samples=num_draws,
                             num_warmup=1, num_chains=num_chains).draws["lam"], np.float64)

    qa, qb = float(q.concentration), float(q.rate)
    m_u, s_u = _log_params(lap_log)
    m_l, s_l = float(lap_lam.mean["lam"]), math.sqrt(float(lap_lam.variance["lam"]))

    # KL on a grid of u = log lam: densities of u are those of lam times lam = e^u
    u = np.linspace(m_u - 14 * s_u, m_u + 14 * s_u, GRID_POINTS)
    lam_u = np.exp(u)
    log_p_u = gamma_log_pdf(lam_u, a, b) + u
    kl_cavi = kl_quadrature(gamma_log_pdf(lam_u, qa, qb) + u, log_p_u, u)
    kl_log = kl_quadrature(normal_log_pdf(u, m_u, s_u), log_p_u, u)
    # the Gaussian in lam has mass below 0, where p(lam | x) = 0
    kl_lam = math.inf if s_l > 0 else math.nan

    mean, sd = a / b, math.sqrt(a) / b
    lam = np.linspace(0.0, mean + 12 * sd, GRID_POINTS)
    lam_pos = np.linspace(lam[1], lam[-1], 801)
    rows = (Row("exact", *gamma_summary(a, b), 0.0),
            Row("CAVI", *gamma_summary(qa, qb), kl_cavi),
            Row("Gibbs", *draws_summary(draws, lam_pos), math.nan),
            Row("Laplace, log lam", *lognormal_summary(m_u, s_u), kl_log),
            Row("Laplace, lam", m_l, s_l, m_l, 0.0, kl_lam))
    densities = {
        "exact": np.exp(gamma_log_pdf(lam, a, b)),
        "CAVI": np.exp(gamma_log_pdf(lam, qa, qb)),
        "Laplace, log lam": np.where(lam > 0, np.exp(normal_log_pdf(
            np.log(np.where(lam > 0, lam, 1.0)), m_u, s_u)) / np.where(lam > 0, lam, 1.0), 0.0),
        "Laplace, lam": np.exp(normal_log_pdf(lam, m_l, s_l)),
    }
    return SkewedPosterior(tuple(int(v) for v in c), a, b, q, lap_log, lap_lam, draws, rows, lam,
                           densities)


#: the demo's Gibbs mean must be within this many Monte Carlo standard errors of the exact
GIBBS_SE = 5.0


def problems(sp: SkewedPosterior) -> list:
    """What in ``sp`` contradicts the closed forms (empty when all holds): the CAVI factor
    is not ``Gamma(a, b)`` (relative 1e-10); a Laplace mode is not the exact mode
    (``(a - 1) / b`` in ``lam``, ``log(a / b)`` in ``u``; 1e-6); a Laplace fit is not
    ``ok``; the Gibbs mean is more than :data:`GIBBS_SE` standard errors from ``a / b``
    (iid draws: ``sd / sqrt(n)``); the exact density does not integrate to 1 (1e-6)."""
    out = []
    a, b = sp.shape, sp.rate
    qa, qb = float(sp.cavi.concentration), float(sp.cavi.rate)
    if not (abs(qa - a) <= 1e-10 * a and abs(qb - b) <= 1e-10 * b):
        out.append(f"CAVI factor Gamma({qa:.10g}, {qb:.10g}) is not the exact "
                   f"Gamma({a:g}, {b:g})")
    m_l, _ = sp.laplace_lam_params
    if not abs(m_l - (a - 1) / b) <= 1e-6 * (a / b):
        out.append(f"Laplace mode in lam {m_l:.10g} is not the exact mode {(a - 1) / b:.10g}")
    m_u, _ = sp.laplace_log_params
    if not abs(m_u - math.log(a / b)) <= 1e-6:
        out.append(f"Laplace mode in log lam {m_u:.10g} is not log(a/b) = "
                   f"{math.log(a / b):.10g}")
    for name, lap in (("log lam", sp.laplace_log), ("lam", sp.laplace_lam)):
        if not bool(lap.ok):
            out.append(f"Laplace on {name} did not reach a valid mode")
    d = np.asarray(sp.draws, np.float64).ravel()
    se = d.std() / math.sqrt(d.size)
    if not abs(d.mean() - a / b) <= GIBBS_SE * se:
        out.append(f"Gibbs mean {d.mean():.5f} is not within {GIBBS_SE:g} standard errors "
                   f"({GIBBS_SE * se:.5f}) of the exact {a / b:.5f}")
    total = trapezoid(sp.densities["exact"], sp.lam)
    if not abs(total - 1.0) <= 1e-6:
        out.append(f"the exact density integrates to {total:.8f} on the grid, not 1")
    return out


def format_table(sp: SkewedPosterior) -> str:
    """The table of :func:`skewed_posterior`'s rows, one line per approximation."""
    lines = [f"{'':<17} {'mean':>8} {'sd':>8} {'mode':>8} {'skewness':>9} {'KL(q||p)':>10}"]
    for r in sp.rows:
        kl = ("-" if r.name == "exact" or math.isnan(r.kl) else
              "inf" if math.isinf(r.kl) else f"{r.kl:.2e}")
        lines.append(f"{r.name:<17} {r.mean:>8.4f} {r.sd:>8.4f} {r.mode:>8.4f} "
                     f"{r.skewness:>9.4f} {kl:>10}")
    m_l, s_l = sp.laplace_lam_params
    below = 0.5 * math.erfc(m_l / (s_l * math.sqrt(2.0)))
    lines.append(f"(Laplace on lam puts {below:.2%} of its mass on lam < 0, where the "
                 "posterior is 0: KL(q||p) is infinite)")
    return "\n".join(lines)


__all__ = ["COUNTS", "Row", "SkewedPosterior", "skewed_posterior", "format_table", "problems",
           "gamma_log_pdf", "kl_quadrature", "trapezoid"]
