"""Agreement report between two fits of the same model (e.g. CAVI and gradient)."""

from __future__ import annotations

import dataclasses

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
            names=("cavi", "gradient")) -> Comparison:
    """Compare two fit results latent by latent.

    KL divergences are summed over a latent's elements; mean differences are absolute
    and in units of ``b``'s posterior standard deviation; variance differences are
    relative to ``b``'s variance. ``agree`` needs the relative ELBO gap below
    ``elbo_tol``, both KLs below ``kl_tol`` and, if given, every mean within
    ``mean_tol_sd`` standard deviations.
    """
    lat = {}
    ok = True
    for n, qa in a.posterior.items():
        if n not in b.posterior:
            raise ValueError(f"latent '{n}' is in the first fit but not the second")
        qb = b.posterior[n]
        if type(qa) is not type(qb):
            raise ValueError(f"latent '{n}': families differ ({type(qa).__name__} vs "
                             f"{type(qb).__name__}); compare fits of the same variational family")
        kab = float(jnp.sum(qa.kl(qb)))
        kba = float(jnp.sum(qb.kl(qa)))
        dm = float(jnp.max(jnp.abs(jnp.asarray(qa.mean(), float) - jnp.asarray(qb.mean(), float))))
        va, vb = jnp.asarray(qa.variance(), float), jnp.asarray(qb.variance(), float)
        dv = float(jnp.max(jnp.abs(va - vb) / jnp.maximum(jnp.abs(vb), 1e-300)))
        dsd = float(jnp.max(jnp.abs(jnp.asarray(qa.mean(), float) - jnp.asarray(qb.mean(), float))
                            / jnp.sqrt(jnp.maximum(vb, 1e-300))))
        lat[n] = {"family": type(qa).__name__, "kl_ab": kab, "kl_ba": kba,
                  "max_abs_mean_diff": dm, "max_mean_diff_sd": dsd, "max_rel_var_diff": dv}
        ok &= bool(np.isfinite(kab) and np.isfinite(kba) and max(kab, kba) < kl_tol)
        if mean_tol_sd is not None:
            ok &= bool(dsd < mean_tol_sd)
    ea, eb = float(a.elbo), float(b.elbo)
    gap = abs(ea - eb) / max(abs(ea), 1.0)
    ok &= bool(gap < elbo_tol)
    return Comparison(bool(ok), ea, eb, gap, lat, elbo_tol, kl_tol, tuple(names), mean_tol_sd)
