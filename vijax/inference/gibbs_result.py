"""The result of :func:`vijax.gibbs`: draws per latent, the log joint per draw, and
their diagnostics (split R-hat, ESS) with or without ArviZ."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vijax.inference import gibbs_diagnostics as diag


@dataclasses.dataclass
class GibbsResult:
    """Draws of a blocked Gibbs sampler.

    Attributes:
        draws: ``{latent: array}`` of shape ``[chains, samples] + value shape``, values in
            the latents' supports (integer labels for discrete supports).
        log_joint: ``log p(x, z)`` at each draw, ``[chains, samples]``.
        families: latent -> the complete conditional's family name.
        order: the update order of one sweep.
        num_warmup, thin: sweeps discarded at the start, and sweeps per kept draw.
        seconds: wall time of the sampling call (compile included on the first call).
    """

    draws: dict
    log_joint: Any
    families: dict
    order: tuple
    num_warmup: int
    thin: int
    seconds: float = float("nan")

    @property
    def num_chains(self) -> int:
        return int(np.shape(self.log_joint)[0])

    @property
    def num_samples(self) -> int:
        return int(np.shape(self.log_joint)[1])

    def _pooled(self, name):
        x = np.asarray(self.draws[name], np.float64)
        return x.reshape((-1,) + x.shape[2:])

    def mean(self) -> dict:
        """Posterior mean per latent over all chains and draws."""
        return {n: self._pooled(n).mean(axis=0) for n in self.draws}

    def variance(self) -> dict:
        """Posterior variance per latent (elementwise) over all chains and draws."""
        return {n: self._pooled(n).var(axis=0, ddof=1) for n in self.draws}

    def std(self) -> dict:
        return {n: np.sqrt(v) for n, v in self.variance().items()}

    def ess(self) -> dict:
        """Effective sample size per latent element (split chains, Geyer's initial
        monotone sequence: :func:`vijax.inference.gibbs_diagnostics.ess`)."""
        return {n: diag.ess(self.draws[n]) for n in self.draws}

    def rhat(self) -> dict:
        """Split R-hat per latent element (:func:`vijax.inference.gibbs_diagnostics.rhat`)."""
        return {n: diag.rhat(self.draws[n]) for n in self.draws}

    def to_arviz(self):
        """An ``arviz.InferenceData`` with the draws as its ``posterior`` group (dims
        ``(chain, draw, <latent>_dim_0, ...)``) and the log joint in ``sample_stats``
        (``lp``).

        Raises:
            ImportError: arviz is not installed (``pip install arviz``).
        """
        from vijax.results.arviz_export import _import_arviz
        az = _import_arviz()
        groups = {"posterior": {n: np.asarray(v) for n, v in self.draws.items()},
                  "sample_stats": {"lp": np.asarray(self.log_joint)}}
        try:
            return az.from_dict(**groups)
        except TypeError:  # arviz >= 1.0 takes one dict of groups
            return az.from_dict(groups)

    def summary(self) -> str:
        """One line per latent: mean, sd, ESS (minimum over elements) and the largest
        split R-hat."""
        means, sds, esss, rhats = self.mean(), self.std(), self.ess(), self.rhat()
        rows = [f"{'latent':<10} {'family':<20} {'shape':<10} {'mean':>11} {'sd':>10} "
                f"{'min ESS':>9} {'max R-hat':>9}"]
        for n in self.draws:
            m, s = np.ravel(means[n]), np.ravel(sds[n])
            e, r = np.ravel(esss[n]), np.ravel(rhats[n])
            shape = str(tuple(np.shape(self.draws[n])[2:]))
            one = m.size == 1
            mean = f"{m[0]:>11.4g}" if one else f"{'[' + str(m.size) + ']':>11}"
            sd = f"{s[0]:>10.4g}" if one else f"{'':>10}"
            emin = np.nanmin(e) if np.any(np.isfinite(e)) else np.nan
            rmax = np.nanmax(r) if np.any(np.isfinite(r)) else np.nan
            rows.append(f"{n:<10} {self.families[n]:<20} {shape:<10} {mean} {sd} "
                        f"{emin:>9.0f} {rmax:>9.3f}")
        return "\n".join(rows)

    def __str__(self):
        head = (f"GibbsResult: {self.num_chains} chain(s) x {self.num_samples} draws "
                f"(warmup {self.num_warmup}, thin {self.thin}); order {list(self.order)}; "
                f"mean log joint {float(np.mean(self.log_joint)):.6g}")
        return head + "\n" + self.summary()

    __repr__ = __str__
