"""The GaussMarkov family against a dense Gaussian on the same assembled precision
(numpy, float64): log-normalizer, mean parameters, entropy, log density, the
mean <-> natural and unconstrained round trips, the sampler's moments (Monte Carlo
standard errors), float32 accuracy, and the dense factor's memory check."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.errors import ModelSpecError
from vijax.families import GaussMarkov, registry
from vijax.families.gauss_markov import ChainLayout
from vijax.families.mvn import check_dense_size

#: D = 1: the scalar recursions (T = 6: two steps per loop iteration); D = 3: the unrolled
#: elementwise blocks; D = 5: the LAPACK path
CASES = [(1, 1, ()), (6, 1, (2,)), (4, 3, (2,)), (3, 5, ())]
N_DRAWS = 20000


def _blocks(r, T, D, batch):
    a = r.normal(size=batch + (T, D, D))
    jd = a @ np.swapaxes(a, -1, -2) + 2.0 * np.eye(D)
    jo = 0.6 * r.normal(size=batch + (T - 1, D, D))
    return r.normal(size=batch + (T, D)), jd, jo


def _dense(jd, jo):
    """The assembled ``[..., T D, T D]`` precision (numpy)."""
    T, D = jd.shape[-3], jd.shape[-1]
    lam = np.zeros(jd.shape[:-3] + (T, D, T, D))
    for t in range(T):
        lam[..., t, :, t, :] = jd[..., t, :, :]
    for t in range(T - 1):
        lam[..., t, :, t + 1, :] = jo[..., t, :, :]
        lam[..., t + 1, :, t, :] = np.swapaxes(jo[..., t, :, :], -1, -2)
    return lam.reshape(jd.shape[:-3] + (T * D, T * D))


@jax.jit
def _everything(q, x):
    nat = q.natural
    mu, a = GaussMarkov.mean_and_log_normalizer(nat)
    u = q.to_unconstrained()
    fmu, fh, _ = GaussMarkov.factor_from_unconstrained(u)
    return {"A": a, "mu": mu, "auto": GaussMarkov.mean_params_autodiff(nat),
            "H": q.entropy(), "back": GaussMarkov.natural_from_mean(mu),
            "uback": GaussMarkov.from_unconstrained(u).natural, "fmu": fmu, "fH": fh,
            "lp": q.log_prob(x), "mode": GaussMarkov.mode(nat), "var": q.variance(),
            "draws": q.sample(jax.random.key(1), (N_DRAWS,))}


@pytest.fixture(scope="module", params=CASES, ids=[f"T{c[0]}D{c[1]}b{len(c[2])}" for c in CASES])
def case(request):
    T, D, batch = request.param
    r = np.random.default_rng(T * 10 + D)
    m, jd, jo = _blocks(r, T, D, batch)
    lam = _dense(jd, jo)
    cov = np.linalg.inv(lam)
    mf = m.reshape(batch + (T * D,))
    h = np.einsum("...ij,...j->...i", lam, mf)
    x = r.normal(size=(3,) + batch + (T, D))
    q = GaussMarkov({"x": jnp.asarray(h.reshape(m.shape)), "xxT": jnp.asarray(-0.5 * jd),
                     "pair": jnp.asarray(-jo)})  # no eager validation (compiles op by op)
    return dict(T=T, D=D, batch=batch, m=m, lam=lam, cov=cov, h=h, x=x, q=q,
                got=_everything(q, jnp.asarray(x)))


def test_log_normalizer_and_entropy_equal_the_dense_gaussians(case):
    n = case["T"] * case["D"]
    _, logdet = np.linalg.slogdet(case["lam"])
    h, cov = case["h"], case["cov"]
    a = 0.5 * np.einsum("...i,...ij,...j->...", h, cov, h) - 0.5 * logdet
    np.testing.assert_allclose(case["got"]["A"], a, rtol=1e-10, atol=1e-10)
    ent = 0.5 * n * (1.0 + np.log(2 * np.pi)) - 0.5 * logdet
    np.testing.assert_allclose(case["got"]["H"], ent, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(case["got"]["fH"], np.sum(ent), rtol=1e-10, atol=1e-10)


def test_mean_parameters_are_the_dense_moments_and_grad_A(case):
    T, D, m = case["T"], case["D"], case["m"]
    cov = case["cov"].reshape(case["batch"] + (T, D, T, D))
    steps = np.arange(T)
    xxT = cov[..., steps, :, steps, :]  # [T, ..., D, D]
    xxT = np.moveaxis(xxT, 0, -3) + m[..., :, None] * m[..., None, :]
    pair = np.moveaxis(cov[..., steps[:-1], :, steps[1:], :], 0, -3) + (
        m[..., :-1, :, None] * m[..., 1:, None, :])
    want = {"x": m, "xxT": xxT, "pair": pair}
    for src in ("mu", "auto", "fmu"):
        for k, v in want.items():
            np.testing.assert_allclose(case["got"][src][k], v, rtol=1e-10, atol=1e-10,
                                       err_msg=f"{src}[{k}]")
    np.testing.assert_allclose(case["got"]["mode"][0], m, atol=1e-10)
    assert bool(np.all(case["got"]["mode"][1]))


def test_round_trips_and_log_density(case):
    nat = case["q"].natural
    for src in ("back", "uback"):
        for k in nat:
            np.testing.assert_allclose(case["got"][src][k], nat[k], rtol=1e-9, atol=1e-9,
                                       err_msg=f"{src}[{k}]")
    x = case["x"].reshape((3,) + case["batch"] + (-1,))
    d = x - case["m"].reshape(case["batch"] + (-1,))
    _, logdet = np.linalg.slogdet(case["lam"])
    n = x.shape[-1]
    lp = (-0.5 * np.einsum("s...i,...ij,s...j->s...", d, case["lam"], d) + 0.5 * logdet
          - 0.5 * n * np.log(2 * np.pi))
    np.testing.assert_allclose(case["got"]["lp"], lp, rtol=1e-10, atol=1e-10)
    assert bool(np.all(case["got"]["mode"][1]))  # valid


def test_sampler_moments_within_monte_carlo_error(case):
    x = np.asarray(case["got"]["draws"])
    mu = case["got"]["mu"]
    np.testing.assert_allclose(case["got"]["var"], np.diagonal(mu["xxT"], 0, -2, -1)
                               - mu["x"] ** 2, atol=1e-12)
    st = {"x": x, "xxT": x[..., :, None] * x[..., None, :],
          "pair": x[..., :-1, :, None] * x[..., 1:, None, :]}
    for k, v in st.items():
        if not v[0].size:  # T = 1: no pairs
            continue
        se = v.std(0) / np.sqrt(N_DRAWS)
        z = np.abs(v.mean(0) - np.asarray(mu[k])) / np.maximum(se, 1e-300)
        assert z.max() < 5.0, (k, z.max())


def test_invalid_precision_is_reported_not_nan():
    jd = np.ones((3, 1, 1))
    jo = -2.0 * np.ones((2, 1, 1))  # [[1,-2,0],[-2,1,-2],[0,-2,1]] is indefinite
    nat = {"x": jnp.zeros((3, 1)), "xxT": jnp.asarray(-0.5 * jd), "pair": jnp.asarray(-jo)}
    with pytest.raises(ValueError, match="natural"):
        GaussMarkov.from_natural(nat)


@pytest.mark.parametrize("T,D", [(50, 2), (200, 1)])  # D = 1, T = 200: 4 steps per iteration
def test_float32_matches_the_dense_float64_answer(T, D):
    r = np.random.default_rng(5)
    m, jd, jo = _blocks(r, T, D, ())
    lam = _dense(jd, jo)
    cov = np.linalg.inv(lam)
    h = lam @ m.ravel()
    with jax.enable_x64(False):
        nat = {"x": jnp.asarray(h.reshape(T, D), jnp.float32),
               "xxT": jnp.asarray(-0.5 * jd, jnp.float32), "pair": jnp.asarray(-jo, jnp.float32)}
        mu, a = jax.jit(GaussMarkov.mean_and_log_normalizer)(nat)
        assert a.dtype == jnp.float32 and mu["pair"].dtype == jnp.float32
    eps = float(np.finfo(np.float32).eps)
    cond = np.linalg.cond(lam)
    a_ref = 0.5 * h @ cov @ h - 0.5 * np.linalg.slogdet(lam)[1]
    np.testing.assert_allclose(a, a_ref, rtol=10 * T * D * eps)
    var = np.diagonal(cov).reshape(T, D)
    np.testing.assert_allclose(mu["x"], m, atol=10 * cond * eps * np.abs(m).max())
    np.testing.assert_allclose(np.diagonal(mu["xxT"], 0, -2, -1), var + m ** 2,
                               atol=10 * cond * eps * np.max(var + m ** 2))


def _tridiagonal(jd, jo):
    return {"x": jnp.zeros(jd.shape[:-1]), "xxT": -0.5 * jnp.asarray(jd),
            "pair": -jnp.asarray(jo)}


def test_validity_without_and_with_the_pivot_scan():
    """Diagonally dominant (no scan), positive definite but not dominant (pivots), and
    indefinite precisions in one batch, D = 1 and D = 2, against numpy's eigenvalues."""
    for D in (1, 2):
        r = np.random.default_rng(D)
        eye = np.eye(D)
        jd = np.stack([3.0 * eye, eye, eye])[:, None].repeat(5, 1)  # [3 chains, T = 5]
        jo = np.stack([0.5 * eye, 0.52 * eye, 2.0 * eye])[:, None].repeat(4, 1)
        jo = jo + 0.01 * r.normal(size=jo.shape)
        want = np.linalg.eigvalsh(_dense(jd, jo)).min(-1) > 0
        assert want.tolist() == [True, True, False]
        valid = jax.jit(GaussMarkov.is_valid_natural)
        np.testing.assert_array_equal(valid(_tridiagonal(jd, jo)), want)
        one = {k: v[1] for k, v in _tridiagonal(jd, jo).items()}  # PD, not dominant alone
        assert bool(valid(one))
        for bad in (np.inf, np.nan):  # a non-finite h or J_tt is invalid on either path
            for dom in (0, 1):
                nat = {k: v[dom] for k, v in _tridiagonal(jd, jo).items()}
                assert not bool(valid({**nat, "x": nat["x"].at[2, 0].set(bad)}))
                assert not bool(valid({**nat, "xxT": nat["xxT"].at[2, 0, 0].set(-bad)}))


def test_layout_with_state_axes_before_time():
    lay = ChainLayout((3, 7, 2), time_axis=1, state_axes=(0,))  # (D, T, batch)
    v = jnp.arange(42.0).reshape(3, 7, 2)
    f = lay.to_family(v)
    assert f.shape == (2, 7, 3) and float(f[1, 4, 2]) == float(v[2, 4, 1])
    np.testing.assert_array_equal(lay.to_value(f), v)
    b, t, d = lay.element_position(np.ravel_multi_index((2, 4, 1), (3, 7, 2)))
    assert (int(b), int(t), int(d)) == (1, 4, 2)


def test_dense_size_check_refuses_before_allocating():
    with pytest.raises(ModelSpecError, match=r"latent 'x'.*event of 1000000 elements"
                       r".*GiB \(64000000000000 bytes"):
        check_dense_size("x", (), 10 ** 6, jnp.float64)
    check_dense_size("x", (), 100, jnp.float64)  # small: nothing raised


def test_registered_after_the_dense_gaussian():
    names = [c.__name__ for c in registry.conjugate_families("real")]
    assert names.index("GaussMarkov") > names.index("MultivariateNormal")
    assert registry.chain_family("real") is GaussMarkov
    assert registry.select("real", {("x", 1.0)}, coupled=True).__name__ == "MultivariateNormal"
