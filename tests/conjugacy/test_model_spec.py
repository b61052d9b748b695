"""Model-specification errors: the compiler names the latent, the shapes or the line."""

from __future__ import annotations

import os

import jax.numpy as jnp
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.conjugacy.compile import compile_model
from vijax.errors import ModelSpecError, UnsupportedPrimitiveError

THIS_FILE = os.path.basename(__file__)
X = jnp.array([0.3, 1.2, -0.4, 0.9])


def marked_line(tag: str) -> int:
    with open(__file__) as fh:
        hits = [i for i, line in enumerate(fh, 1) if line.rstrip().endswith(f"# <- {tag}")]
    assert len(hits) == 1
    return hits[0]


def reads_undeclared(z, x):
    return stats.norm.logpdf(z["mu"]) + jnp.sum(stats.norm.logpdf(x, z["mu"], z["sigma"]))


def test_latent_read_but_not_declared():
    with pytest.raises(ModelSpecError, match="sigma") as ei:
        vj.analyze(vj.Model(reads_undeclared, {"mu": vj.real()}), X)
    assert "not declared" in str(ei.value)
    with pytest.raises(ModelSpecError, match="sigma"):
        vj.cavi(vj.Model(reads_undeclared, {"mu": vj.real()}), X)


def test_latent_declared_but_unused():
    def lj(z, x):
        return stats.norm.logpdf(z["mu"]) + jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0))
    model = vj.Model(lj, {"mu": vj.real(), "tau": vj.positive()})
    with pytest.raises(ModelSpecError, match="tau") as ei:
        compile_model(model, X)
    assert "'tau'" in str(ei.value) and "'mu'" not in str(ei.value)
    with pytest.raises(ModelSpecError, match="tau"):
        vj.cavi(model, X)


@pytest.mark.parametrize("ret", [
    lambda z, x: stats.norm.logpdf(x, z["mu"], 1.0),                      # vector
    lambda z, x: (stats.norm.logpdf(z["mu"]), jnp.sum(x)),                # tuple
    lambda z, x: jnp.sum(jnp.round(z["mu"] * x)).astype(jnp.int32),       # integer
    lambda z, x: jnp.sum(stats.norm.logpdf(x, z["mu"])) > 0.0,            # boolean
], ids=["vector", "tuple", "int", "bool"])
def test_log_joint_must_return_one_float_scalar(ret):
    with pytest.raises(ModelSpecError, match="scalar"):
        compile_model(vj.Model(ret, {"mu": vj.real()}), X)


def test_exception_while_tracing_becomes_model_spec_error_with_shapes():
    def lj(z, x):
        # w declared with 3 elements but used as if it had 4
        return jnp.sum(stats.norm.logpdf(x, z["w"] @ jnp.ones((4, 4)), 1.0))
    with pytest.raises(ModelSpecError) as ei:
        compile_model(vj.Model(lj, {"w": vj.real((3,)), "tau": vj.positive()}), X)
    msg = str(ei.value)
    assert "'w': (3,)" in msg and "'tau': ()" in msg, msg
    assert ei.value.__cause__ is not None


def fft_model(z, x):
    lp = jnp.sum(stats.norm.logpdf(z["mu"], 0.0, 1.0))
    lp += jnp.sum(jnp.abs(jnp.fft.fft(z["mu"])) ** 2)  # <- fft
    return lp


def test_latent_through_primitive_without_rule():
    model = vj.Model(fft_model, {"mu": vj.real((4,))})
    with pytest.raises(UnsupportedPrimitiveError) as ei:
        vj.analyze(model, X)
    err = ei.value
    assert isinstance(err, ModelSpecError)
    assert err.primitive == "fft"
    assert "fft" in str(err)
    where = f"{THIS_FILE}:{marked_line('fft')}"
    assert where in str(err) and err.source.endswith(where)
    with pytest.raises(UnsupportedPrimitiveError):
        vj.cavi(model, X)


def test_primitive_without_rule_on_constants_only_is_fine():
    # The fft only touches data: constant-folded, no error.
    def lj(z, x):
        spec = jnp.abs(jnp.fft.fft(x))
        return jnp.sum(stats.norm.logpdf(spec, z["mu"], 1.0)) + stats.norm.logpdf(z["mu"])
    c = compile_model(vj.Model(lj, {"mu": vj.real()}), X)
    assert c.infos["mu"].family == "Normal"


@pytest.mark.parametrize("bad", ["real", vj.real, None, ("real", ()), 1.0])
def test_supports_values_must_be_supports(bad):
    with pytest.raises(ModelSpecError, match="mu"):
        vj.Model(lambda z, x: stats.norm.logpdf(z["mu"]), {"mu": bad})


def test_supports_must_be_nonempty_dict_and_log_joint_callable():
    with pytest.raises(ModelSpecError):
        vj.Model(lambda z, x: 0.0, {})
    with pytest.raises(ModelSpecError):
        vj.Model("not a function", {"mu": vj.real()})
