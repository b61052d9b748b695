"""The lecture's two remaining figures, drawn from numbers computed elsewhere:

- :func:`plot_laplace_comparison`: a skewed posterior (Gamma-Poisson rate), its exact
  density, a histogram of Gibbs draws, the Laplace Gaussians and the CAVI factor
  (:func:`vijax.demo_laplace.skewed_posterior`);
- :func:`plot_em_bound`: EM's lower bounds ``l(theta, theta_n)`` touching the log
  likelihood at ``theta_n``, each maximized at ``theta_{n+1}``
  (:func:`vijax.demo_em.em_bound`).

matplotlib is optional, as in :mod:`vijax.plots` (ImportError naming the extra).
"""

from __future__ import annotations

import numpy as np

from vijax.plots import _figure, _save

_COLORS = {"exact": "#2ca02c", "CAVI": "#d62728", "Laplace, log lam": "#9467bd",
           "Laplace, lam": "#1f77b4", "Gibbs": "#7f7f7f"}
_STYLES = {"exact": "-", "CAVI": "--", "Laplace, log lam": "-.", "Laplace, lam": ":"}


def plot_laplace_comparison(folder, sp, filename="laplace_vs_vi.png"):
    """Density of ``lam`` under the exact posterior, CAVI, both Laplace fits, and a
    histogram of the Gibbs draws; ``sp`` a :class:`~vijax.demo_laplace.SkewedPosterior`."""
    fig, (ax,) = _figure(1, width=6.4, height=4.4)
    draws = np.asarray(sp.draws).ravel()
    ax.hist(draws, bins=80, range=(0.0, float(sp.lam[-1])), density=True,
            color=_COLORS["Gibbs"], alpha=0.35, label=f"Gibbs ({draws.size} draws)")
    rows = {r.name: r for r in sp.rows}
    m, s = sp.laplace_lam_params
    left = min(0.0, m - 3.5 * s)  # the Gaussian in lam also has mass below 0: draw it
    for name, dens in sp.densities.items():
        r = rows[name]
        kl = ("" if name == "exact" else
              f", KL {r.kl:.1e}" if np.isfinite(r.kl) else ", KL inf")
        lam = sp.lam
        if name == "Laplace, lam":
            lam = np.linspace(left, float(sp.lam[-1]), sp.lam.size)
            dens = np.exp(-0.5 * ((lam - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))
        ax.plot(lam, dens, _STYLES[name], color=_COLORS[name], lw=1.8 if name == "exact"
                else 1.5, label=f"{name}{kl}")
    ax.axvline(rows["exact"].mode, color=_COLORS["exact"], lw=0.6, alpha=0.6)
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_xlim(left, rows["exact"].mean + 7 * rows["exact"].sd)
    ax.set_xlabel("rate $\\lambda$")
    ax.set_ylabel("density")
    ax.set_title(f"Gamma-Poisson posterior Gamma({sp.shape:g}, {sp.rate:g}), "
                 f"counts {list(sp.counts)}", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, folder, filename)


def plot_em_bound(folder, eb, filename="em_lower_bound.png", grid=None):
    """The log likelihood ``l(w)`` and the bounds ``l(w, w_n)`` of
    :class:`~vijax.demo_em.EMBound` ``eb``: each touches ``l`` at ``w_n`` and peaks at
    ``w_{n+1}``."""
    from vijax.demo_em import log_likelihood
    grid = np.linspace(0.02, 0.98, 400) if grid is None else grid
    ll = log_likelihood(grid, eb.x)
    fig, (ax,) = _figure(1, width=6.4, height=4.6)
    ax.plot(grid, ll, color="black", lw=2.0, label="log likelihood $l(w)$")
    colors = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")
    for bd, col in zip(eb.bounds, colors):
        b = bd(grid, eb.x)
        ax.plot(grid, b, color=col, lw=1.3, label=f"$l(w, w_{bd.n})$, $w_{bd.n}$ = {bd.w:.3f}")
        ax.plot([bd.w], [bd.log_likelihood], "o", color=col, ms=5)
        peak = float(bd(np.array([bd.w_next]), eb.x)[0])
        ax.plot([bd.w_next], [peak], "^", color=col, ms=6)
        ax.vlines(bd.w_next, ll.min(), peak, colors=col, linestyles=":", lw=1.0)
    lo = ll.max() - 3.0 * (ll.max() - min(b.log_likelihood for b in eb.bounds))
    ax.set_ylim(max(lo, ll.min()), ll.max() + 0.08 * (ll.max() - ll.min()))
    ax.set_xlabel("mixture weight $w$")
    ax.set_ylabel("log likelihood")
    ax.set_title("EM: each bound touches $l$ at $w_n$ (o), its maximum is $w_{n+1}$ (^)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, folder, filename)


__all__ = ["plot_laplace_comparison", "plot_em_bound"]
