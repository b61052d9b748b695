"""Non-conjugate log joints, written the way users write them.

For each: ``vj.analyze`` reports the right latent as non-conjugate, with a reason naming
the primitive and this file's ``file:line`` of the offending expression (marked below with
a ``# <- name`` comment), and ``vj.cavi`` raises ``NonConjugateError`` carrying the latent.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest
from jax.scipy import stats
from jax.scipy.special import logsumexp

import vijax as vj
from vijax.errors import NonConjugateError

THIS_FILE = os.path.basename(__file__)

X = jnp.array([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0], [0.2, 0.1]])
Y = jnp.array([1.0, 0.0, 1.0, 1.0])
COUNTS = jnp.array([1, 0, 3, 2])
DATA = {"X": X, "y": Y, "counts": COUNTS}


def marked_line(tag: str) -> int:
    """Line number in this file of the statement tagged ``# <- tag``."""
    with open(__file__) as fh:
        hits = [i for i, line in enumerate(fh, 1) if line.rstrip().endswith(f"# <- {tag}")]
    assert len(hits) == 1, f"tag {tag!r} found {len(hits)} times"
    return hits[0]


def logistic_regression(z, d):
    w = z["w"]
    lp = jnp.sum(stats.norm.logpdf(w, 0.0, 1.0))
    p = jax.nn.sigmoid(d["X"] @ w)  # <- sigmoid
    lp += jnp.sum(d["y"] * jnp.log(p) + (1.0 - d["y"]) * jnp.log(1.0 - p))
    return lp


def softplus_via_log1p_exp(z, d):
    m = z["m"]
    lp = stats.norm.logpdf(m, 0.0, 1.0)
    lp -= jnp.sum(jnp.log1p(jnp.exp(d["X"][:, 0] * m)))  # <- log1p_exp
    return lp


def softplus_jax_nn(z, d):
    m = z["m"]
    lp = stats.norm.logpdf(m, 0.0, 1.0)
    lp -= jnp.sum(jax.nn.softplus(d["X"][:, 0] * m))  # <- softplus
    return lp


def poisson_log_link(z, d):
    m = z["m"]
    lp = stats.norm.logpdf(m, 0.0, 1.0)
    lp += jnp.sum(stats.poisson.logpmf(d["counts"], jnp.exp(m)))  # <- exp
    return lp


def cubic_term(z, d):
    m = z["m"]
    lp = stats.norm.logpdf(m, 0.0, 1.0) + jnp.sum(stats.norm.logpdf(d["y"], m, 1.0))
    lp -= 0.1 * m ** 3  # <- cube
    return lp


def entropy_like_term(z, d):
    tau = z["tau"]
    lp = stats.gamma.logpdf(tau, 2.0, scale=1.0)
    lp += tau * jnp.log(tau)  # <- taulogtau
    return lp


def student_t_likelihood(z, d):
    m = z["m"]
    lp = stats.norm.logpdf(m, 0.0, 10.0)
    lp += jnp.sum(stats.t.logpdf(d["y"], 4.0, m, 1.0))  # <- student
    return lp


def mixture_marginal(z, d):
    m1, m2 = z["m1"], z["m2"]
    lp = stats.norm.logpdf(m1, 0.0, 3.0) + stats.norm.logpdf(m2, 0.0, 3.0)
    comp = jnp.stack([jnp.log(0.3) + stats.norm.logpdf(d["y"], m1, 1.0),
                      jnp.log(0.7) + stats.norm.logpdf(d["y"], m2, 1.0)])
    lp += jnp.sum(logsumexp(comp, axis=0))  # <- logsumexp
    return lp


# (name, log joint, supports, offending latents, primitives acceptable as "the" culprit)
CASES = [
    ("sigmoid", logistic_regression, {"w": vj.real((2,))}, ["w"], {"logistic"}),
    ("log1p_exp", softplus_via_log1p_exp, {"m": vj.real()}, ["m"], {"exp"}),
    ("softplus", softplus_jax_nn, {"m": vj.real()}, ["m"],
     {"max", "exp", "log1p", "logaddexp", "softplus", "custom_jvp_call"}),
    ("exp", poisson_log_link, {"m": vj.real()}, ["m"], {"exp"}),
    ("cube", cubic_term, {"m": vj.real()}, ["m"], {"integer_pow", "mul", "pow"}),
    ("taulogtau", entropy_like_term, {"tau": vj.positive()}, ["tau"], {"mul"}),
    ("student", student_t_likelihood, {"m": vj.real()}, ["m"], {"log1p", "log", "pow"}),
    ("logsumexp", mixture_marginal, {"m1": vj.real(), "m2": vj.real()}, ["m1", "m2"],
     {"reduce_max", "exp", "log", "max", "stop_gradient"}),
]


# Where the culprit is a product of statistics rather than one primitive, the reason may
# name the statistic pattern instead of the primitive.
PATTERNS = {"cube": "m**3", "taulogtau": "tau * log(tau)"}


@pytest.fixture(scope="module")
def analyses():
    return {tag: vj.analyze(vj.Model(f, sup), DATA) for tag, f, sup, _, _ in CASES}


@pytest.mark.parametrize("tag,fn,supports,latents,prims", CASES, ids=[c[0] for c in CASES])
def test_analyze_reports_latent_primitive_and_user_line(analyses, tag, fn, supports, latents,
                                                        prims):
    a = analyses[tag]
    line = marked_line(tag)
    assert not a.conjugate
    for n in latents:
        assert a.families[n] is None, f"'{n}' should not be conjugate"
        reason = a.reasons[n]
        assert f"{THIS_FILE}:{line}" in reason, reason
        info = a.compiled.infos[n]
        assert info.family is None
        assert info.source is not None and info.source.endswith(f"{THIS_FILE}:{line}")
        assert info.primitive in prims, (info.primitive, reason)
        assert info.primitive in reason or PATTERNS.get(tag, "\0") in reason, reason
    report = str(a)
    assert "NOT CONJUGATE" in report and f"{THIS_FILE}:{line}" in report


@pytest.mark.parametrize("tag,fn,supports,latents,prims", CASES, ids=[c[0] for c in CASES])
def test_cavi_refuses_with_nonconjugate_error(tag, fn, supports, latents, prims):
    with pytest.raises(NonConjugateError) as ei:
        vj.cavi(vj.Model(fn, supports), DATA, max_iters=2)
    err = ei.value
    assert err.latent in latents
    assert err.primitive in prims
    assert err.source is not None and err.source.endswith(f"{THIS_FILE}:{marked_line(tag)}")
    msg = str(err)
    assert err.latent in msg and f"{THIS_FILE}:{marked_line(tag)}" in msg


def coupled_precisions(z, d):
    tau, m = z["tau"], z["m"]
    lp = jnp.sum(stats.gamma.logpdf(tau, 2.0, scale=1.0)) + stats.norm.logpdf(m, 0.0, 2.0)
    lp += jnp.sum(stats.norm.logpdf(d["y"], m, 1.0 / jnp.sqrt(tau[0] * tau[1])))  # <- coupling
    return lp


def test_two_elements_multiplied_is_reported_and_other_latent_keeps_family():
    model = vj.Model(coupled_precisions, {"tau": vj.positive((2,)), "m": vj.real()})
    a = vj.analyze(model, DATA)
    assert a.families["tau"] is None
    assert a.families["m"] is vj.families.Normal
    reason = a.reasons["tau"]
    assert "element" in reason and "multipl" in reason, reason
    assert "tau" in reason
    assert f"{THIS_FILE}:{marked_line('coupling')}" in reason
    assert "m" not in a.reasons
    with pytest.raises(NonConjugateError) as ei:
        vj.cavi(model, DATA, max_iters=2)
    assert ei.value.latent == "tau"
