"""vj.from_numpyro: NumPyro models read as vijax models.

Reference: the zoo's hand-written log joints of the same models. The NumPyro versions
must get the same supports and families, the same log joint at any point, and the same
CAVI fit (float64, 1e-10).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

numpyro = pytest.importorskip("numpyro")
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints as C  # noqa: E402

import vijax as vj  # noqa: E402
from vijax.errors import DataError, ModelSpecError, NonConjugateError  # noqa: E402
from vijax.models import ZOO  # noqa: E402
from vijax.models.conjugate_pairs import BETA_PRIOR, GAMMA_PRIOR  # noqa: E402
from vijax.models.gaussian import NORMAL_GAMMA_PRIOR  # noqa: E402
from vijax.models.mixture import GMM_PRIOR  # noqa: E402
from vijax.numpyro_bridge import from_numpyro, support_of  # noqa: E402


def np_normal_known_variance(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, 0.5), obs=x)


def np_beta_bernoulli(x):
    p = numpyro.sample("p", dist.Beta(*BETA_PRIOR))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("x", dist.Bernoulli(p), obs=x)


def np_gamma_poisson(x):
    lam = numpyro.sample("lam", dist.Gamma(*GAMMA_PRIOR))  # concentration, rate
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("x", dist.Poisson(lam), obs=x)


def np_normal_gamma(x):
    p = NORMAL_GAMMA_PRIOR
    tau = numpyro.sample("tau", dist.Gamma(p["a0"], p["b0"]))
    mu = numpyro.sample("mu", dist.Normal(p["mu0"], 1.0 / jnp.sqrt(p["lambda0"] * tau)))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, 1.0 / jnp.sqrt(tau)), obs=x)


def np_gmm(x, k):
    p = GMM_PRIOR
    n, d = x.shape
    pi = numpyro.sample("pi", dist.Dirichlet(jnp.full((k,), p["alpha0"])))
    tau = numpyro.sample("tau", dist.Gamma(p["a0"], p["b0"]).expand([k, d]).to_event(2))
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0 / jnp.sqrt(p["beta0"] * tau)).to_event(2))
    with numpyro.plate("N", n):
        z = numpyro.sample("z", dist.Categorical(pi))
        numpyro.sample("x", dist.Normal(mu[z], 1.0 / jnp.sqrt(tau[z])).to_event(1), obs=x)


def np_linear_regression(X, y):
    alpha = numpyro.sample("alpha", dist.Gamma(1.0, 1.0))
    beta = numpyro.sample("beta", dist.Gamma(1.0, 1.0))
    w = numpyro.sample("w", dist.Normal(0.0, 1.0 / jnp.sqrt(alpha)).expand([X.shape[1]])
                       .to_event(1))
    with numpyro.plate("N", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 1.0 / jnp.sqrt(beta)), obs=y)


def np_lda(doc, word, d, k, v, alpha=0.5, eta=0.3):
    with numpyro.plate("D", d):
        theta = numpyro.sample("theta", dist.Dirichlet(jnp.full((k,), alpha)))
    with numpyro.plate("K", k):
        beta = numpyro.sample("beta", dist.Dirichlet(jnp.full((v,), eta)))
    with numpyro.plate("N", doc.shape[0]):
        z = numpyro.sample("z", dist.Categorical(theta[doc]))
        numpyro.sample("w", dist.Categorical(beta[z]), obs=word)


def _probe(model, key):
    """A random point of the model's latents (inside the supports)."""
    out = {}
    for i, (n, s) in enumerate(sorted(model.supports.items())):
        k = jax.random.fold_in(key, i)
        if s.kind == "categorical":
            out[n] = jax.random.randint(k, s.shape, 0, s.num_categories)
        else:
            u = jax.random.normal(k, s.unconstrained_shape)
            out[n] = s.from_unconstrained(u)
    return out


def _same_fit(a, b, atol=1e-10):
    assert abs(float(a.elbo) - float(b.elbo)) < atol
    for n in b.natural:
        for s in b.natural[n]:
            np.testing.assert_allclose(np.asarray(a.natural[n][s]), np.asarray(b.natural[n][s]),
                                       rtol=1e-10, atol=atol)


def _exact_posterior(name, x):
    """Closed-form posterior natural parameters of the single-latent zoo pairs."""
    x = np.asarray(x, np.float64)
    n, s = x.size, float(x.sum())
    if name == "normal_known_variance":  # mu ~ N(0, 2^2), x ~ N(mu, 0.5^2)
        return {"x": s / 0.25, "x2": -0.5 * (1 / 4.0 + n / 0.25)}
    if name == "beta_bernoulli":
        return {"log": BETA_PRIOR[0] + s - 1, "log1m": BETA_PRIOR[1] + n - s - 1}
    a, b = GAMMA_PRIOR
    return {"log": a + s - 1, "x": -(b + n)}


def _same_model(model, data, ref, ref_data, n=3, sweeps=0, init=None):
    """The same log joint at random points, the same compiled form F at random factors
    (so CAVI's updates and ELBO agree), and, with ``sweeps``, vj.cavi's algorithm run that
    many sweeps from one start in the hand-written model's update order (NumPyro declares
    the sites in another order): the same natural parameters and ELBO to 1e-10. One
    compiled program. Returns the NumPyro model's CAVI state (or None)."""
    from vijax.inference import meanfield as mf
    c1 = vj.compile(model, data).materialize(data)
    c2 = vj.compile(ref, ref_data).materialize(ref_data)
    zs = [_probe(model, jax.random.key(i)) for i in range(n)]
    nats = [mf.default_init(c1, jax.random.key(i), jnp.float64) for i in range(n)]
    order = tuple(ref.supports)

    def cavi(c):
        alg = vj.algorithms.cavi(c, order)
        nat = mf.user_init(c, init, mf.default_init(c, jax.random.key(0), jnp.float64))
        return jax.lax.fori_loop(0, sweeps, lambda i, s: alg.step(s)[0], alg.init(nat))

    def both(zs, nats, c1, c2):
        lj = [(model.log_joint(z, data), ref.log_joint(z, ref_data)) for z in zs]
        lj += [(mf.elbo(c1, e), mf.elbo(c2, e)) for e in nats]
        return lj, ((cavi(c1), cavi(c2)) if sweeps else None)

    pairs, fits = jax.jit(both)(zs, nats, c1, c2)
    for a, b in pairs:
        assert abs(float(a) - float(b)) < 1e-10
    if fits is None:
        return None
    _same_fit(*fits)
    return fits[0]


def _families(model, data):
    return {n: getattr(c, "__name__", c) for n, c in vj.analyze(model, data).families.items()}


@pytest.mark.parametrize("fn, zoo_name", [
    (np_normal_known_variance, "normal_known_variance"), (np_beta_bernoulli, "beta_bernoulli"),
    (np_gamma_poisson, "gamma_poisson"), (np_normal_gamma, "normal_gamma")])
def test_conjugate_pairs_match_hand_written(zoo, fn, zoo_name):
    case = zoo[zoo_name]
    model, data = from_numpyro(fn, case.data)
    assert model.supports == case.model.supports and sorted(data) == ["x"]
    fams = {n: c.__name__ for n, c in vj.analyze(model, data).families.items()}
    assert fams == case.zoo_model.families
    _same_model(model, data, case.model, case.data)
    if zoo_name == "normal_gamma":  # two blocks: the textbook fixed point
        p = NORMAL_GAMMA_PRIOR
        x = np.asarray(case.data, np.float64)
        fit = vj.cavi(model, data, tol=0, max_iters=40)
        q_mu, q_tau = fit.posterior["mu"], fit.posterior["tau"]
        ln = p["lambda0"] + x.size
        e_tau = float(q_tau.mean())
        m = (p["lambda0"] * p["mu0"] + x.sum()) / ln
        assert abs(float(q_mu.mean()) - m) < 1e-10
        assert abs(float(q_mu.variance()) - 1 / (ln * e_tau)) < 1e-10
        an = p["a0"] + (x.size + 1) / 2
        e_ss = np.sum((x - m) ** 2) + p["lambda0"] * (m - p["mu0"]) ** 2 + ln * float(q_mu.variance())
        np.testing.assert_allclose(
            [float(q_tau.usual_params()["concentration"]), float(q_tau.usual_params()["rate"])],
            [an, p["b0"] + 0.5 * e_ss], rtol=1e-10)
        return
    # one block: CAVI gives the exact posterior, as the hand-written model does
    fit = vj.cavi(model, data)
    for s, v in _exact_posterior(zoo_name, case.data).items():
        assert abs(float(fit.natural[list(model.supports)[0]][s]) - v) < 1e-10 * max(1, abs(v))


def test_new_data_of_same_shape(zoo):
    case = zoo["beta_bernoulli"]
    model, data = from_numpyro(np_beta_bernoulli, case.data)
    new = {"x": 1 - data["x"]}
    q = vj.cavi(model, new).posterior["p"].usual_params()
    k, n = float(jnp.sum(new["x"])), new["x"].size
    np.testing.assert_allclose([float(q["concentration1"]), float(q["concentration0"])],
                               [BETA_PRIOR[0] + k, BETA_PRIOR[1] + n - k], rtol=1e-12)


def test_gaussian_mixture_matches_hand_written():
    zm = ZOO["gaussian_mixture"](n=12, k=2, d=2)
    x = zm.make_data(jax.random.key(0))
    model, data = from_numpyro(np_gmm, x, 2)
    assert model.supports == zm.model.supports
    assert _families(model, data) == zm.families
    r = jax.nn.softmax(3.0 * jax.random.normal(jax.random.key(5), (12, 2)))
    _same_model(model, data, zm.model, x, sweeps=8, init={"z": r})


def test_linear_regression_matches_hand_written(zoo):
    """Dense Gaussian weights with Gamma precisions; X is an argument of the NumPyro
    model (a constant of its log joint), y its observed site."""
    case = zoo["linear_regression"]
    X, y = case.data["X"], case.data["y"]
    model, data = from_numpyro(np_linear_regression, X, y)
    assert model.supports == case.model.supports and sorted(data) == ["y"]
    assert _families(model, data) == case.zoo_model.families
    a = _same_model(model, data, case.model, case.data, sweeps=30)
    # at the fixed point q(w) has precision E[alpha] I + E[beta] X^T X and natural
    # location E[beta] X^T y (Gamma naturals: log = shape - 1, x = -rate)
    ea, eb = [float((a.natural[n]["log"] + 1) / -a.natural[n]["x"]) for n in ("alpha", "beta")]
    X, y = np.asarray(X), np.asarray(y)
    np.testing.assert_allclose(-2 * np.asarray(a.natural["w"]["xxT"]),
                               ea * np.eye(X.shape[1]) + eb * X.T @ X, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(a.natural["w"]["x"]), eb * X.T @ y, rtol=1e-6)


def test_lda_matches_hand_written(zoo):
    """theta_d, beta_k ~ Dirichlet, z_n ~ Categorical(theta[doc_n]), w_n ~
    Categorical(beta[z_n]); the token's document index is an argument."""
    case = zoo["lda"]
    doc, word = case.data["doc"], case.data["word"]
    d, k = case.model.supports["theta"].shape[0], case.model.supports["beta"].shape[0]
    v = case.model.supports["beta"].num_categories
    model, data = from_numpyro(np_lda, doc, word, d, k, v)
    assert model.supports == case.model.supports and sorted(data) == ["w"]
    assert _families(model, data) == case.zoo_model.families
    r = jax.nn.softmax(3.0 * jax.random.normal(jax.random.key(5), (doc.shape[0], k)))
    _same_model(model, data, case.model, case.data, sweeps=8, init={"z": r})


def test_fixed_covariance_multivariate_normal_is_read(zoo):
    """NumPyro's MultivariateNormal with a constant covariance (prior or likelihood) is
    read through its Cholesky solve: the known-noise regression's exact posterior."""
    case = zoo["linear_regression_known_noise"]
    X, y = case.data["X"], case.data["y"]
    d = X.shape[1]

    def prior_mvn(X, y):
        w = numpyro.sample("w", dist.MultivariateNormal(jnp.zeros(d), precision_matrix=jnp.eye(d)))
        with numpyro.plate("N", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ w, 0.5), obs=y)

    def likelihood_mvn(X, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
        numpyro.sample("y", dist.MultivariateNormal(X @ w, 0.25 * jnp.eye(X.shape[0])), obs=y)

    for fn in (prior_mvn, likelihood_mvn):
        model, data = from_numpyro(fn, X, y)
        assert _families(model, data) == {"w": "MultivariateNormal"}
        _same_model(model, data, case.model, case.data, sweeps=1)


def test_unreadable_numpyro_code_is_refused_by_site():
    """A covariance built from a latent (NumPyro takes its Cholesky factor) and logits of
    a latent (NumPyro normalizes them with logsumexp) are not read: the analysis names the
    site, the primitive and NumPyro's source line, and vj.cavi refuses."""
    def precision_from_latent(X, y):
        alpha = numpyro.sample("alpha", dist.Gamma(1.0, 1.0))
        w = numpyro.sample("w", dist.MultivariateNormal(jnp.zeros(2),
                                                        precision_matrix=alpha * jnp.eye(2)))
        numpyro.sample("y", dist.Normal(X @ w, 0.5).to_event(1), obs=y)

    def logits_of_latent(x):
        pi = numpyro.sample("pi", dist.Dirichlet(jnp.ones(2)))
        with numpyro.plate("N", x.shape[0]):
            numpyro.sample("x", dist.Categorical(logits=jnp.log(pi)), obs=x)

    for (fn, args), (site, prim) in zip(
            [(precision_from_latent, (jnp.eye(2), jnp.ones(2))),
             (logits_of_latent, (jnp.array([0, 1, 1]),))],
            [("alpha", "cholesky"), ("pi", "reduce_max")]):
        model, data = from_numpyro(fn, *args)
        reason = str(vj.analyze(model, data).reasons[site])
        assert prim in reason and "numpyro" in reason, reason
        with pytest.raises(NonConjugateError):
            vj.cavi(model, data)


@pytest.mark.parametrize("constraint, shape, want", [
    (C.real, (3,), vj.real((3,))), (C.real_vector, (2, 3), vj.real((2, 3))),
    (C.positive, (), vj.positive()), (C.softplus_positive, (4,), vj.positive((4,))),
    (C.greater_than(0.0), (), vj.positive()), (C.unit_interval, (2,), vj.unit_interval((2,))),
    (C.interval(0.0, 1.0), (), vj.unit_interval()), (C.simplex, (5, 3), vj.simplex(3, (5,))),
    (C.boolean, (4,), vj.binary((4,))), (C.integer_interval(0, 3), (6,), vj.categorical(4, (6,))),
    (C.nonnegative_integer, (2,), vj.count((2,))),
    (C.independent(C.positive, 1), (2, 3), vj.positive((2, 3)))])
def test_support_table(constraint, shape, want):
    assert support_of("s", constraint, np.zeros(shape)) == want


@pytest.mark.parametrize("constraint", [
    C.interval(0.0, 2.0), C.greater_than(1.0), C.integer_interval(1, 3), C.lower_cholesky,
    C.ordered_vector, C.corr_cholesky])
def test_unsupported_constraints_refused_by_site(constraint):
    with pytest.raises(ModelSpecError, match="sample site 'theta'"):
        support_of("theta", constraint, np.zeros((3, 3)))


def test_model_level_refusals():
    def uniform(x):
        s = numpyro.sample("scale", dist.Uniform(0.0, 2.0))
        numpyro.sample("x", dist.Normal(0.0, s), obs=x)

    with pytest.raises(ModelSpecError, match="'scale'"):
        from_numpyro(uniform, jnp.ones(3))

    def with_param(x):
        m = numpyro.param("m", 0.0)
        numpyro.sample("x", dist.Normal(m, 1.0), obs=x)

    with pytest.raises(ModelSpecError, match="'m' is a numpyro.param"):
        from_numpyro(with_param, jnp.ones(3))

    def subsampled(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("N", x.shape[0], subsample_size=2) as idx:
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])

    with pytest.raises(ModelSpecError, match="plate 'N' subsamples 2 of 5"):
        from_numpyro(subsampled, jnp.ones(5))
    with pytest.raises(DataError, match="observed site 'x'"):
        from_numpyro(np_beta_bernoulli, jnp.array([0.0, 1.0, 2.0]))


def test_nonconjugate_site_named():
    def logistic(X, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)

    X = jnp.array([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0]])
    model, data = from_numpyro(logistic, X, jnp.array([1.0, 0.0, 1.0]))
    assert "w" in vj.analyze(model, data).reasons
    with pytest.raises(NonConjugateError) as e:
        vj.cavi(model, data)
    assert e.value.latent == "w"


def test_readable_densities_equal_numpyro():
    """The unclamped formulas are NumPyro's densities wherever NumPyro does not clamp."""
    from vijax.numpyro_bridge import _readable_table, _swap
    table = _readable_table()
    p = jnp.array([0.1, 0.5, 0.93])
    cases = [(dist.Bernoulli(p), jnp.array([1.0, 0.0, 1.0])),
             (dist.Binomial(7, p), jnp.array([2.0, 7.0, 0.0])),
             (dist.Categorical(jnp.array([[0.2, 0.3, 0.5]] * 3)), jnp.array([0, 2, 1])),
             (dist.Beta(jnp.array([0.7, 2.0, 1.0]), 3.0), p),
             (dist.Beta(2.0, 3.0).expand([3]), p)]
    pairs = [(_swap(d, table), d, v) for d, v in cases]
    assert all(sw is not d for sw, d, _ in pairs)
    got = jax.jit(lambda: [(sw.log_prob(v), d.log_prob(v)) for sw, d, v in pairs])()
    for a, b in got:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


def test_numpyro_absent_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpyro", None)
    with pytest.raises(ImportError, match=r"pip install 'vijax\[numpyro\]'"):
        from_numpyro(np_normal_known_variance, jnp.ones(3))


def test_float32_dtype_aware():
    x64 = np.linspace(-0.5, 1.5, 10)
    with jax.enable_x64(False):
        model, data = from_numpyro(np_normal_known_variance, jnp.asarray(x64, jnp.float32))
        q = vj.cavi(model, data).posterior["mu"]
        m, v = q.mean(), q.variance()
        assert m.dtype == jnp.float32
    prec = 1 / 4.0 + x64.size / 0.25
    eps = float(np.finfo(np.float32).eps)
    assert abs(float(m) - (x64.sum() / 0.25) / prec) < 64 * eps
    assert abs(float(v) - 1 / prec) < 64 * eps / prec
