"""Batch fitting: ``vj.batch_cavi`` and ``jax.vmap(vj.cavi)`` lanes equal single fits,
a converged lane is frozen while the others run, chunking changes nothing, float32
lanes converge."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vijax as vj
from vijax.conjugacy.program import program_for
from vijax.models import ZOO

# bivariate Gaussian target: mean-field CAVI contracts by rho^2 per sweep, so lanes with
# different correlations converge after very different numbers of sweeps
RHOS = (0.0, 0.5, 0.9, 0.97)


def _bivariate_batch(rhos=RHOS):
    zm = ZOO["bivariate_gaussian"]()
    data = [zm.make_data(rho=r) for r in rhos]
    return zm.model, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *data), data


def _lane(tree, b):
    return jax.tree_util.tree_map(lambda x: x[b], tree)


def _assert_lane_equals(batched, b, single, rtol=1e-10):
    assert int(batched.num_iters[b]) == int(single.num_iters)
    assert bool(batched.converged[b]) == bool(single.converged)
    np.testing.assert_allclose(batched.elbo[b], single.elbo, rtol=rtol)
    for name, q in single.posterior.items():
        np.testing.assert_allclose(batched.posterior[name].mean()[b], q.mean(), rtol=rtol,
                                   atol=1e-12)
    for a, s in zip(jax.tree_util.tree_leaves(_lane(batched.natural, b)),
                    jax.tree_util.tree_leaves(single.natural)):
        np.testing.assert_allclose(a, s, rtol=rtol, atol=1e-12)
    for k, v in single.diagnostics.items():  # the monotonicity and failure bookkeeping
        if k != "analysis_s":
            # decreases are differences of ELBOs: equal up to the ELBO's own rounding
            np.testing.assert_allclose(batched.diagnostics[k][b], v, rtol=rtol, err_msg=k,
                                       atol=1e-13 * max(abs(float(single.elbo)), 1.0))
    width = batched.elbo_trace.shape[-1]
    if width < single.elbo_trace.shape[0]:  # batch_cavi keeps the sweeps the batch ran
        assert width == int(jnp.max(batched.num_iters))
    np.testing.assert_allclose(batched.elbo_trace[b], single.elbo_trace[:width], rtol=rtol)


def test_batch_and_vmap_lanes_equal_single_fits():
    model, data, lanes = _bivariate_batch()
    singles = [vj.cavi(model, d) for d in lanes]
    iters = [int(s.num_iters) for s in singles]
    assert len(set(iters)) == len(iters), iters  # the lanes converge at different sweeps
    batched = vj.batch_cavi(model, data)
    vmapped = jax.jit(jax.vmap(lambda d: vj.cavi(model, d)))(data)
    for b, s in enumerate(singles):
        _assert_lane_equals(batched, b, s)
        _assert_lane_equals(vmapped, b, s)


def test_converged_lane_does_not_move_while_others_run():
    model, data, lanes = _bivariate_batch()
    fits = vj.batch_cavi(model, data)
    n = np.asarray(fits.num_iters)
    assert n[0] < n[-1]
    for b, d in enumerate(lanes):
        # exactly num_iters sweeps (tol=0: no stopping rule) gives the lane's state: a lane
        # that had kept sweeping after it converged would have moved on (rho^2 per sweep)
        exact = vj.cavi(model, d, tol=0.0, max_iters=int(n[b]))
        for a, s in zip(jax.tree_util.tree_leaves(_lane(fits.natural, b)),
                        jax.tree_util.tree_leaves(exact.natural)):
            np.testing.assert_allclose(a, s, rtol=1e-12, atol=1e-14)
        if b > 0:  # one sweep more is distinguishable at this precision
            more = vj.cavi(model, d, tol=0.0, max_iters=int(n[b]) + 1)
            moved = max(float(jnp.max(jnp.abs(a - s))) for a, s in zip(
                jax.tree_util.tree_leaves(_lane(fits.natural, b)),
                jax.tree_util.tree_leaves(more.natural)))
            assert moved > 1e-12
        # the trace is frozen after the lane stopped
        tr = np.asarray(fits.elbo_trace[b])
        assert np.all(tr[n[b]:] == tr[n[b] - 1])


def test_lanes_at_max_iters_and_converged_lanes_mix():
    model, data, lanes = _bivariate_batch()
    m = 12
    with pytest.warns(vj.ConvergenceWarning, match=r"of 4 lanes stopped at max_iters"):
        fits = vj.batch_cavi(model, data, max_iters=m)
    conv = np.asarray(fits.converged)
    assert conv[0] and not conv[-1]
    assert int(fits.num_iters[-1]) == m
    for b, d in enumerate(lanes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", vj.ConvergenceWarning)
            _assert_lane_equals(fits, b, vj.cavi(model, d, max_iters=m))
    with pytest.raises(vj.FitDivergedError, match="max_iters"):
        vj.batch_cavi(model, data, max_iters=m, strict=True)


@pytest.mark.parametrize("chunk", [1, 3, 4, 7])
def test_chunking_gives_the_same_results(chunk):
    zm = ZOO["normal_gamma"]()
    keys = jax.random.split(jax.random.key(3), 7)
    xs = jax.vmap(lambda k, s: s * zm.make_data(k, 20))(keys, jnp.linspace(0.2, 5.0, 7))
    whole = vj.batch_cavi(zm.model, xs)
    parts = vj.batch_cavi(zm.model, xs, chunk_size=chunk)
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(parts)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(whole.num_iters, parts.num_iters)


def test_one_compile_for_every_full_and_padded_chunk():
    from vijax.inference import batch
    zm = ZOO["normal_gamma"]()
    xs = jax.vmap(lambda k: zm.make_data(k, 20))(jax.random.split(jax.random.key(4), 10))
    vj.batch_cavi(zm.model, xs, chunk_size=4)
    prog = program_for(zm.model, xs[0])
    fns = batch._fitter(zm.model, prog, 500, None, None, False)
    assert fns[0]._cache_size() == 1  # chunks of 4, 4 and 2 (padded): one compiled shape
    vj.batch_cavi(zm.model, xs[:9], chunk_size=4)
    assert fns[0]._cache_size() == 1


def test_batch_of_keys_and_shape_errors():
    zm = ZOO["normal_gamma"]()
    xs = jax.vmap(lambda k: zm.make_data(k, 20))(jax.random.split(jax.random.key(5), 3))
    keys = jax.random.split(jax.random.key(9), 3)
    fits = vj.batch_cavi(zm.model, xs, key=keys)
    single = vj.cavi(zm.model, xs[1], key=keys[1])
    np.testing.assert_allclose(fits.elbo[1], single.elbo, rtol=1e-10)
    with pytest.raises(vj.DataError, match="keys"):
        vj.batch_cavi(zm.model, xs, key=keys[:2])
    with pytest.raises(vj.DataError, match="leading batch axis"):
        vj.batch_cavi(ZOO["bivariate_gaussian"]().model,
                      {"mean": jnp.zeros((3, 2)), "cov": jnp.tile(jnp.eye(2), (2, 1, 1))})


def test_failed_lanes_are_counted_in_a_warning_or_raised():
    from vijax.inference import batch
    zm = ZOO["normal_gamma"]()
    xs = jax.vmap(lambda k: zm.make_data(k, 20))(jax.random.split(jax.random.key(6), 4))
    fits = vj.batch_cavi(zm.model, xs)
    d = dict(fits.diagnostics, invalid_latent=jnp.array([-1, 1, -1, 0]))
    bad = fits._replace(diagnostics=d)
    with pytest.warns(vj.ConvergenceWarning, match=r"2 of 4 lanes failed.*lanes \[1, 3\]"):
        batch._report(bad, 4, 1e-8, strict=False)
    with pytest.raises(vj.FitDivergedError, match="2 of 4 lanes failed"):
        batch._report(bad, 4, 1e-8, strict=True)
    # NaN data are rejected up front, as by vj.cavi
    with pytest.raises(vj.DataError):
        vj.batch_cavi(zm.model, xs.at[2, 0].set(jnp.nan))
    with pytest.raises(vj.DataError, match=r"lanes \[1, 3\]"):  # named, across chunks
        vj.batch_cavi(zm.model, xs.at[1, 0].set(jnp.inf).at[3, 5].set(jnp.nan),
                      chunk_size=2)


def test_a_lane_whose_update_is_refused_fails_alone():
    """A lane whose update leaves its family's domain (a covariance that is not positive
    definite: negative precision) stops at that sweep with NaN posterior and the block
    named, as in ``jax.vmap(vj.cavi)``; the other lanes are unaffected."""
    model, data, _ = _bivariate_batch((0.5, 1.5, 0.9))
    with pytest.warns(vj.ConvergenceWarning, match=r"1 of 3 lanes failed.*lanes \[1\]"):
        fits = vj.batch_cavi(model, data)
    vmapped = jax.jit(jax.vmap(lambda d: vj.cavi(model, d)))(data)
    d, dv = fits.diagnostics, vmapped.diagnostics
    assert int(d["invalid_latent"][1]) == int(dv["invalid_latent"][1]) == 0
    assert int(d["invalid_iter"][1]) == int(dv["invalid_iter"][1]) == int(fits.num_iters[1])
    assert all(bool(jnp.isnan(x[1])) for x in jax.tree_util.tree_leaves(fits.natural))
    for b in (0, 2):
        _assert_lane_equals(fits, b, _lane(vmapped, b)._replace(
            elbo_trace=vmapped.elbo_trace[b]))


def test_float32_lanes_converge():
    zm = ZOO["normal_gamma"]()
    with jax.enable_x64(False):
        keys = jax.random.split(jax.random.key(1), 256)
        xs = jax.vmap(lambda k: zm.make_data(k, 20))(keys).astype(jnp.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error", vj.ConvergenceWarning)
            fits = vj.batch_cavi(zm.model, xs)
        assert fits.elbo.dtype == jnp.float32
        assert bool(jnp.all(fits.converged))
        assert int(jnp.max(fits.num_iters)) < 20


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("max_iters,tol", [(37, 0.0), (37, 1e-3), (16, 0.0), (5, 0.0)])
def test_run_trace_across_chunks(max_iters, tol, split):
    """``driver.run`` in one loop, or (``split_trace``) in a first loop of a chunk of
    steps and a second over the rest: the trace is every step's ELBO, padded with the
    last, alone and under vmap."""
    from vijax.inference import driver
    rates = jnp.array([0.5, 0.9, 0.97])  # tol=1e-3: converge at 6, 26 and after 37

    def fit(r):
        def step(x):
            x = r * x
            return x, driver.Info(-x * x - 1.0, True, 0.0, False, ())
        return driver.run(step, jnp.asarray(1.0), max_iters=max_iters, tol=tol,
                          elbo0=jnp.asarray(-2.0), split_trace=split)

    batched = jax.jit(jax.vmap(fit))(rates)
    for b, r in enumerate(np.asarray(rates, np.float64)):
        one = jax.jit(fit)(rates[b])
        n = int(one.num_iters)
        want = -(r ** (2 * np.arange(1, n + 1))) - 1.0
        # converged when |change| <= tol |L|: r^2k (1 - r^2) <= tol (1 + r^2k)
        assert n == (max_iters if tol == 0 else (6, 26, 37)[b])
        np.testing.assert_allclose(one.trace[:n], want, rtol=1e-12)
        np.testing.assert_array_equal(one.trace[n:], one.trace[n - 1])
        for got, ref in zip(jax.tree_util.tree_leaves(_lane(batched, b)),
                            jax.tree_util.tree_leaves(one)):
            np.testing.assert_array_equal(got, ref)


def test_clearing_the_program_cache_reaches_batch_cavi(zoo):
    """``vijax.conjugacy.program.clear_cache`` forgets batch_cavi's programs too (its own
    cache keys on the clear count): the next call analyses again."""
    from vijax.conjugacy import program
    from vijax.inference import batch
    case = zoo["normal_gamma"]
    xs = jnp.stack([case.data, case.data + 1.0])
    vj.batch_cavi(case.model, xs)
    _, first, _ = batch._program(case.model, xs)
    assert batch._program(case.model, xs)[1] is first  # a hit: the same program
    program.clear_cache()
    _, again, _ = batch._program(case.model, xs)
    assert again is not first
    fits = vj.batch_cavi(case.model, xs)
    np.testing.assert_allclose(fits.elbo[0], vj.cavi(case.model, case.data).elbo, rtol=1e-10)


@pytest.mark.parametrize("options", [{"damping": 0.6}, {"order": ("tau", "mu")},
                                     {"init": "tau"}, {"key": "per lane"}])
def test_options_give_the_single_fits(options):
    """Damped sweeps (the loop keeps every lane's natural parameters: no replay of the last
    sweep), another order, a user's start and one key per lane: each lane equals its
    single fit, sweep counts and diagnostics included."""
    zm = ZOO["normal_gamma"]()
    keys = jax.random.split(jax.random.key(8), 5)
    xs = jax.vmap(lambda k, s: s * zm.make_data(k, 20))(keys, jnp.linspace(0.3, 4.0, 5))
    kw, per_lane = dict(options), [{} for _ in range(5)]
    if kw.get("init") == "tau":
        kw["init"] = {"tau": vj.families.Gamma.from_shape_rate(2.0, 0.5)}
    if kw.get("key") == "per lane":
        kw["key"] = jax.random.split(jax.random.key(2), 5)
        per_lane = [{"key": k} for k in kw["key"]]
    fits = vj.batch_cavi(zm.model, xs, **kw)
    single = {k: v for k, v in kw.items() if k != "key"}
    for b in range(5):
        _assert_lane_equals(fits, b, vj.cavi(zm.model, xs[b], **single, **per_lane[b]))
