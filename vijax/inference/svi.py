"""Stochastic variational inference (Hoffman, Blei, Wang & Paisley 2013) from the compiled F.

Each step draws a minibatch ``S`` of ``B`` of the ``N`` observations, updates the local
latents of ``S`` in closed form with the globals held, and moves each global's natural
parameters towards the minibatch optimum,

    eta <- (1 - rho_t) eta + rho_t eta_hat,   eta_hat = dF_w / dmu,
    F_w = F_prior + (N / B) sum_{n in S} f_n,

a natural-gradient step on an unbiased estimate of the ELBO
(:mod:`vijax.inference.svi_step`; local/global latents and per-observation terms from
:mod:`vijax.inference.plates`). With ``B = N`` and ``rho_t = 1`` a step is a CAVI sweep.

Two data paths, one compiled step:

- **in memory** (a pytree whose plate-carrying leaves have the leading axis ``N``): the
  whole fit is one jitted ``lax.while_loop`` (:func:`vijax.inference.driver.run`), the
  minibatch gathered on the device; at the end one local pass over all data gives the
  locals' posterior and the exact full-data ELBO;
- **an iterator of minibatches** (each ``B`` rows; the data need not fit on the device):
  a Python loop over the same jitted step, one host round trip per batch for the
  stopping rule; the result holds the globals only.
"""

from __future__ import annotations

import collections
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _xla
from vijax.conjugacy import joint_blocks
from vijax.conjugacy.program import program_for
from vijax.errors import DataError, ModelSpecError
from vijax.inference import checks, driver, plates, sharding, stopping
from vijax.inference import meanfield as mf
from vijax.inference import svi_setup as S
from vijax.inference.driver import Info
from vijax.inference.result import FitResult
from vijax.inference.svi_step import local_step
from vijax.model import check_data

batch_indices = S.batch_indices


class SviState(NamedTuple):
    """The in-memory loop's carry: the globals' natural parameters, the step count (each
    step computes its rows of the epoch's order, :func:`vijax.inference.svi_setup.epoch_rows`),
    and (``local_init="warm"``) every row's local natural parameters."""

    natural: dict
    count: Any
    local: dict


def svi(model, data, key=None, batch_size=None, *, num_data=None, schedule=None,
        tau=10.0, kappa=0.6, max_iters=1000, tol=None, window=None, sampling="epoch",
        local_init="fresh", local_iters=100, local_tol=None, strict=False,
        mesh=None) -> FitResult:
    """Fit the mean-field posterior by stochastic natural-gradient steps on minibatches.

    Args:
        model: a conjugate :class:`vijax.Model`; latents whose leading axis is the data's
            plate (the largest leading dimension of the data leaves) are local, the rest
            global.
        data: the data pytree (plate-carrying leaves have leading axis ``N``), or an
            iterator of such pytrees of ``batch_size`` rows each (then ``num_data=N``).
        key: PRNG key: the starting factors (as ``vj.cavi`` with the same key) and the
            minibatch draws.
        batch_size: ``B`` in ``[1, N]``.
        num_data: ``N`` for iterator input (the model's local latents are declared with it).
        schedule: callable ``count -> rho`` (0-based count, as optax schedules), values in
            (0, 1]; default ``rho_t = (t + tau)^(-kappa)``, t = 1, 2, ...
        tau, kappa: the default schedule's delay (``>= 0``) and rate (in (0.5, 1]).
            Defaults 10 and 0.6: on the zoo GMM at N = 1e6, B = 1000, (1, 0.7) left 4
            of 8 starts unconverged after 1000 steps, 2 of them (float32) 6-9% below the
            optimum (two components merged: the step size decays before the minibatch
            noise splits them); (10, 0.6) converged in 600-1000 steps to the optimum of
            its basin from all 16 starts (float64 and float32; one float64 start is in
            a worse optimum's basin, as CAVI from some starts).
        max_iters: at most this many steps.
        tol: windowed stopping rule of :func:`vijax.run` on the ELBO estimates (window
            means compared, the allowance widened by twice their standard error);
            default 1e-4. ``tol=0`` runs every step.
        window: steps per window (default ``max(20, min(200, 3 N // B))``).
        sampling: ``"epoch"`` (in-memory: a fresh pseudo-random permutation per epoch,
            batches without replacement within it; ``N mod B`` rows sit out each epoch;
            ``O(B)`` work per step, :func:`~vijax.inference.svi_setup.epoch_rows`) or
            ``"uniform"`` (i.i.d. uniform rows).
        local_init: ``"fresh"`` (every minibatch's locals start from the same default
            factors: classic SVI) or ``"warm"`` (in-memory only: each row's locals start
            where its last visit left them; at ``B = N``, ``rho = 1`` this is CAVI).
        local_iters, local_tol: the local step's coordinate ascent (several local blocks):
            at most ``local_iters`` sweeps, until the minibatch ELBO's relative change is
            below ``local_tol`` (default ``max(1e-8, eps)``). One local block: one sweep
            (exact).
        strict: raise :class:`FitDivergedError` instead of warning.
        mesh: optional :class:`jax.sharding.Mesh` for in-memory data: rows split over its
            devices (:func:`vijax.inference.sharding.shard_data`).

    Returns:
        :class:`FitResult`: ``posterior`` (globals; and locals for in-memory data, from
        one final local pass over all rows), ``elbo`` (in memory: the exact full-data
        ELBO at the end; iterator: the last window's mean estimate), ``elbo_trace`` (the
        per-step minibatch estimates), ``num_iters``, ``converged``, ``diagnostics``
        (``elbo_estimate``, ``elbo_se`` (standard error of the last window's mean,
        ignoring autocorrelation), ``rho`` (per step), ``batch_size``, ``num_data``,
        ``estimator``, ``sampling``, ``local_sweeps``, ``local``, ``global``).

    Raises:
        ModelSpecError: bad ``batch_size``/schedule/options, no global latent, or a latent
            the plate analysis cannot classify (a term pairing observations, a reduction
            of the data over the plate).
        NonConjugateError: a latent without a closed-form update (named).
        DataError: NaN/Inf data, no plate, a minibatch of the wrong shape.
        FitDivergedError: an update left its family's domain or the ELBO became non-finite.
    """
    joint_blocks.refuse_blocks(model, "vj.svi")
    dtype = jnp.zeros(()).dtype
    key = jax.random.key(0) if key is None else key
    sched = S.make_schedule(schedule, tau, kappa)
    if sampling not in ("epoch", "uniform"):
        raise ModelSpecError(f"svi: sampling must be 'epoch' or 'uniform', got {sampling!r}")
    if local_init not in ("fresh", "warm"):
        raise ModelSpecError(f"svi: local_init must be 'fresh' or 'warm', got {local_init!r}")
    if int(max_iters) < 1:
        raise ModelSpecError(f"svi: max_iters must be >= 1, got {max_iters}")
    tol = 1e-4 if tol is None else float(tol)
    if not tol >= 0:
        raise ModelSpecError(f"svi: tol must be >= 0, got {tol}")
    local_tol = float(stopping.default_tol(dtype) if local_tol is None else local_tol)
    iterator = _is_iterator(data)
    if iterator:
        from vijax.inference.svi_iter import fit_iterator
        if num_data is None:
            raise ModelSpecError("svi: iterator input needs num_data=N (the number of "
                                 "observations the model's local latents are declared for)")
        if local_init == "warm":
            raise ModelSpecError("svi: local_init='warm' keeps every row's locals: in-memory "
                                 "data only")
        return fit_iterator(model, iter(data), key, batch_size, int(num_data), sched,
                            int(max_iters), tol, window, int(local_iters), local_tol,
                            strict, dtype)
    data = sharding.maybe_shard(data, mesh)
    check_data(data)
    plate = plates.find_plate(model, data)
    n = plate.n
    if num_data is not None and int(num_data) != n:
        raise DataError(f"svi: num_data={num_data} but the data's plate has {n} rows")
    b = S.check_batch_size(batch_size, n)
    ks = S.sampling_key(key)
    first = plates.take(data, plate, S.indices_at(ks, 0, n, b, sampling))
    st = S.setup(model, plate, first, b, key, sched, int(local_iters), local_tol, dtype)
    window = default_window(n, b) if window is None else max(1, int(window))
    max_iters = int(max_iters)
    warm = local_init == "warm"
    full_prog = program_for(model, data)
    full_prog.require_conjugate()
    full_start = mf.default_init_jit(full_prog, key, dtype)
    local_full0 = {k: full_start[k] for k in st.local_order}
    fit = _fit_fn(st, n, b, sampling, warm, max_iters, window, int(local_iters), local_tol,
                  full_prog)
    out, natural, elbo_exact = fit(data, st.natural0, st.local0, local_full0, ks, tol,
                                   st.priors)
    return _result(st, out, natural, elbo_exact, sampling, window, tol, strict, full_prog,
                   in_memory=True)


def default_window(n, b):
    """Steps per window of the stopping rule: three epochs' worth, at least 20 and at
    most 200 steps (the minibatch estimates are noisy: a short window stops early)."""
    return max(20, min(200, 3 * (n // b)))


def _is_iterator(data):
    return hasattr(data, "__next__") or isinstance(data, collections.abc.Generator)


_FITS: "collections.OrderedDict[Any, Any]" = collections.OrderedDict()


def _fit_fn(st, n, b, sampling, warm, max_iters, window, local_iters, local_tol, full_prog):
    """The jitted in-memory fit (cached by its configuration: a second fit of the same
    model, shapes and options compiles nothing)."""
    cache_key = (id(st.prog_b), id(full_prog), n, b, sampling, warm, max_iters, window,
                 local_iters, local_tol, st.core_key)
    fn = _FITS.get(cache_key)
    if fn is not None:
        return fn
    core, plate = st.core, st.plate

    def fit(data, natural0, local0, local_full0, ks, tol, priors):
        def step(state):
            idx = S.indices_at(ks, state.count, n, b, sampling)
            batch = plates.take(data, plate, idx)
            take = lambda a: jnp.take(a, idx, axis=0)  # noqa: E731
            loc = jax.tree_util.tree_map(take, state.local) if warm else local0
            glob, out = core(state.natural, state.count, batch, loc, priors)
            local = (jax.tree_util.tree_map(lambda a, v: a.at[idx].set(v), state.local,
                                            out.local) if warm else state.local)
            return SviState(glob, state.count + 1, local), out.info

        state = SviState(natural0, jnp.asarray(0), local_full0 if warm else {})
        info0 = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(lambda s: step(s)[1], state))
        out = driver.run(step, state, max_iters=max_iters, tol=tol, window=window,
                         stochastic=True, info0=info0)
        # one local pass over every row with the final globals: locals' posterior and the
        # exact ELBO
        comp = full_prog.materialize(data)
        start = out.state.local if warm else local_full0
        nat = {**out.state.natural, **start}
        mu = {k: st.fams[k].mean_params(nat[k]) for k in nat}
        if st.local_order:
            nat, mu, _, _, _ = local_step(comp, st.fams, nat, mu, st.local_order,
                                          local_iters, local_tol)
        return out, nat, mf.elbo(comp, nat)

    fn = _FITS[cache_key] = _xla.jit(fit)
    if len(_FITS) > 32:
        _FITS.popitem(last=False)
    return fn


def rho_trace(schedule, steps, dtype):
    """The step sizes of the first ``steps`` steps."""
    if steps == 0:
        return jnp.zeros((0,), dtype)
    return jnp.broadcast_to(jnp.asarray(schedule(jnp.arange(steps)), dtype), (steps,))


def _result(st, out, natural, elbo_exact, sampling, window, tol, strict, prog,
            in_memory):
    n_it = int(out.num_iters)
    trace = np.asarray(out.trace)
    lo = max(0, n_it - window)
    last = trace[lo:n_it] if n_it else trace[:1]
    est = float(np.mean(last))
    se = float(np.std(last) / math.sqrt(len(last))) if len(last) > 1 else float("nan")
    dtype = jnp.result_type(out.info.elbo)
    order = st.local_order + st.global_order
    diag = {
        "elbo_estimate": jnp.asarray(est, dtype), "elbo_se": jnp.asarray(se, dtype),
        "elbo_exact": jnp.asarray(elbo_exact if elbo_exact is not None else jnp.nan, dtype),
        "rho": rho_trace(st.schedule, n_it, dtype),
        "batch_size": st.b, "num_data": st.n,
        "estimator": "minibatch-scaled ELBO (N/B times the minibatch's per-observation "
                     "terms and local entropies, plus the prior terms)",
        "sampling": sampling, "window": window,
        "local_sweeps": jnp.asarray(out.info.extra["local_sweeps"]),
        "local": st.local_order, "global": st.global_order,
        "invalid_latent": jnp.where(out.failed_at >= 0, out.info.extra["invalid"], -1),
        "invalid_iter": jnp.where(out.failed_at >= 0, out.failed_at + 1, -1),
        "nonfinite": ~jnp.isfinite(out.info.elbo),
    }
    infos = prog.infos
    names = order if in_memory else st.global_order
    natural = {k: natural[k] for k in names}
    post = {k: mf.factor(infos[k], natural[k], validate=False) for k in names}
    elbo = elbo_exact if in_memory else jnp.asarray(est, dtype)
    result = FitResult(post, jnp.asarray(elbo, dtype), jnp.asarray(trace),
                       jnp.asarray(n_it), jnp.asarray(out.converged), diag, natural)
    _raise_if_failed(result, order, strict, tol)
    return result


def _raise_if_failed(result, order, strict, tol):
    checks.raise_failed_update(
        result, order, "SVI", "step",
        "(or the step size left (0, 1]). Check its prior and hyper-parameters, or the "
        "schedule.")
    d = result.diagnostics
    problems = []
    if not bool(result.converged) and tol > 0:
        problems.append(
            f"SVI stopped after {int(result.num_iters)} steps (max_iters) before its windowed "
            f"ELBO means settled (last estimate {float(d['elbo_estimate']):.6g} +- "
            f"{float(d['elbo_se']):.2g}). Raise max_iters or tol, or the batch size.")
    stopping.report(problems, strict, step=int(result.num_iters), last_state=result.natural,
                    stacklevel=4)
