"""The MarkovChain family against brute-force enumeration of all K^T paths (float64).

For small T and K every quantity of the chain is a finite sum over paths: the
log-normalizer is a log-sum-exp of path scores, the mean parameters are path-weighted
one-hot statistics, the entropy is -sum p log p; the sampler's path frequencies must
match the path probabilities within Monte Carlo error, and Viterbi must return the
most probable path."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from vijax.families import MarkovChain, registry

T, K = 4, 3


@pytest.fixture(scope="module")
def case():
    r = np.random.default_rng(7)
    nat = {"unary": r.normal(size=(2, T, K)) * 1.5, "pair": r.normal(size=(2, T - 1, K, K))}
    paths = np.array(list(itertools.product(range(K), repeat=T)))  # [K^T, T]
    oh = np.eye(K)[paths]
    score = (np.einsum("ptk,btk->bp", oh, nat["unary"])
             + np.einsum("ptk,ptl,btkl->bp", oh[:, :-1], oh[:, 1:], nat["pair"]))
    log_z = logsumexp(score, -1)
    prob = np.exp(score - log_z[:, None])  # [batch, paths]
    uni = np.einsum("bp,ptk->btk", prob, oh)
    pw = np.einsum("bp,ptk,ptl->btkl", prob, oh[:, :-1], oh[:, 1:])
    q = MarkovChain({k: jnp.asarray(v) for k, v in nat.items()})
    got = _everything(q, jnp.asarray(paths))
    return dict(nat=nat, paths=paths, log_z=log_z, prob=prob, uni=uni, pw=pw, q=q, got=got)


@jax.jit
def _everything(q, paths):
    """Every quantity under test in one compiled program (eager scans compile one by one)."""
    nat = q.natural
    mu2, a = MarkovChain.mean_and_log_normalizer(nat)
    back = MarkovChain.natural_from_mean(mu2)
    other = MarkovChain({"unary": nat["unary"][::-1], "pair": nat["pair"][::-1]})
    return {"A": MarkovChain.log_normalizer(nat), "mu": MarkovChain.mean_params(nat),
            "auto": MarkovChain.mean_params_autodiff(nat), "mu2": mu2, "a": a,
            "back_A": MarkovChain.log_normalizer(back),
            "back_mu": MarkovChain.mean_params(back), "valid": MarkovChain.is_valid_mean(mu2),
            "H": q.entropy(), "lp": q.log_prob(paths[:, None, :]), "kl": q.kl(other),
            "mode": MarkovChain.mode(nat), "sample": q.sample(jax.random.key(0), (40000,))}


def test_log_normalizer_is_the_sum_over_paths(case):
    np.testing.assert_allclose(case["got"]["A"], case["log_z"], rtol=0, atol=1e-12)


def test_mean_parameters_are_the_marginals_and_grad_A(case):
    g = case["got"]
    np.testing.assert_allclose(g["mu"]["unary"], case["uni"], atol=1e-12)
    np.testing.assert_allclose(g["mu"]["pair"], case["pw"], atol=1e-12)
    np.testing.assert_allclose(g["auto"]["pair"], case["pw"], atol=1e-12)  # grad of forward
    np.testing.assert_allclose(g["auto"]["unary"], case["uni"], atol=1e-12)
    np.testing.assert_allclose(g["mu2"]["pair"], case["pw"], atol=1e-12)
    np.testing.assert_allclose(g["a"], case["log_z"], atol=1e-12)
    # the A = 0 representative built from the marginals has the same marginals
    np.testing.assert_allclose(g["back_A"], 0.0, atol=1e-12)
    np.testing.assert_allclose(g["back_mu"]["pair"], case["pw"], atol=1e-12)
    assert bool(jnp.all(g["valid"]))


def test_entropy_log_prob_and_kl_by_enumeration(case):
    g, p = case["got"], case["prob"]
    np.testing.assert_allclose(g["H"], -np.sum(p * np.log(p), -1), atol=1e-12)
    np.testing.assert_allclose(g["lp"].T, np.log(p), atol=1e-12)  # [paths, batch]
    kl = np.sum(p * (np.log(p) - np.log(p[::-1])), -1)
    np.testing.assert_allclose(g["kl"], kl, atol=1e-12)


def test_sampler_frequencies_match_path_probabilities(case):
    n = 40000
    s = np.asarray(case["got"]["sample"])  # [n, batch, T], forward filter backward sample
    assert s.shape == (n, 2, T)
    code = (s * K ** np.arange(T)[::-1]).sum(-1)
    for b in range(2):
        freq = np.bincount(code[:, b], minlength=K ** T) / n
        p = case["prob"][b]
        se = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(freq - p) <= 5 * se + 1e-4), np.max(np.abs(freq - p) / se)


def test_viterbi_is_the_most_probable_path(case):
    path, valid = case["got"]["mode"]
    np.testing.assert_array_equal(path, case["paths"][case["prob"].argmax(-1)])
    assert bool(jnp.all(valid))


@jax.jit
def _mu_a_h(q):
    mu, a = MarkovChain.mean_and_log_normalizer(q.natural)
    return mu, a, q.entropy()


def test_stable_for_large_potentials_and_float32():
    r = np.random.default_rng(1)
    nat = {"unary": 300.0 * r.normal(size=(6, K)), "pair": 300.0 * r.normal(size=(5, K, K))}
    with jax.enable_x64(False):
        q32 = MarkovChain({k: jnp.asarray(v, jnp.float32) for k, v in nat.items()})
        mu32, a32, h32 = _mu_a_h(q32)
        assert a32.dtype == jnp.float32
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in mu32.values())
        assert bool(jnp.isfinite(h32))
    mu, a, _ = _mu_a_h(MarkovChain({k: jnp.asarray(v) for k, v in nat.items()}))
    eps = np.finfo(np.float32).eps
    assert abs(float(a32) - float(a)) <= 16 * eps * (abs(float(a)) + 300.0 * 6)
    np.testing.assert_allclose(mu32["unary"], mu["unary"], atol=1e-4)


def test_point_stats_starts_and_registry():
    from vijax.supports import categorical
    sup = categorical(K, shape=(2, 5))
    z = jnp.array([[0, 1, 1, 2, 0], [2, 2, 0, 1, 1]])
    st = MarkovChain.point_stats(z, sup)
    assert st["unary"].shape == MarkovChain.latent_stat_shape(sup, "unary") == (2, 5, K)
    assert st["pair"].shape == MarkovChain.latent_stat_shape(sup, "pair") == (2, 4, K, K)
    assert float(st["pair"][1, 0, 2, 2]) == 1.0 and float(st["pair"][1].sum()) == 4.0
    info = type("Info", (), {"support": sup})()
    q = MarkovChain.default_start(jax.random.key(0), info, jnp.float64)
    assert q.natural["pair"].shape == (2, 4, K, K)
    p = jax.nn.softmax(q.natural["unary"], -1)  # flat transitions: independent steps
    np.testing.assert_allclose(MarkovChain.from_user_value(p).natural["unary"], jnp.log(p),
                               atol=1e-12)
    assert registry.default_family("categorical").__name__ == "Categorical"
    assert registry.chain_family("categorical") is MarkovChain
    assert registry.select("categorical", {("onehot", 1.0)}).__name__ == "Categorical"
