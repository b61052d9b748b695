"""Convergence diagnostics of MCMC draws (NumPy; no ArviZ needed).

For ``M`` chains of ``N`` draws of a scalar, with within-chain variance ``W``, between-chain
variance ``B`` and ``var+ = (N - 1)/N W + B/N`` (Gelman et al., BDA3 ch. 11):

    R-hat = sqrt(var+ / W)                     (on the chains split in halves),
    rho_t = 1 - (W - mean_m acov_m(t)) / var+,
    ESS   = M N / (-1 + 2 sum_k P_k),  P_k = rho_{2k} + rho_{2k+1}

with Geyer's initial positive and monotone sequence estimator (the sum stops at the first
negative ``P_k``; ``P_k`` made non-increasing). These are ArviZ's ``rhat(method="split")``
and ``ess(method="mean")`` (without rank normalization).
"""

from __future__ import annotations

import numpy as np


def _split(x):
    """``[chains, draws, ...]`` -> ``[2 chains, draws // 2, ...]`` (a middle draw of an odd
    count is dropped)."""
    n = x.shape[1] // 2
    return np.concatenate([x[:, :n], x[:, x.shape[1] - n:]], axis=0)


def _autocov(x):
    """Autocovariance over axis 1 (biased, by FFT) of ``[chains, draws, ...]``."""
    n = x.shape[1]
    c = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(c, size, axis=1)
    ac = np.fft.irfft(f * np.conj(f), size, axis=1)[:, :n]
    return ac / n


def rhat(draws):
    """Split R-hat per element of ``draws`` (``[chains, draws, ...]``); NaN for fewer
    than 4 draws per chain or an element that never moves."""
    x = np.asarray(draws, np.float64)
    if x.shape[1] < 4:
        return np.full(x.shape[2:], np.nan)
    x = _split(x)
    n = x.shape[1]
    w = x.var(axis=1, ddof=1).mean(axis=0)
    b = n * x.mean(axis=1).var(axis=0, ddof=1)
    var_plus = (n - 1) / n * w + b / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_plus / w)


def ess(draws):
    """Effective sample size per element of ``draws`` (``[chains, draws, ...]``), from
    the chains split in halves; NaN for fewer than 4 draws per chain or an element that
    never moves."""
    x = np.asarray(draws, np.float64)
    if x.shape[1] < 4:
        return np.full(x.shape[2:], np.nan)
    x = _split(x)
    m, n = x.shape[:2]
    acov = _autocov(x)
    w = (acov[:, 0] * n / (n - 1)).mean(axis=0)
    var_plus = w * (n - 1) / n
    if m > 1:
        var_plus = var_plus + x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (w - acov.mean(axis=0)) / var_plus  # [n, ...]
    rho[0] = 1.0
    pairs = n // 2
    p = rho[0:2 * pairs:2] + rho[1:2 * pairs:2]  # [pairs, ...]
    # initial positive sequence, then monotone
    positive = np.cumprod(p > 0, axis=0).astype(bool)
    p = np.where(positive, p, 0.0)
    p = np.minimum.accumulate(np.where(positive, p, np.inf), axis=0)
    p = np.where(positive, p, 0.0)
    tau = -1.0 + 2.0 * p.sum(axis=0)
    tau = np.maximum(tau, 1.0 / np.log10(m * n))  # antithetic chains: as ArviZ, a bound
    with np.errstate(divide="ignore", invalid="ignore"):
        out = m * n / tau
    return np.where(np.isfinite(w) & (w > 0), out, np.nan)
