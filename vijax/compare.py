"""Agreement report between two fits of the same model (e.g. CAVI and gradient)."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Comparison:
    """Per-latent divergences and moment differences between fits ``a`` and ``b``.

    Attributes:
        agree: every latent's KL (both ways) is below ``kl_tol`` and the relative ELBO
            gap below ``elbo_tol``.
        elbo_a, elbo_b, elbo_gap: the ELBOs and ``|a - b| / max(|a|, 1)``.
        latents: name -> dict with ``kl_ab`` (KL(a||b)), ``kl_ba``, ``max_abs_mean_diff``,
            ``max_rel_var_diff``, ``family``.
    """

    agree: bool
    elbo_a: float
    elbo_b: float
    elbo_gap: float
    latents: dict
    elbo_tol: float
    kl_tol: float
    names: tuple = ("a", "b")
    mean_tol_sd: float | None = None

    def to_dict(self):
        return {"agree": self.agree, "elbo": {self.names[0]: self.elbo_a, self.names[1]: self.elbo_b},
                "elbo_gap": self.elbo_gap, "elbo_tol": self.elbo_tol, "kl_tol": self.kl_tol,
                "mean_tol_sd": self.mean_tol_sd,
                "latents": self.latents}

    def __str__(self):
        a, b = self.names
        rows = [f"{'latent':<10} {'family':<20} {'KL(' + a + '||' + b + ')':>14} "
                f"{'KL(' + b + '||' + a + ')':>14} {'max|dmean|':>11} {'dmean/sd':>9} {'max rel dvar':>12}"]
        for n, r in self.latents.items():
            rows.append(f"{n:<10} {r['family']:<20} {r['kl_ab']:>14.3e} {r['kl_ba']:>14.3e} "
                        f"{r['max_abs_mean_diff']:>11.3e} {r['max_mean_diff_sd']:>9.3f} {r['max_rel_var_diff']:>12.3e}")
        rows.append(f"ELBO {a} = {self.elbo_a:.8g}, {b} = {self.elbo_b:.8g}, relative gap "
                    f"{self.elbo_gap:.2e} (tol {self.elbo_tol:g}); KL tol {self.kl_tol:g}"
                    + (f"; mean tol {self.mean_tol_sd:g} sd" if self.mean_tol_sd else ""))
        rows.append("AGREE" if self.agree else "DISAGREE")
        return "\n".join(rows)

    __repr__ = __str__


def compare(a, b, elbo_tol=1e-4, kl_tol=1e-3, mean_tol_sd=None,
            names=("cavi", "gradient"), var_rtol=0.1) -> Comparison:
    """Compare two fit results latent by latent.

    KL divergences are summed over a latent's elements; mean differences are absolute
    and in units of ``b``'s posterior standard deviation; variance differences are
    relative to ``b``'s variance. ``agree`` needs the relative ELBO gap below
    ``elbo_tol``, both KLs below ``kl_tol`` and, if given, every mean within
    ``mean_tol_sd`` standard deviations.

    A declared joint block (``blocks=[["mu", "tau"]]``) is one row, keyed by its block
    name (``"mu+tau"``): the KL of the joint factors (Normal-Gamma, Normal-Wishart) and
    the moments of the members' exact marginals. A block that is joint in one fit only
    is a ValueError (different variational families).

    Either fit may be a :class:`~vijax.LaplaceResult`. Its Gaussian lives on the
    unconstrained space, so it is compared by moments in the original space (its
    delta-method mean and variance per latent); its "ELBO" is its log-evidence estimate.
    KL divergences are computed only for real latents whose other factor is a
    ``Normal`` (elementwise, against the Laplace marginals) and are NaN elsewhere; a
    latent without KL agrees when its means are within ``mean_tol_sd`` (default 0.1)
    standard deviations and its variances within ``var_rtol`` relative.
    """
    from vijax.inference.laplace import LaplaceResult
    if isinstance(a, LaplaceResult) or isinstance(b, LaplaceResult):
        return _compare_moments(a, b, elbo_tol, kl_tol, mean_tol_sd, names, var_rtol)
    for fit, which in ((a, "first"), (b, "second")):
        if not hasattr(fit, "posterior") or not isinstance(fit.posterior, dict):
            raise TypeError(f"compare: the {which} argument must be a fit result (vj.cavi, "
                            "vj.fit_gradient, vj.em or vj.laplace), got "
                            f"{type(fit).__name__}")
    lat = {}
    ok = True
    blocks_a, blocks_b = _joint_factors(a), _joint_factors(b)
    for name in set(blocks_a) ^ set(blocks_b):
        first = "first" if name in blocks_a else "second"
        raise ValueError(f"block '{name}' is one joint factor in the {first} fit only (the "
                         "other fitted its latents mean-field); compare fits of the same "
                         "variational family")
    members = set()
    rows = [(name, qa, blocks_b[name]) for name, qa in blocks_a.items()]
    for name, qa in blocks_a.items():
        members.update(name.split("+"))
    for n, qa in a.posterior.items():
        if n in members:
            continue
        if n not in b.posterior:
            raise ValueError(f"latent '{n}' is in the first fit but not the second")
        rows.append((n, qa, b.posterior[n]))
    for n, qa, qb in rows:
        if type(qa) is not type(qb):
            raise ValueError(f"latent '{n}': families differ ({type(qa).__name__} vs "
                             f"{type(qb).__name__}); compare fits of the same variational family")
        kab = float(jnp.sum(qa.kl(qb)))
        kba = float(jnp.sum(qb.kl(qa)))
        if n in blocks_a:  # moments of the members' exact marginals, side by side
            ma, va = _block_moments(a, n)
            mb, vb = _block_moments(b, n)
        else:
            ma, va = jnp.asarray(qa.mean(), float), jnp.asarray(qa.variance(), float)
            mb, vb = jnp.asarray(qb.mean(), float), jnp.asarray(qb.variance(), float)
        dm = float(jnp.max(jnp.abs(ma - mb)))
        dv = float(jnp.max(jnp.abs(va - vb) / jnp.maximum(jnp.abs(vb), 1e-300)))
        dsd = float(jnp.max(jnp.abs(ma - mb) / jnp.sqrt(jnp.maximum(vb, 1e-300))))
        lat[n] = {"family": type(qa).__name__, "kl_ab": kab, "kl_ba": kba,
                  "max_abs_mean_diff": dm, "max_mean_diff_sd": dsd, "max_rel_var_diff": dv}
        ok &= bool(np.isfinite(kab) and np.isfinite(kba) and max(kab, kba) < kl_tol)
        if mean_tol_sd is not None:
            ok &= bool(dsd < mean_tol_sd)
    ea, eb = float(a.elbo), float(b.elbo)
    gap = abs(ea - eb) / max(abs(ea), 1.0)
    ok &= bool(gap < elbo_tol)
    return Comparison(bool(ok), ea, eb, gap, lat, elbo_tol, kl_tol, tuple(names), mean_tol_sd)


def _joint_factors(fit) -> dict:
    """``{block name: joint family object}`` of a fit's declared blocks
    (:func:`vijax.results.draws.joint_factors`)."""
    from vijax.results.draws import joint_factors
    return {name: q for name, (q, _) in joint_factors(fit).items()}


def _block_moments(fit, name):
    """Concatenated (means, variances) of a block's members' marginals."""
    qs = [fit.posterior[m] for m in name.split("+")]
    flat = lambda f: jnp.concatenate([jnp.ravel(jnp.asarray(f(q), float)) for q in qs])  # noqa: E731
    return flat(lambda q: q.mean()), flat(lambda q: q.variance())


def _moments(fit, name, shape):
    """(family label, mean, variance, Normal or None) of one latent of a fit, flattened."""
    from vijax.families import Normal
    from vijax.inference.laplace import LaplaceResult
    if isinstance(fit, LaplaceResult):
        m = jnp.ravel(jnp.asarray(fit.mean[name], float))
        v = jnp.ravel(jnp.asarray(fit.variance[name], float))
        return "Laplace", m, v, None
    q = fit.posterior[name]
    m = jnp.ravel(jnp.asarray(q.mean(), float))
    v = jnp.ravel(jnp.asarray(q.variance(), float))
    if m.size != math.prod(shape):
        raise ValueError(f"latent '{name}': the {type(q).__name__} factor has {m.size} "
                         f"elements, the Laplace fit {math.prod(shape)}")
    return type(q).__name__, m, v, q if isinstance(q, Normal) else None


def _normal_kl(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)), summed over elements."""
    return float(jnp.sum(0.5 * (jnp.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)))


def _compare_moments(a, b, elbo_tol, kl_tol, mean_tol_sd, names, var_rtol):
    """:func:`compare` when one fit is a Laplace approximation (moments, KL where defined)."""
    from vijax.inference.laplace import LaplaceResult
    lap = a if isinstance(a, LaplaceResult) else b
    other = b if lap is a else a
    if not isinstance(other, LaplaceResult) and not isinstance(getattr(other, "posterior", None), dict):
        raise TypeError(f"compare: cannot compare a Laplace fit with {type(other).__name__}")
    if jnp.ndim(lap.log_evidence) != 0:
        raise ValueError("compare takes single fits; this Laplace result is batched (vmap): "
                         "compare one lane, e.g. jax.tree_util.tree_map(lambda x: x[i], fit)")
    for fit, which in ((a, names[0]), (b, names[1])):
        if isinstance(fit, LaplaceResult) and not bool(fit.ok):
            raise ValueError(f"the Laplace fit '{which}' failed (ok=False: not a mode, or a "
                             "non-finite log density); its moments are NaN")
    mean_tol = 0.1 if mean_tol_sd is None else mean_tol_sd
    shapes = {n: jnp.shape(v) for n, v in lap.mean.items()}
    names_a = list(a.mean if isinstance(a, LaplaceResult) else a.posterior)
    names_b = set(b.mean if isinstance(b, LaplaceResult) else b.posterior)
    lat, ok = {}, True
    for n in names_a:
        if n not in names_b:
            raise ValueError(f"latent '{n}' is in the first fit but not the second")
        fa, ma, va, qa = _moments(a, n, shapes[n])
        fb, mb, vb, qb = _moments(b, n, shapes[n])
        if ma.shape != mb.shape:
            raise ValueError(f"latent '{n}': {ma.size} elements in the first fit, {mb.size} "
                             "in the second")
        if qa is not None or qb is not None:  # a Normal factor against Laplace marginals
            kab, kba = _normal_kl(ma, va, mb, vb), _normal_kl(mb, vb, ma, va)
        else:
            kab = kba = float("nan")
        dm = float(jnp.max(jnp.abs(ma - mb)))
        dsd = float(jnp.max(jnp.abs(ma - mb) / jnp.sqrt(jnp.maximum(vb, 1e-300))))
        dv = float(jnp.max(jnp.abs(va - vb) / jnp.maximum(jnp.abs(vb), 1e-300)))
        lat[n] = {"family": f"{fa} vs {fb}", "kl_ab": kab, "kl_ba": kba,
                  "max_abs_mean_diff": dm, "max_mean_diff_sd": dsd, "max_rel_var_diff": dv}
        if np.isfinite(kab) and np.isfinite(kba):
            ok &= bool(max(kab, kba) < kl_tol)
        else:
            ok &= bool(dsd < mean_tol and dv < var_rtol)
        if mean_tol_sd is not None:
            ok &= bool(dsd < mean_tol_sd)
    ev = lambda f: float(f.log_evidence if isinstance(f, LaplaceResult) else f.elbo)  # noqa: E731
    ea, eb = ev(a), ev(b)
    gap = abs(ea - eb) / max(abs(ea), 1.0)
    ok &= bool(np.isfinite(gap) and gap < elbo_tol)
    return Comparison(bool(ok), ea, eb, gap, lat, elbo_tol, kl_tol, tuple(names), mean_tol_sd)
