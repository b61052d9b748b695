"""The two forms of ``Q(theta) = F(mu_Y; theta)`` that :func:`vijax.em` maximizes.

- **factored**: the parameters compiled *as latents* once (when every parameter enters
  the log joint like a conjugate latent): ``Q(theta) = F(T(theta), mu_Y)``; before each
  M-step every term is contracted over the data and ``mu_Y`` (:meth:`_Factored.reduce`,
  stacked into one product per layout), so the M-step's evaluations cost nothing
  data-sized, and each parameter has a closed-form conditional maximizer, its family's
  mode (:meth:`_Factored.modes`).
- **direct**: the model recompiled with theta as data (``F`` is differentiable in theta
  through the compiler); each evaluation touches the data.

Which one a fit uses, and why, is decided in :mod:`vijax.inference.em_choice`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vijax.conjugacy import fused
from vijax.conjugacy import terms as T
from vijax.conjugacy.compile import compile_model, point_statistics
from vijax.inference import meanfield as mf
from vijax.model import Model


class _Factored:
    """Parameters compiled as latents: ``Q(theta) = F(T(theta), mu_Y)``."""

    path = "factored"

    def __init__(self, cfg, compiled, p_names, y_names):
        self.cfg, self.compiled, self.p_names, self.y_names = cfg, compiled, p_names, y_names
        self.y_infos = {n: compiled.infos[n] for n in y_names}

    def _theta_stats(self, theta):
        return {n: point_statistics(self.compiled.infos[n], v)
                for n, v in zip(self.p_names, theta)}

    def form(self, theta, mu):
        """(compiled form, statistics) with ``F = compiled.F(statistics)``."""
        return self.compiled, {**mu, **self._theta_stats(theta)}

    def reduce(self, mu):
        """Every term holding a parameter, contracted over the data and ``mu_Y`` (the
        expected sufficient statistics): ``[(operands, parameter atoms, out)]``. The only
        data-sized work of an M-step."""
        p = set(self.p_names)
        sizes = self.compiled.sizes
        reduced, pairs = [], []
        for t in self.compiled.terms:
            p_atoms = tuple(a for a in t.atoms if a.latent in p)
            if not p_atoms:
                continue  # constant in theta
            keep = set(t.out)
            for a in p_atoms:
                keep.update(a.labels)
            ops = list(t.consts) + [(T.atom_operand(a, mu), a.labels)
                                    for a in t.atoms if a.latent not in p]
            labs = []
            for _, ls in ops:
                labs.extend(l for l in ls if l in keep and l not in labs)
            if len(t.consts) == 1 and len(ops) == 2:  # data x statistic: maybe stacked
                pairs.append((len(reduced), ops, tuple(labs)))
            elif ops:
                red = T.eval_term(T.Term(tuple(ops), (), tuple(labs)), {}, sizes)
                ops = [(red, tuple(labs))]
            reduced.append((ops, p_atoms, t.out))
        # one data constant times one block statistic: one C^T M product per layout
        items = [(ops[0][0], ops[0][1], ops[1][0], ops[1][1], labs)
                 for _, ops, labs in pairs]
        results = fused.contract_with_block(items, sizes)
        for (i, ops, labs), res in zip(pairs, results):
            if res is None:
                res = T.eval_term(T.Term(tuple(ops), (), labs), {}, sizes)
            _, p_atoms, out = reduced[i]
            reduced[i] = ([(res, labs)], p_atoms, out)
        return reduced

    def Q(self, reduced, theta_ref):
        """``theta -> F(T(theta), mu) - F(T(theta_ref), mu)`` from :meth:`reduce`.

        Each term is multilinear in the parameters' statistics ``s_i``, so its change is
        the telescoping sum ``sum_j r_1..r_{j-1} (s_j - r_j) s_{j+1}..s_m`` (``r`` at
        ``theta_ref``): differences are taken before the large contractions, which keeps
        ``Q`` accurate near ``theta_ref`` (float32 included).
        """
        sizes = self.compiled.sizes
        ref = self._theta_stats(theta_ref)

        def q(theta):
            st = self._theta_stats(theta)
            total = jnp.zeros(())
            for ops, atoms, out in reduced:
                new = [T.atom_operand(a, st) for a in atoms]
                old = [T.atom_operand(a, ref) for a in atoms]
                for j in range(len(atoms)):
                    arrays = old[:j] + [new[j] - old[j]] + new[j + 1:]
                    operands = ops + [(x, a.labels) for x, a in zip(arrays, atoms)]
                    total = total + jnp.sum(T.eval_term(T.Term(tuple(operands), (), out),
                                                        {}, sizes))
            return total
        return q

    def has_modes(self):
        """Every parameter's family has a closed-form mode (see :meth:`modes`)."""
        return all(mf.family_class(self.compiled.infos[n]).has_mode() for n in self.p_names)

    def _holds(self, reduced, i):
        name = self.p_names[i]
        return [(ops, atoms, out) for ops, atoms, out in reduced
                if any(a.latent == name for a in atoms)]

    def _eta(self, holds, i, st, how="value"):
        """``eta_i = dQ/dT_i`` at the statistics ``st`` of the others. ``how="abs"``:
        the same contraction of absolute values, the size of the summands whose
        cancellation gives ``eta_i`` (its rounding scale); ``how="ones"``: of ones,
        nonzero exactly where some term of ``Q`` holds the statistic (structure, not
        values)."""
        sizes = self.compiled.sizes
        name = self.p_names[i]
        fix = {"value": lambda a: a, "abs": jnp.abs, "ones": jnp.ones_like}[how]

        def part(s_i):
            total = jnp.zeros(())
            for ops, atoms, out in holds:
                operands = [(fix(x), l) for x, l in ops]
                operands += [(fix(T.atom_operand(a, {**st, name: s_i}))
                              if a.latent != name else T.atom_operand(a, {name: s_i}),
                              a.labels) for a in atoms]
                total = total + jnp.sum(T.eval_term(T.Term(tuple(operands), (), out),
                                                    {}, sizes))
            return total
        return jax.grad(part)(st[name])

    def families(self):
        return [mf.family_class(self.compiled.infos[n]) for n in self.p_names]

    def regularization(self, reduced, theta_ref, reg, floor):
        """The M-step regularization of :func:`vijax.em` (scikit-learn's ``reg_covar``
        and count floor), measured from ``theta_ref``: ``(penalty, shifts)`` with
        ``penalty(theta)`` added to ``Q`` and ``shifts[i]`` (a dict of natural-parameter
        offsets, or None) added to ``eta_i`` before a closed-form mode, so that both
        M-steps maximize the same ``Q + penalty``.

        - Dirichlet / Beta parameters (simplex, unit interval): a pseudo-count ``floor``
          on every entry, ``floor * sum log w``: an entry with no counts gets weight
          ``floor / total`` instead of 0 (no ``log 0``), the others keep theirs.
        - Gamma parameters (precisions ``tau``, entering as ``tau`` and ``log tau``):
          ``-reg * sum c tau`` with ``c = dQ/d log tau`` at ``theta_ref`` (half the
          expected count of a Gaussian precision), so the mode is
          ``1 / (S / n + reg)``: the variance plus ``reg``.
        - InverseGamma parameters (variances ``s``, entering as ``1/s`` and ``log s``):
          likewise ``s = S / n + reg``.
        """
        fams = self.families()
        st_ref = self._theta_stats(theta_ref)
        parts, shifts = [], []
        for i, (fam, th_ref) in enumerate(zip(fams, theta_ref)):
            dt = th_ref.dtype
            fl = jnp.asarray(floor, dt)
            if fam.count_stats:
                parts.extend((i, stat, fl) for stat in fam.count_stats)
                shifts.append({stat: fl for stat in fam.count_stats})
            elif fam.scale_stat is not None:
                lin, sgn = fam.scale_stat
                c = self._eta(self._holds(reduced, i), i, st_ref)["log"]
                w = -reg[i] * jnp.maximum(sgn * c, 0.0)  # Gamma: -reg c; InverseGamma: reg c (c < 0)
                parts.append((i, lin, w))
                shifts.append({lin: w})
            else:
                shifts.append(None)

        def penalty(theta):
            st = self._theta_stats(theta)
            total = jnp.zeros((), theta_ref[0].dtype)
            for i, stat, w in parts:
                name = self.p_names[i]
                total = total + jnp.sum(w * (st[name][stat] - st_ref[name][stat]))
            return total
        return penalty, shifts

    def degeneracy(self, reduced, theta, reg, floor):
        """Per parameter, boolean masks over its elements (all False where they do not
        apply), at the fitted ``theta``:

        - ``empty``: a simplex or unit-interval entry whose expected count is below
          ``eps`` of the total (a mixture component nobody belongs to);
        - ``collapsed``: a precision (variance) whose component's spread ``S / n`` is
          at most ``reg`` or at the rounding level of its own summands (a component
          on a single point: without ``reg`` the likelihood is unbounded there);
        - ``unbounded``: ``Q`` increases without limit in the element because nothing
          counters its ``log`` term (a weight declared positive instead of simplex).
        """
        fams = self.families()
        st = self._theta_stats(theta)
        out = {"empty": [], "collapsed": [], "unbounded": []}
        for i, (fam, th) in enumerate(zip(fams, theta)):
            none = jnp.zeros(th.shape, bool)
            empty = collapsed = unbounded = none
            dt = th.dtype
            eps = jnp.finfo(dt).eps
            if fam.count_stats or fam.scale_stat is not None:
                holds = self._holds(reduced, i)
                eta = self._eta(holds, i, st)
                mag = self._eta(holds, i, st, "abs")
                struct = self._eta(holds, i, st, "ones")
            if fam.count_stats:
                cnt = sum(eta[stat] for stat in fam.count_stats)
                axes = tuple(range(-fam.event_ndim, 0))  # the event's entries share a total
                total = (jnp.sum(jnp.abs(cnt), axes, keepdims=True) if axes
                         else jnp.sum(jnp.abs(cnt)))
                empty = jnp.broadcast_to(cnt <= eps * total, th.shape)
            elif fam.scale_stat is not None:
                lin, sgn = fam.scale_stat
                c = sgn * eta["log"]  # half the count, >= 0 for a precision/variance
                spread = -sgn * eta[lin]  # half the sum of squares S
                big = c > jnp.sqrt(eps) * jnp.max(jnp.abs(c))
                unbounded = big & (struct[lin] == 0)
                noise = 64 * eps * mag[lin]
                collapsed = big & ~unbounded & (spread <= noise + reg[i] * c)
            out["empty"].append(empty)
            out["collapsed"].append(collapsed)
            out["unbounded"].append(unbounded)
        return out

    def modes(self, reduced, theta, max_cycles, tol, shifts=None):
        """Conditional maximization (ECM): for each parameter in turn, ``Q`` is
        ``<eta_i, T_i(theta_i)> + const`` with ``eta_i = dQ/dT_i`` at the others' current
        values, maximized in closed form by its family's mode (``eta_i`` plus
        ``shifts[i]``, the regularization of :meth:`regularization`). Elements without
        an interior maximum keep their value. Cycles repeat until the relative change of
        every parameter is below ``tol`` or ``max_cycles`` ran; every step increases
        ``Q``, and a cycle is exact when the maximizers do not depend on each other (the
        Gaussian mixture: means, then precisions, then weights). Returns
        ``(theta, cycles)``."""
        fams = self.families()
        holds = [self._holds(reduced, i) for i in range(len(self.p_names))]
        shifts = shifts or [None] * len(fams)

        def cycle(theta):
            theta = list(theta)
            for i in range(len(theta)):
                eta = self._eta(holds[i], i, self._theta_stats(theta))
                eta = {s: eta[s] + (shifts[i] or {}).get(s, 0.0) for s in fams[i].stat_names}
                x, valid = fams[i].mode(eta)
                info = self.compiled.infos[self.p_names[i]]
                if info.dense:  # a dense event: to the declared shape
                    x, valid = info.layout.to_value(x), info.layout.to_value(valid)
                theta[i] = jnp.where(valid, x.astype(theta[i].dtype), theta[i])
            return theta

        def cond(c):
            return (c[1] < max_cycles) & ~c[2]

        def body(c):
            old, k, _ = c
            new = cycle(old)
            small = jnp.asarray(True)
            for a, b in zip(new, old):
                small = small & jnp.all(jnp.abs(a - b) <= tol * (1.0 + jnp.abs(b)))
            return new, k + 1, small

        theta, cycles, _ = jax.lax.while_loop(
            cond, body, (list(theta), jnp.asarray(0), jnp.asarray(False)))
        return theta, cycles


class _Direct:
    """Parameters passed as data: the model is recompiled for each theta (traced)."""

    path = "direct"

    def __init__(self, cfg, data, compiled0):
        self.cfg, self.data = cfg, data
        self.y_names = list(compiled0.infos)
        self.y_infos = dict(compiled0.infos)
        self.compiled = compiled0

    def _compiled(self, theta):
        cfg = self.cfg
        model = Model(lambda z, d: cfg.log_joint(cfg.unflatten(d[0]), z, d[1]),
                      cfg.latent_supports)
        return compile_model(model, (list(theta), self.data))

    def form(self, theta, mu):
        return self._compiled(theta), mu

    def reduce(self, mu):
        return mu  # every evaluation of Q touches the data

    def Q(self, mu, theta_ref):
        ref = self._compiled(theta_ref).F(mu)
        return lambda theta: self._compiled(theta).F(mu) - ref

    def has_modes(self):
        return False

    def regularization(self, reduced, theta_ref, reg, floor):
        """Only the count floor of :meth:`_Factored.regularization` (``floor * sum log w``
        for parameters declared simplex or unit interval): this form does not see how
        a precision enters ``Q``, so ``reg_covar`` does not apply here."""
        kinds = [s.kind for s in self.cfg.param_supports]

        def logs(theta):
            out = []
            for k, x in zip(kinds, theta):
                if k == "simplex":
                    out.append(jnp.sum(jnp.log(x)))
                elif k == "unit_interval":
                    out.append(jnp.sum(jnp.log(x) + jnp.log1p(-x)))
            return out
        ref = logs(theta_ref)

        def penalty(theta):
            total = jnp.zeros((), theta_ref[0].dtype)
            for a, b in zip(logs(theta), ref):
                total = total + floor * (a - b)
            return total
        return penalty, [None] * len(kinds)

    def degeneracy(self, reduced, theta, reg, floor):
        """Not analysed on this form (see :meth:`_Factored.degeneracy`): all False."""
        none = [jnp.zeros(jnp.shape(x), bool) for x in theta]
        return {"empty": none, "collapsed": list(none), "unbounded": list(none)}
