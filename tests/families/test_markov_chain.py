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

from vijax.errors import InvalidParameterError, ModelSpecError
from vijax.families import MarkovChain, markov_chain, registry

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


# ------------------------------------------------------------------ homogeneous chains

@jax.jit
def _homogeneous_and_broadcast(nat_h, paths):
    """Every quantity of the chain with a pair potential without time axis, and of the
    same chain with that potential repeated at every step (checked by enumeration above)."""
    p = nat_h["pair"][..., None, :, :]
    nat_b = {"unary": nat_h["unary"],
             "pair": jnp.broadcast_to(p, p.shape[:-3] + (T - 1, K, K))}
    out = {}
    for name, nat in (("h", nat_h), ("b", nat_b)):
        q = MarkovChain(nat)
        mu, a = MarkovChain.mean_and_log_normalizer(nat)
        out[name] = {"mu": mu, "a": a, "A": MarkovChain.log_normalizer(nat),
                     "auto": MarkovChain.mean_params_autodiff(nat), "H": q.entropy(),
                     "lp": q.log_prob(paths[:, None, :]), "mode": MarkovChain.mode(nat)[0],
                     "pair_probs": q.pair_probs, "valid": MarkovChain.is_valid_mean(mu),
                     "sample": q.sample(jax.random.key(1), (20000,))}
    return out


def test_homogeneous_pair_potential_is_the_repeated_one_with_summed_statistic():
    """A pair potential ``[..., K, K]`` is the same chain as that potential at every step;
    its pair statistic (and mean) is the sum over steps, and that sum is ``grad A``."""
    r = np.random.default_rng(3)
    nat_h = {"unary": jnp.asarray(r.normal(size=(2, T, K))),
             "pair": jnp.asarray(r.normal(size=(2, K, K)))}
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    g = _homogeneous_and_broadcast(nat_h, jnp.asarray(paths))
    h, b = g["h"], g["b"]
    assert MarkovChain(nat_h).homogeneous and h["mu"]["pair"].shape == (2, K, K)
    for key in ("a", "A", "H", "lp", "pair_probs"):
        np.testing.assert_allclose(h[key], b[key], rtol=0, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(h["mu"]["unary"], b["mu"]["unary"], atol=1e-12)
    summed = b["mu"]["pair"].sum(-3)
    np.testing.assert_allclose(h["mu"]["pair"], summed, atol=1e-12)
    np.testing.assert_allclose(h["auto"]["pair"], summed, atol=1e-12)  # grad A
    np.testing.assert_allclose(h["auto"]["unary"], b["mu"]["unary"], atol=1e-12)
    np.testing.assert_array_equal(h["mode"], b["mode"])
    assert bool(jnp.all(h["valid"]))
    # draws: their pair counts' mean is the summed statistic's mean (5 standard errors)
    st = MarkovChain.stats(h["sample"], K, summed=True)["pair"]  # [n, 2, K, K]
    se = np.asarray(st.std(0)) / np.sqrt(st.shape[0]) + 1e-3
    assert np.all(np.abs(np.asarray(st.mean(0)) - np.asarray(summed)) <= 5 * se)
    with pytest.raises(InvalidParameterError, match="summed over time"):
        MarkovChain.natural_from_mean(h["mu"])


def test_pair_layout_is_read_from_the_full_shapes():
    """A per-step pair shared by a batch of chains ([T-1, K, K] beside unary [N, T, K])
    has the rank of a homogeneous one: it is refused (broadcast it first), not read as
    one transition per chain; broadcast, it is the per-step chain."""
    r = np.random.default_rng(4)
    n = T  # chains (the rank rule used before read the shared pair as homogeneous)
    unary = jnp.asarray(r.normal(size=(n, T, K)))
    shared = jnp.asarray(r.normal(size=(T - 1, K, K)))
    with pytest.raises(InvalidParameterError, match=r"pair has shape .*unary's\s+batch"):
        MarkovChain.log_normalizer({"unary": unary, "pair": shared})
    per_step = jnp.broadcast_to(shared, (n, T - 1, K, K))
    got = MarkovChain.log_normalizer({"unary": unary, "pair": per_step})
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    u, p = np.asarray(unary), np.asarray(shared)
    score = (u[:, np.arange(T), paths].sum(-1)
             + p[np.arange(T - 1), paths[:, :-1], paths[:, 1:]].sum(-1))
    np.testing.assert_allclose(got, logsumexp(score, -1), rtol=1e-12)
    assert not MarkovChain({"unary": unary, "pair": per_step}).homogeneous


def test_init_in_either_pair_layout():
    """``conform_natural`` (``vj.cavi(init=...)``): a homogeneous potential is repeated
    for a per-step layout; per-step potentials equal at every step become homogeneous;
    unequal ones are refused for a homogeneous fit, naming the latent."""
    p = jnp.arange(9.0).reshape(3, 3)
    q = MarkovChain.from_marginals(jnp.full((5, 3), 1.0 / 3))
    hom = MarkovChain.conform_natural(q.natural, {"unary": (5, 3), "pair": (3, 3)}, "z")
    assert hom["pair"].shape == (3, 3) and not np.any(hom["pair"])
    per = MarkovChain.conform_natural({"unary": q.natural["unary"], "pair": p},
                                      {"unary": (5, 3), "pair": (4, 3, 3)})
    np.testing.assert_array_equal(per["pair"], np.broadcast_to(p, (4, 3, 3)))
    varying = {"unary": q.natural["unary"], "pair": jnp.arange(36.0).reshape(4, 3, 3)}
    with pytest.raises(ModelSpecError, match="init for 'states'.*homogeneous"):
        MarkovChain.conform_natural(varying, {"unary": (5, 3), "pair": (3, 3)}, "states")


# ------------------------------------------------------------------ long chains

@jax.jit
def _long_chain(u, p):
    """forward_backward (the scaled pass for T >= SCALED_MIN_STEPS) and the log-space
    pass (the reference) on the same potentials."""
    return (markov_chain.forward_backward({"unary": u, "pair": p}),
            markov_chain._log_forward_backward(u, p))


@pytest.mark.parametrize("homogeneous", [True, False])
def test_scaled_pass_of_long_chains_equals_log_space(homogeneous):
    """T = SCALED_MIN_STEPS + 1: the scaled linear-space pass (messages normalized per
    step) equals the log-space one in float64, and in float32 stays within a few eps of
    float64 (rounding does not grow with T). Potentials whose range exceeds float32's
    exponent range make the scaled pass under/overflow: the log-space fallback answers."""
    n = markov_chain.SCALED_MIN_STEPS + 1
    r = np.random.default_rng(11)
    u = 3.0 * r.normal(size=(n, K))
    p = (np.log(r.dirichlet(np.ones(K), K)) if homogeneous
         else r.normal(size=(n - 1, K, K)))
    (mu, a), (ref, a_ref) = _long_chain(jnp.asarray(u), jnp.asarray(p))
    assert np.shape(mu["pair"]) == ((K, K) if homogeneous else (n - 1, K, K))
    np.testing.assert_allclose(a, a_ref, rtol=1e-13)
    for s in ("unary", "pair"):
        np.testing.assert_allclose(mu[s], ref[s], rtol=1e-10, atol=1e-12, err_msg=s)
    eps = float(np.finfo(np.float32).eps)
    # sticky transitions (off-diagonal -200) against unaries that switch state every
    # other step (+300): every path's weight underflows float32 in linear space
    wide = 300.0 * np.eye(K)[(np.arange(n) // 2) % K]
    wp = np.where(np.eye(K, dtype=bool), 0.0, -200.0)
    wp = wp if homogeneous else np.broadcast_to(wp, (n - 1, K, K))
    with jax.enable_x64(False):
        (mu32, a32), _ = _long_chain(jnp.asarray(u, jnp.float32), jnp.asarray(p, jnp.float32))
        (wmu32, wa32), _ = _long_chain(jnp.asarray(wide, jnp.float32),
                                       jnp.asarray(wp, jnp.float32))
        ok32 = markov_chain._scaled_forward_backward(jnp.asarray(wide, jnp.float32),
                                                     jnp.asarray(wp, jnp.float32))[1]
    assert abs(float(a32) - float(a)) <= 8 * eps * abs(float(a))
    np.testing.assert_allclose(mu32["unary"], mu["unary"], atol=16 * eps)
    scale = 1.0 if not homogeneous else n  # a sum over the n - 1 steps
    np.testing.assert_allclose(mu32["pair"], mu["pair"], atol=64 * eps * scale ** 0.5)
    (wmu, wa), _ = _long_chain(jnp.asarray(wide), jnp.asarray(wp))
    assert not bool(ok32)  # the scaled float32 pass fails here ...
    assert abs(float(wa32) - float(wa)) <= 8 * eps * abs(float(wa))  # ... the fallback not
    np.testing.assert_allclose(wmu32["unary"], wmu["unary"], atol=64 * eps)
