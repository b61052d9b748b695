"""Figures: reverse vs forward KL on a bivariate Gaussian and a two-mode target, and ELBO
traces of CAVI against a gradient path.

matplotlib is optional (``pip install vijax[plot]``); it is imported inside the functions
and only the object-oriented API is used (no pyplot state, no display needed). Every
function writes a PNG into ``folder`` (created if missing) and returns its path.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from vijax.inference import kl_projection as klp

_BIVARIATE_MEAN = (0.0, 0.0)
_BIVARIATE_COV = ((1.0, 0.9), (0.9, 1.0))
_REVERSE, _FORWARD, _TARGET = "#d62728", "#1f77b4", "#2ca02c"


def _figure(ncols=1, width=5.0, height=4.6):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("vijax.plots needs matplotlib: pip install vijax[plot] "
                          "(or pip install matplotlib)") from e
    fig = Figure(figsize=(width * ncols, height))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig, folder, filename):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _grid(lo, hi, n=160):
    xs = np.linspace(lo[0], hi[0], n)
    ys = np.linspace(lo[1], hi[1], n)
    X, Y = np.meshgrid(xs, ys)
    return X, Y, jnp.stack([jnp.asarray(X).ravel(), jnp.asarray(Y).ravel()], -1)


def _factorized_density(q, pts):
    """Density of a factorized Normal with batch (2,) at points (P, 2)."""
    return np.asarray(jnp.exp(jnp.sum(q.log_prob(pts), -1)))


def _panel(ax, X, Y, p, q, color, title, label):
    ax.contour(X, Y, p, levels=5, colors=_TARGET, linewidths=1.2)
    ax.contour(X, Y, q.reshape(X.shape), levels=5, colors=color, linewidths=1.2)
    ax.plot([], [], color=_TARGET, label="target p")
    ax.plot([], [], color=color, label=label)
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.legend(loc="upper left", fontsize=8)


def plot_kl_bivariate(folder, mean=_BIVARIATE_MEAN, cov=_BIVARIATE_COV,
                      filename="kl_bivariate_gaussian.png"):
    """Contours of ``N(mean, cov)`` with its reverse-KL (CAVI: variances ``1/Lambda_ii``)
    and forward-KL (moment matching: ``Sigma_ii``) factorized approximations."""
    mean = jnp.asarray(mean, jnp.zeros(()).dtype)
    cov = jnp.asarray(cov, mean.dtype)
    rev = klp.reverse_kl_gaussian(mean, cov, method="cavi")
    fwd = klp.forward_kl_gaussian(mean, cov)
    sd = np.sqrt(np.diag(np.asarray(cov)))
    lo, hi = np.asarray(mean) - 3 * sd, np.asarray(mean) + 3 * sd
    X, Y, pts = _grid(lo, hi)
    p = np.asarray(jnp.exp(jax.scipy.stats.multivariate_normal.logpdf(pts, mean, cov)))
    fig, (a, b) = _figure(2)
    _panel(a, X, Y, p.reshape(X.shape), _factorized_density(rev, pts), _REVERSE,
           "reverse KL(q||p), CAVI", "q: variances 1/Λ_ii")
    _panel(b, X, Y, p.reshape(X.shape), _factorized_density(fwd, pts), _FORWARD,
           "forward KL(p||q), moment matching", "q: variances Σ_ii")
    return _save(fig, folder, filename)


def plot_kl_two_mode(folder, key=None, target=None, filename="kl_two_mode.png",
                     num_steps=3000, num_samples=20000):
    """Contours of a two-mode mixture with the reverse-KL fit by gradient (one mode) and
    the forward-KL projection from samples (covering both)."""
    key = jax.random.key(0) if key is None else key
    target = klp.two_mode_target() if target is None else target
    k1, k2 = jax.random.split(key)
    start = target.mean() + 0.1 * (target.means[1] - target.means[0])
    rev = klp.reverse_kl_fit(target.log_prob, start, key=k1, num_steps=num_steps).q
    fwd = klp.forward_kl_samples(target.sample(k2, num_samples))
    m = np.asarray(target.mean())
    spread = 3.2 * np.sqrt(np.max(np.diag(np.asarray(target.cov()))))
    X, Y, pts = _grid(m - spread, m + spread)
    p = np.asarray(jnp.exp(jax.vmap(target.log_prob)(pts))).reshape(X.shape)
    fig, (a, b) = _figure(2)
    _panel(a, X, Y, p, _factorized_density(rev, pts), _REVERSE,
           "reverse KL(q||p), gradient", "q: locks onto one mode")
    _panel(b, X, Y, p, _factorized_density(fwd, pts), _FORWARD,
           "forward KL(p||q), from samples", "q: covers both modes")
    return _save(fig, folder, filename)


def plot_elbo_traces(folder, cavi_trace, gradient_trace, labels=("CAVI", "gradient"),
                     filename="elbo_traces.png", title="ELBO by iteration"):
    """ELBO against iteration for two fits (e.g. ``fit.elbo_trace`` of :func:`vijax.cavi`
    and of :func:`vijax.fit_gradient`): the ELBO itself (left) and its gap to the best
    value either reached, on a log scale (right). Pass only the iterations that ran."""
    traces = [np.asarray(cavi_trace, dtype=float), np.asarray(gradient_trace, dtype=float)]
    fig, (ax, gap_ax) = _figure(2, width=5.2, height=4.2)
    best = np.nanmax(np.concatenate(traces))
    for t, label, color in zip(traces, labels, (_REVERSE, _FORWARD)):
        it = np.arange(1, t.size + 1)
        ax.plot(it, t, color=color, label=label, lw=1.4)
        gap = np.maximum(best - t, 1e-16)
        gap_ax.plot(it, gap, color=color, label=label, lw=1.4)
    for a in (ax, gap_ax):
        a.set_xscale("log")
        a.set_xlabel("iteration (sweep or optimizer step)")
    ax.set_ylabel("ELBO")
    gap_ax.set_yscale("log")
    gap_ax.set_ylabel("best ELBO - ELBO")
    ax.set_title(title)
    gap_ax.set_title("gap to the best ELBO")
    ax.legend(fontsize=8)
    both = np.concatenate(traces)
    hi, lo = np.nanmax(both), np.nanpercentile(both, 5)
    if np.isfinite(hi) and np.isfinite(lo) and hi > lo:
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    return _save(fig, folder, filename)


def demo_figures(folder, key=None):
    """The three figures of ``vijax demo``: bivariate-Gaussian KL directions, the two-mode
    target, and ELBO traces of CAVI and of :func:`vijax.fit_gradient` (exact ELBO, Adam)
    on the bivariate Gaussian with one latent per coordinate.

    Returns:
        list of the PNG paths written.
    """
    key = jax.random.key(0) if key is None else key
    k1, k2 = jax.random.split(key)
    paths = [plot_kl_bivariate(folder), plot_kl_two_mode(folder, key=k1)]
    from vijax.inference.cavi import cavi
    mean = jnp.asarray(_BIVARIATE_MEAN, jnp.zeros(()).dtype) + 1.0
    cov = jnp.asarray(_BIVARIATE_COV, mean.dtype)
    model, data = klp.gaussian_cavi_model(mean, cov)
    fit = cavi(model, data, key=k2, tol=1e-12, max_iters=200)
    n = int(fit.num_iters)
    from vijax.inference.gradient import fit_gradient
    import optax
    g = fit_gradient(model, data, k2, optimizer=optax.adam(0.05), estimator="exact",
                     num_steps=2000, tol=1e-12)
    m = int(g.num_iters)
    paths.append(plot_elbo_traces(folder, np.asarray(fit.elbo_trace)[:max(n, 1)],
                                  np.asarray(g.elbo_trace)[:max(m, 1)],
                                  labels=("CAVI (closed-form sweeps)",
                                          "gradient (exact ELBO, Adam 0.05)"),
                                  title="bivariate Gaussian: ELBO = -KL(q||p)"))
    return paths


__all__ = ["plot_kl_bivariate", "plot_kl_two_mode", "plot_elbo_traces", "demo_figures"]
