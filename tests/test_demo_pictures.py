"""The demo's two lecture pictures: their numbers against closed forms, the checks that the
demo prints catching wrong numbers, and the figures written."""

import math
import sys

import jax
import numpy as np
import pytest

from vijax import demo, demo_em, demo_laplace


@pytest.fixture(scope="module")
def sp():
    return demo_laplace.skewed_posterior(seed=0)


@pytest.fixture(scope="module")
def eb():
    return demo_em.em_bound(seed=0)


# ---- EM's lower bound ------------------------------------------------------------------

def _responsibilities(w, x):
    """p(c_i = 1 | x_i, w) in plain numpy."""
    l1 = np.log(w) - 0.5 * (x - demo_em.MU1) ** 2
    l0 = np.log1p(-w) - 0.5 * (x - demo_em.MU0) ** 2
    return 1.0 / (1.0 + np.exp(l0 - l1))


def _bound_closed_form(w, r, x):
    """sum_i r_i log(w N1_i) + (1 - r_i) log((1 - w) N0_i) + H(r_i), in numpy."""
    c = -0.5 * np.log(2 * np.pi)
    n1, n0 = c - 0.5 * (x - demo_em.MU1) ** 2, c - 0.5 * (x - demo_em.MU0) ** 2
    h = -np.sum(r * np.log(r) + (1 - r) * np.log1p(-r))
    w = np.asarray(w)[..., None]
    return np.sum(r * (np.log(w) + n1) + (1 - r) * (np.log1p(-w) + n0), -1) + h


def test_em_bound_touches_lies_below_and_peaks_at_next_iterate(eb):
    grid = demo_em.default_grid()
    ll = demo_em.log_likelihood(grid, eb.x)
    assert len(eb.bounds) == 3 and abs(eb.iterates[0] - demo_em.START) <= 1e-15
    for bd in eb.bounds:
        # the library's E-step is the exact conditional p(c | x, w_n)
        np.testing.assert_allclose(bd.r, _responsibilities(bd.w, eb.x), rtol=0, atol=1e-12)
        b = bd(grid, eb.x)
        np.testing.assert_allclose(b, _bound_closed_form(grid, bd.r, eb.x), rtol=1e-13)
        lw = float(demo_em.log_likelihood(bd.w, eb.x))
        assert abs(float(bd(np.array([bd.w]), eb.x)[0]) - lw) <= 1e-10
        assert abs(bd.log_likelihood - lw) <= 1e-10  # vj.em's trace is l(w_n)
        assert np.all(b <= ll + 1e-10)
        # the gap is KL(q_n || p(c | x, w)) > 0 away from w_n
        far = np.abs(grid - bd.w) > 0.05
        assert np.all(b[far] < ll[far] - 1e-6)
        # w_{n+1}: the bound's closed-form maximizer mean(r), and its maximum on the grid
        assert abs(bd.w_next - np.mean(bd.r)) <= 1e-12
        assert abs(grid[np.argmax(b)] - bd.w_next) <= grid[1] - grid[0]
    lls = demo_em.log_likelihood(eb.iterates, eb.x)
    assert np.all(np.diff(lls) > 0.5)  # the steps from w_0 = 0.1 are large
    assert np.all(np.diff(eb.iterates) > 0) and eb.iterates[-1] < 1.0
    assert demo_em.problems(eb) == []


def test_em_problems_catch_wrong_bounds(eb):
    bd = eb.bounds[1]
    stale = bd._replace(r=eb.bounds[0].r, entropy=eb.bounds[0].entropy)  # q from w_0
    wrong_next = bd._replace(w_next=bd.w_next + 1e-3)
    shifted = bd._replace(entropy=bd.entropy + 1e-6)  # above l at w_n
    msgs = demo_em.problems(eb._replace(bounds=(eb.bounds[0], stale, eb.bounds[2])))
    assert any("misses l at w_n" in m for m in msgs)
    msgs = demo_em.problems(eb._replace(bounds=(eb.bounds[0], wrong_next, eb.bounds[2])))
    assert any("not the bound's argmax" in m for m in msgs)
    msgs = demo_em.problems(eb._replace(bounds=(eb.bounds[0], shifted, eb.bounds[2])))
    assert any("exceeds l" in m for m in msgs)
    msgs = demo_em.problems(eb._replace(iterates=eb.iterates[::-1]))
    assert any("does not increase" in m for m in msgs)


def test_em_bound_float32():
    """float32: the same picture, to float32 rounding of a 40-term sum."""
    with jax.enable_x64(False):
        eb32 = demo_em.em_bound(seed=0)
        assert eb32.result.params["w"].dtype == np.float32
    eps = float(np.finfo(np.float32).eps)
    grid = demo_em.default_grid()
    ll = demo_em.log_likelihood(grid, eb32.x)
    for bd in eb32.bounds:
        lw = float(demo_em.log_likelihood(bd.w, eb32.x))
        tol = 64 * eps * eb32.x.size * max(1.0, abs(lw) / eb32.x.size)
        assert abs(float(bd(np.array([bd.w]), eb32.x)[0]) - lw) <= tol
        assert np.all(bd(grid, eb32.x) <= ll + tol)
        assert abs(bd.w_next - np.mean(bd.r)) <= 16 * eps
    lls = demo_em.log_likelihood(eb32.iterates, eb32.x)
    assert np.all(np.diff(lls) > 0)


# ---- the skewed posterior ---------------------------------------------------------------

def test_exact_density_integrates_to_one_and_is_the_normalized_log_joint(sp):
    a, b = sp.shape, sp.rate
    assert (a, b) == (3.0 + sum(demo_laplace.COUNTS), 2.0 + len(demo_laplace.COUNTS))
    lam, p = sp.lam, sp.densities["exact"]
    assert abs(demo_laplace.trapezoid(p, lam) - 1.0) <= 1e-8
    # the model's own log joint, normalized by quadrature, is the same density
    from vijax.models.conjugate_pairs import gamma_poisson
    lj = gamma_poisson().model.log_joint
    x = np.asarray(demo_laplace.COUNTS)
    vals = np.asarray(jax.jit(jax.vmap(lambda v: lj({"lam": v}, x)))(lam[1::8]))
    dens = np.exp(vals - vals.max())
    dens /= demo_laplace.trapezoid(dens, lam[1::8])
    np.testing.assert_allclose(dens, p[1::8], rtol=0, atol=1e-5)
    rows = {r.name: r for r in sp.rows}
    ex = rows["exact"]
    assert abs(ex.mean - demo_laplace.trapezoid(lam * p, lam)) <= 1e-8
    assert abs(ex.mode - lam[np.argmax(p)]) <= lam[1] - lam[0]
    assert abs(ex.skewness - 2 / math.sqrt(a)) <= 1e-12


def test_cavi_is_exact_and_laplace_sits_at_the_exact_modes(sp):
    a, b = sp.shape, sp.rate
    rows = {r.name: r for r in sp.rows}
    # one conjugate block: the CAVI factor is the exact Gamma(a, b)
    assert abs(float(sp.cavi.concentration) - a) <= 1e-10 * a
    assert abs(float(sp.cavi.rate) - b) <= 1e-10 * b
    assert abs(rows["CAVI"].kl) <= 1e-9
    # Laplace on lam: mode (a - 1) / b, variance 1 / (-l'') = (a - 1) / b^2
    m, s = sp.laplace_lam_params
    assert abs(m - (a - 1) / b) <= 1e-8 and abs(rows["Laplace, lam"].mode - (a - 1) / b) <= 1e-8
    assert abs(s * s - (a - 1) / b ** 2) <= 1e-7
    assert rows["Laplace, lam"].kl == math.inf
    # Laplace on u = log lam: log p(u) = a u - b e^u + const, mode log(a / b), variance 1/a
    mu, su = sp.laplace_log_params
    assert abs(mu - math.log(a / b)) <= 1e-8 and abs(su * su - 1 / a) <= 1e-7
    # its KL(q || p) by quadrature against the closed form
    kl = (-0.5 * math.log(2 * math.pi * math.e * su * su) - a * mu
          + b * math.exp(mu + su * su / 2) - a * math.log(b) + math.lgamma(a))
    assert abs(rows["Laplace, log lam"].kl - kl) <= 1e-9 and kl > 1e-3
    # its density on lam: N(log lam; mu, su^2) / lam, with the mass of [0, lam_max]
    lam, q = sp.lam, sp.densities["Laplace, log lam"]
    pos = lam > 0
    ref = np.exp(-0.5 * ((np.log(lam[pos]) - mu) / su) ** 2) / (lam[pos] * su
                                                                 * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(q[pos], ref, rtol=1e-12, atol=1e-300)
    mass = 0.5 * math.erfc(-(math.log(lam[-1]) - mu) / (su * math.sqrt(2)))
    assert abs(demo_laplace.trapezoid(q, lam) - mass) <= 1e-8
    # its table row (log-normal moments) against quadrature on a wide grid of u
    u = np.linspace(mu - 14 * su, mu + 14 * su, 8001)
    qu = np.exp(-0.5 * ((u - mu) / su) ** 2) / (su * math.sqrt(2 * math.pi))
    r = rows["Laplace, log lam"]
    mean = demo_laplace.trapezoid(np.exp(u) * qu, u)
    assert abs(r.mean - mean) <= 1e-10
    assert abs(r.sd ** 2 - demo_laplace.trapezoid((np.exp(u) - mean) ** 2 * qu, u)) <= 1e-10
    skew = demo_laplace.trapezoid((np.exp(u) - mean) ** 3 * qu, u) / r.sd ** 3
    assert abs(r.skewness - skew) <= 1e-8
    assert abs(r.mode - lam[np.argmax(q)]) <= lam[1] - lam[0]
    assert demo_laplace.problems(sp) == []


def test_gibbs_draws_match_the_exact_posterior(sp):
    a, b = sp.shape, sp.rate
    d = sp.draws.ravel()
    assert d.size == 8000 and np.all(d > 0)
    # iid exact draws (one block): z-scores of the mean and the variance under 5
    assert abs(d.mean() - a / b) <= 5 * d.std() / math.sqrt(d.size)
    var = a / b ** 2
    se_var = math.sqrt((np.mean((d - a / b) ** 4) - var ** 2) / d.size)
    assert abs(d.var() - var) <= 5 * se_var
    row = {r.name: r for r in sp.rows}["Gibbs"]
    assert abs(row.skewness - 2 / math.sqrt(a)) <= 0.25


def test_skewed_problems_catch_wrong_fits(sp):
    shifted = sp._replace(draws=sp.draws + 0.05)
    assert any("Gibbs mean" in m for m in demo_laplace.problems(shifted))
    from vijax.families import Gamma
    wrong = sp._replace(cavi=Gamma.from_shape_rate(sp.shape + 1e-6, sp.rate))
    assert any("CAVI factor" in m for m in demo_laplace.problems(wrong))
    swapped = sp._replace(laplace_lam=sp.laplace_log)
    assert any("Laplace mode in lam" in m for m in demo_laplace.problems(swapped))


def test_bad_arguments_are_refused_by_name():
    from vijax.errors import DataError, InvalidParameterError
    with pytest.raises(InvalidParameterError, match="start"):
        demo_em.em_bound(start=1.0)
    with pytest.raises(InvalidParameterError, match="num_bounds"):
        demo_em.em_bound(num_bounds=0)
    with pytest.raises(DataError, match="counts"):
        demo_laplace.skewed_posterior(counts=(1, -2))
    with pytest.raises(DataError, match="counts"):
        demo_laplace.skewed_posterior(counts=(0.5, 1))
    with pytest.raises(InvalidParameterError, match="num_draws"):
        demo_laplace.skewed_posterior(num_draws=1)


# ---- figures ----------------------------------------------------------------------------

def test_figures_are_written(sp, eb, tmp_path):
    pytest.importorskip("matplotlib")
    from vijax import plots_lecture
    paths = [plots_lecture.plot_laplace_comparison(tmp_path, sp),
             plots_lecture.plot_em_bound(tmp_path / "sub", eb)]
    for p in paths:
        assert p.exists() and p.stat().st_size > 10_000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_skipped_without_matplotlib(sp, eb, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert demo.figures(tmp_path / "figs", sp, eb) == []
    assert "figures skipped: matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "figs").exists()
    assert demo.figures("", sp, eb) == []
