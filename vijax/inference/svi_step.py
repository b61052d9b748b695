"""One step of stochastic VI on a minibatch (Hoffman, Blei, Wang & Paisley 2013).

For ``log p = log p(beta) + sum_n f(x_n, z_n, beta)`` and a minibatch ``S`` of ``B`` of the
``N`` observations, with ``w = N / B``:

1. local step: coordinate ascent over the local latents of ``S`` with the globals held
   (closed form; one sweep is exact for one local block, otherwise sweeps until the
   minibatch ELBO's relative change is below ``local_tol`` or ``local_iters`` sweeps);
2. global step, block by block: ``eta_hat_j = dF_w/dmu_j`` with

       F_w(mu) = F_prior(mu) + w * sum_{n in S} f_n(mu),

   i.e. the minibatch's compiled form with its per-observation terms
   (:func:`vijax.inference.plates.classify_terms`) weighted by ``w`` and the prior
   terms unweighted, then ``eta_j <- (1 - rho_t) eta_j + rho_t eta_hat_j`` (a natural-
   gradient step of size ``rho_t`` on the unbiased ELBO estimate);
3. the ELBO estimate ``F_w(mu) + sum_globals H + w * sum_{n in S} H[q(z_n)]``.

At ``B = N`` and ``rho_t = 1`` this is one CAVI sweep with the locals updated first.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vijax.conjugacy import terms as T
from vijax.conjugacy.compile import Compiled
from vijax.inference.cavi import sweep
from vijax.inference.driver import Info


class StepOut(NamedTuple):
    """What a minibatch step returns besides the new globals."""

    local: dict  # the minibatch's local natural parameters after the local step
    info: Any


def weighted_form(comp, kinds, priors, w):
    """``F_w``: plate terms times ``w``, prior terms as they are, a mixed term's constant
    ``c = p + sum_n g(x_n)`` as ``p + w (c - p)``, and F's constant likewise
    (``kinds``, ``priors``: :class:`vijax.inference.plates.Split`). ``w == 1`` returns
    ``comp`` itself."""
    if w == 1:
        return comp
    terms = []
    for t, kind in zip(comp.terms, kinds):
        if kind == "plate" and t.consts:
            (c0, l0), *rest = t.consts
            t = t.with_(consts=((c0 * w, l0), *rest))
        elif kind == "plate":
            t = T.scale_term(t, jnp.asarray(w, jnp.result_type(comp.const)))
        elif kind != "prior":
            _, j, i = kind
            p = priors["terms"][i]
            consts = list(t.consts)
            c, ls = consts[j]
            consts[j] = (p + w * (c - p), ls)
            t = t.with_(consts=tuple(consts))
        terms.append(t)
    const = priors["const"] + w * (comp.const - priors["const"])
    return Compiled(comp.infos, const, terms, comp.sizes)


def _entropy(fams, natural, names):
    out = jnp.zeros(())
    for n in names:
        out = out + jnp.sum(fams[n](natural[n]).entropy())
    return out


def local_step(comp, fams, natural, mu, order, local_iters, local_tol):
    """Coordinate ascent over the local blocks ``order`` on one minibatch.

    Returns ``(natural, mu, elbo, invalid, sweeps)``; ``invalid`` is the index in
    ``order`` of a refused update (-1: none)."""
    form = lambda m: (comp, m)  # noqa: E731
    natural, mu, e, inv = sweep(form, fams, natural, mu, order)
    if len(order) == 1 or local_iters <= 1:
        return natural, mu, e, inv, jnp.asarray(1)

    def cond(c):
        i, _, _, e, e_old, inv = c
        change = jnp.abs(e - e_old)
        return (i < local_iters) & (inv < 0) & (change > local_tol * jnp.maximum(jnp.abs(e), 1))

    def body(c):
        i, nat, m, e, _, _ = c
        nat, m, e2, inv = sweep(form, fams, nat, m, order)
        return i + 1, nat, m, e2, e, inv

    c = (jnp.asarray(1), natural, mu, e, jnp.asarray(jnp.inf, e.dtype), inv)
    i, natural, mu, e, _, inv = jax.lax.while_loop(cond, body, c)
    return natural, mu, e, inv, i


def make_core(prog_b, fams, kinds, w, local_order, global_order, schedule: Callable,
              local_iters: int, local_tol):
    """``core(natural, count, batch, local, priors) -> (natural, StepOut)``: one SVI
    step on the minibatch ``batch`` (data pytree of ``B`` rows) from the globals' natural
    parameters ``natural`` and the minibatch's starting local parameters ``local``;
    ``kinds``, ``priors``: how F's terms scale (:class:`vijax.inference.plates.Split`)."""

    def core(natural, count, batch, local, priors):
        comp = prog_b.materialize(batch)
        nat = {**natural, **local}
        mu = {n: fams[n].mean_params(nat[n]) for n in nat}
        if local_order:
            nat, mu, _, inv_l, sweeps = local_step(comp, fams, nat, mu, local_order,
                                                   local_iters, local_tol)
        else:
            inv_l, sweeps = jnp.asarray(-1), jnp.asarray(0)
        rho = jnp.asarray(schedule(count), jnp.result_type(comp.const))
        scaled = weighted_form(comp, kinds, priors, w)
        nat, mu, e, inv_g = sweep(lambda m: (scaled, m), fams, nat, mu, global_order,
                                  damping=rho)
        if local_order and w != 1:
            e = e + (w - 1) * _entropy(fams, nat, local_order).astype(e.dtype)
        ok = (inv_l < 0) & (inv_g < 0) & (rho > 0) & (rho <= 1)
        # index of the failing latent in local_order + global_order (-1: none)
        bad = jnp.where(inv_l >= 0, inv_l, jnp.where(inv_g >= 0, len(local_order) + inv_g, -1))
        extra = {"rho": rho, "local_sweeps": sweeps, "invalid": bad}
        glob = {n: nat[n] for n in global_order}
        loc = {n: nat[n] for n in local_order}
        return glob, StepOut(loc, Info(e, ok, jnp.zeros((), e.dtype), False, extra))

    return core
