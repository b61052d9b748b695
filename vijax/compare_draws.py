"""A fitted approximation (CAVI, gradient, EM, Laplace) against posterior draws (Gibbs).

Per latent element, with the draws' mean ``m`` and standard deviation ``s`` (pooled over
chains) and the fit's mean ``m_q`` and variance ``v_q``:

    dmean/sd = |m_q - m| / s,        sd ratio = sqrt(v_q) / s.

The draws are the reference (asymptotically exact); a mean-field fit typically has
``sd ratio < 1``: reverse KL under-estimates the marginal variances (the bivariate
Gaussian: ``1/Lambda_ii`` against ``Sigma_ii``, a ratio of ``sqrt(1 - rho^2)``). The
Monte Carlo error of ``m`` is ``s / sqrt(ESS)``: differences of that size are noise.
Categorical latents are compared through their one-hot coordinates (probabilities).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from vijax.inference import gibbs_diagnostics as diag


@dataclasses.dataclass
class DrawComparison:
    """Per-latent moments of a fit against draws.

    Attributes:
        agree: every latent's largest ``dmean/sd`` is at most ``mean_tol_sd`` (and, when
            ``sd_rtol`` is given, every sd ratio within ``1 +- sd_rtol``).
        latents: name -> dict with ``family``, ``max_mean_diff_sd`` (largest
            ``|m_q - m| / s`` over elements), ``mc_error_sd`` (``1/sqrt(ESS)`` at that
            element: the Monte Carlo error of the draws' mean in sd units),
            ``sd_ratio_min``, ``sd_ratio_max`` (``sqrt(v_q)/s`` over elements),
            ``fit_var``/``draw_var`` (the first element's variances), ``constant``
            (elements that never moved in the draws, left out).
        names: labels of the fit and the draws.
    """

    agree: bool
    latents: dict
    mean_tol_sd: float
    sd_rtol: float | None = None
    names: tuple = ("fit", "gibbs")
    num_draws: int = 0

    def to_dict(self):
        return {"agree": self.agree, "mean_tol_sd": self.mean_tol_sd, "sd_rtol": self.sd_rtol,
                "names": list(self.names), "num_draws": self.num_draws,
                "latents": self.latents}

    def __str__(self):
        a, b = self.names
        rows = [f"{a} against {self.num_draws} {b} draws (dmean in draw sd; sd ratio = "
                f"{a} sd / draw sd)",
                f"{'latent':<10} {'family':<20} {'dmean/sd':>9} {'MC err':>7} "
                f"{'sd ratio min':>12} {'max':>7} {'var ' + a:>12} {'var ' + b:>12}"]
        for n, r in self.latents.items():
            note = f"  ({r['constant']} constant element(s) left out)" if r["constant"] else ""
            rows.append(f"{n:<10} {r['family']:<20} {r['max_mean_diff_sd']:>9.3f} "
                        f"{r['mc_error_sd']:>7.3f} {r['sd_ratio_min']:>12.3f} "
                        f"{r['sd_ratio_max']:>7.3f} {r['fit_var']:>12.4g} "
                        f"{r['draw_var']:>12.4g}{note}")
        crit = f"means within {self.mean_tol_sd:g} sd" + (
            f", sd ratios within 1 +- {self.sd_rtol:g}" if self.sd_rtol is not None else "")
        rows.append(("AGREE" if self.agree else "DISAGREE") + f" ({crit})")
        return "\n".join(rows)

    __repr__ = __str__


def _draws_of(draws):
    """``{latent: [chains, samples, ...]}`` from a GibbsResult or a dict."""
    d = getattr(draws, "draws", draws)
    if not isinstance(d, Mapping):
        raise TypeError("compare_draws: draws must be a GibbsResult (vijax.gibbs) or a dict "
                        f"latent -> array [chains, samples, ...]; got {type(draws).__name__}")
    out = {}
    for n, v in d.items():
        v = np.asarray(v)
        if v.ndim < 2:
            raise ValueError(f"compare_draws: draws of latent {n!r} have shape {v.shape}; "
                             "expected [chains, samples, ...value shape]")
        out[n] = v
    return out


def _fit_moments(fit, name):
    """(family label, mean, variance, is categorical) of one latent of a fit."""
    if isinstance(getattr(fit, "posterior", None), Mapping):
        q = fit.posterior[name]
        cat = getattr(q, "support", "") == "categorical"
        return (type(q).__name__, np.asarray(q.mean(), np.float64),
                np.asarray(q.variance(), np.float64), cat)
    if isinstance(getattr(fit, "mean", None), Mapping):  # a Laplace fit: delta-method moments
        return ("Laplace", np.asarray(fit.mean[name], np.float64),
                np.asarray(fit.variance[name], np.float64), False)
    raise TypeError("compare_draws: fit must be a fit result (vj.cavi, vj.fit_gradient, "
                    f"vj.em or vj.laplace), got {type(fit).__name__}")


def compare_draws(fit, draws, mean_tol_sd=0.5, sd_rtol=None,
                  names=("fit", "gibbs")) -> DrawComparison:
    """Compare a fit's per-latent means and variances with posterior draws.

    Args:
        fit: a result of ``vj.cavi``, ``vj.fit_gradient``, ``vj.em`` or ``vj.laplace``.
        draws: a :class:`~vijax.inference.gibbs_result.GibbsResult`, or a dict latent ->
            array ``[chains, samples] + value shape``.
        mean_tol_sd: ``agree`` needs every ``|m_q - m| / s`` at most this.
        sd_rtol: optionally, ``agree`` also needs every sd ratio within ``1 +- sd_rtol``
            (leave None for a mean-field fit, whose variances are known to be small).
        names: labels of the fit and of the draws in the table.

    Returns:
        :class:`DrawComparison` (``print`` it; ``.to_dict()`` for JSON).

    Raises:
        ValueError: a latent of the draws is missing from the fit, or shapes differ.
    """
    d = _draws_of(draws)
    lat, ok, total = {}, True, 0
    for n, x in d.items():
        fam, mq, vq, cat = _fit_moments(fit, n)
        x = x.astype(np.float64)
        if cat:  # labels -> one-hot coordinates, compared with the probabilities
            k = mq.shape[-1]
            x = (x[..., None] == np.arange(k)).astype(np.float64)
        total = x.shape[0] * x.shape[1]
        if x.shape[2:] != mq.shape:
            raise ValueError(f"compare_draws: latent {n!r} has value shape {x.shape[2:]} in "
                             f"the draws and {mq.shape} in the fit")
        pooled = x.reshape((-1,) + x.shape[2:])
        m, s = pooled.mean(axis=0), pooled.std(axis=0, ddof=1)
        moving = np.ravel(s > 0)
        dm = np.ravel(np.abs(mq - m))[moving] / np.ravel(s)[moving]
        ratio = np.ravel(np.sqrt(vq))[moving] / np.ravel(s)[moving]
        if dm.size:
            worst = int(np.argmax(dm))
            ess = np.ravel(diag.ess(x))[moving][worst] if x.shape[1] >= 4 else np.nan
            row = {"max_mean_diff_sd": float(dm[worst]),
                   "mc_error_sd": float(1.0 / np.sqrt(ess)) if ess > 0 else float("nan"),
                   "sd_ratio_min": float(ratio.min()), "sd_ratio_max": float(ratio.max()),
                   "fit_var": float(np.ravel(vq)[moving][0]),
                   "draw_var": float(np.ravel(s)[moving][0] ** 2)}
        else:
            row = {k: float("nan") for k in ("max_mean_diff_sd", "mc_error_sd",
                                             "sd_ratio_min", "sd_ratio_max", "fit_var",
                                             "draw_var")}
        row.update(family=fam, constant=int(np.sum(~moving)))
        lat[n] = row
        if dm.size:
            ok &= bool(row["max_mean_diff_sd"] <= mean_tol_sd)
            if sd_rtol is not None:
                ok &= bool(abs(row["sd_ratio_min"] - 1) <= sd_rtol
                           and abs(row["sd_ratio_max"] - 1) <= sd_rtol)
    return DrawComparison(bool(ok), lat, mean_tol_sd, sd_rtol, tuple(names), total)
