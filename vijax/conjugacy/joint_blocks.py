"""Declared blocks of several latents: one joint exponential-family factor each.

``vj.Model(..., blocks=[["mu", "tau"]])`` asks for the structured factor
``q(mu, tau) = q(mu | tau) q(tau)`` instead of ``q(mu) q(tau)``. The compiler first
matches every latent alone (Normal for ``mu``, Gamma for ``tau``); F's terms then hold
products of the members' statistics (``tau * mu``, ``tau * mu^2``, ``L mu``,
``mu^T L mu``). :func:`apply` maps each such product onto one statistic of a registered
joint family (:func:`vijax.families.registry.joint_families`):

- **elementwise** (Normal-Gamma): the atoms of one term read the same element of both
  latents, and ``{tau}, {log tau}, {tau, mu}, {tau, mu^2}`` become the joint statistics
  ``tau, log_tau, tau_mu, tau_mu2``;
- **matrix** (Normal-Wishart, ``mu [..., D]`` and ``L [..., D, D]`` of one batch): a term
  ``sum_ij c_i L_ij mu_j`` (``mu`` contracted with one matrix index of ``L`` of the same
  component, no constant on that index) becomes ``c . (L mu)``, and
  ``sum_ij L_ij mu_i mu_j`` becomes ``mu^T L mu``.

F stays multilinear, now in the block's joint statistics, so CAVI updates the block by
the same gradient ``eta = dF/dmu_block`` as any factor: the update is the exact joint
conditional optimum. A block is keyed by :func:`block_name` (``"mu+tau"``) in the
natural parameters; the result's ``posterior`` holds each member's exact marginal (see
:meth:`BlockInfo.marginals`). Any other term (e.g. ``mu`` with a prior that does not
scale with ``tau``) is refused with a :class:`~vijax.errors.ModelSpecError` naming the
latents, the line and what the family needs.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from vijax.conjugacy import terms as T
from vijax.conjugacy.matching import LatentInfo, _elements_over
from vijax.errors import ModelSpecError
from vijax.families import registry


def block_name(members) -> str:
    """The factor name of a block: its members joined by ``+`` (``"mu+tau"``)."""
    return "+".join(members)


@dataclasses.dataclass(unsafe_hash=True)
class BlockInfo(LatentInfo):
    """A declared block matched to a joint family (a factor of CAVI).

    ``name`` is :func:`block_name`, ``support`` the precision member's (its shape is the
    block's batch shape), ``members`` the latents and ``roles`` their roles in the family
    (``"mean"``, ``"precision"``); ``dim`` is the event size ``D`` (1 elementwise)."""

    members: tuple = ()
    roles: tuple = ()
    dim: int = 1

    @property
    def family_class(self):
        return registry.get(self.family)

    @property
    def dense(self) -> bool:
        return False

    def stat_shape(self, stat):
        nd = self.family_class.stat_event_ndims[stat]
        return tuple(self.support.shape) + (self.dim,) * nd

    def marginals(self, q) -> dict:
        """``{member: exact marginal}`` of the joint factor ``q``: the precision's
        Gamma / Wishart, the mean's StudentT / MultivariateT."""
        by_role = q.marginals()
        return {m: by_role[r] for m, r in zip(self.members, self.roles)}


def _describe(inf) -> str:
    return f"'{inf.name}' is {inf.support} with a {inf.family or 'non-conjugate'} factor"


def _fit_roles(fam, members, infos):
    """``(roles, dim)`` when the members' mean-field families and shapes fit ``fam``,
    else a reason string."""
    for perm in itertools.permutations(fam.roles):
        if all(infos[m].support.kind == fam.role_supports[r]
               and infos[m].family == fam.role_families[r] for m, r in zip(members, perm)):
            roles = dict(zip(perm, members))
            mean, prec = infos[roles["mean"]], infos[roles["precision"]]
            if fam.joint_kind == "elementwise":
                if tuple(mean.support.shape) != tuple(prec.support.shape):
                    return (f"{fam.__name__} needs the mean and the precision of the same "
                            f"shape; '{mean.name}' has {mean.support.shape}, "
                            f"'{prec.name}' {prec.support.shape}")
                return perm, 1
            d = prec.support.num_categories
            want = tuple(prec.support.shape) + (d,)
            if tuple(mean.support.shape) != want or tuple(mean.event_axes) != (len(want) - 1,):
                return (f"{fam.__name__} needs the mean of shape {want} (one D-vector per "
                        f"precision matrix, coupled along its last axis); '{mean.name}' has "
                        f"shape {mean.support.shape} with dense axes {mean.event_axes}")
            return perm, d
    want = " and ".join(f"a {fam.role_supports[r]} {r} ({fam.role_families[r]} alone)"
                        for r in fam.roles)
    return f"{fam.__name__} needs {want}"


def pick_family(members, infos):
    """``(family class, roles, dim)`` for a block, or ModelSpecError naming why not."""
    members = tuple(members)
    bad = [m for m in members if infos[m].family is None]
    if bad:
        raise ModelSpecError(
            f"block {list(members)}: latent '{bad[0]}' has no conjugate factor on its own "
            f"({infos[bad[0]].reason}); a joint block needs every member conjugate")
    reasons = []
    for fam in registry.joint_families():
        if len(fam.roles) != len(members):
            reasons.append(f"{fam.__name__} joins {len(fam.roles)} latents")
            continue
        got = _fit_roles(fam, members, infos)
        if isinstance(got, str):
            reasons.append(got)
            continue
        return fam, got[0], got[1]
    found = "; ".join(_describe(infos[m]) for m in members)
    raise ModelSpecError(f"block {list(members)}: no joint family fits these latents ({found}). "
                         + "; ".join(reasons) + ". Remove the block to fit them mean-field.")


def _form(atoms, role_of):
    return " * ".join(f"{a.stat}({a.latent})" for a in atoms)


def _refuse(members, fam, t, atoms, why):
    where = f" at {t.src}" if t.src else ""
    raise ModelSpecError(
        f"block {list(members)}: a term{where} reads {_form(atoms, None)}: {why}. The "
        f"{fam.__name__} family needs {fam.requirement}. Remove the block to fit these "
        "latents mean-field, or change the model")


def _elementwise_atom(block, stat, atoms, infos, sizes):
    if len(atoms) == 1:
        a = atoms[0]
        return T.Atom(block, stat, a.labels, a.idx)
    p, q = atoms
    if p.labels == q.labels and p.idx is None and q.idx is None:
        return T.Atom(block, stat, p.labels, None)
    if not (T.is_concrete(p.idx) and T.is_concrete(q.idx)):
        return "the elements are chosen by a data index"
    union = tuple(dict.fromkeys(p.labels + q.labels))
    shape = infos[p.latent].support.shape
    ep = _elements_over(sizes, p, shape, union)
    eq = _elements_over(sizes, q, shape, union)
    if not np.array_equal(ep, eq):
        return "it multiplies the mean and the precision of different elements"
    return T.Atom(block, stat, union, np.array(ep))


def _matrix_atom(block, stat, atoms, t, role_of):
    if len(atoms) == 1:
        a = atoms[0]
        return T.Atom(block, stat, a.labels, a.idx)
    prec = next(a for a in atoms if role_of[a.latent] == "precision")
    mean = next(a for a in atoms if role_of[a.latent] == "mean")
    if prec.idx is not None or mean.idx is not None:
        return "it reads part of a component (an index), not whole vectors and matrices"
    lb, (i, j) = prec.labels[:-2], prec.labels[-2:]
    const_labels = set(t.out)
    for _, ls in t.consts:
        const_labels.update(ls)
    if i == j:
        return "it reads the diagonal of the precision only"
    if mean.stat == "x":
        e = mean.labels[-1]
        if mean.labels[:-1] != lb or e not in (i, j):
            return "the mean is not contracted with the precision of its own component"
        if e in const_labels:
            return "a constant depends on the index contracted between mean and precision"
        return T.Atom(block, stat, lb + ((j if e == i else i),), None)
    if mean.labels[:-2] != lb or set(mean.labels[-2:]) != {i, j}:
        return "the product of two means is not contracted with the precision of their component"
    if {i, j} & const_labels:
        return "a constant weights the quadratic form mu^T L mu by index"
    return T.Atom(block, stat, lb, None)


def rewrite_term(t, members, roles, fam, infos, sizes):
    """The term with its block atoms replaced by one atom of the joint statistic."""
    role_of = dict(zip(members, roles))
    inside = [a for a in t.atoms if a.latent in role_of]
    if not inside:
        return t
    key = frozenset((role_of[a.latent], a.stat) for a in inside)
    stat = fam.joint_stats.get(key) if len(key) == len(inside) else None
    if stat is None:
        missing = [m for m in members if m not in {a.latent for a in inside}]
        why = (f"'{inside[0].latent}' appears without '{missing[0]}'" if missing
               else "no statistic of the family is this product")
        _refuse(members, fam, t, inside, why)
    block = block_name(members)
    if fam.joint_kind == "elementwise":
        atom = _elementwise_atom(block, stat, inside, infos, sizes)
    else:
        atom = _matrix_atom(block, stat, inside, t, role_of)
    if isinstance(atom, str):
        _refuse(members, fam, t, inside, atom)
    rest = tuple(a for a in t.atoms if a.latent not in role_of)
    return T.Term(t.consts, rest + (atom,), t.out, t.src)


def _block_info(members, roles, fam, dim, infos):
    prec = members[roles.index("precision")]
    return BlockInfo(block_name(members), infos[prec].support, family=fam.__name__,
                     stats=tuple(fam.stat_names),
                     structure_note=f"a joint {fam.__name__} factor of {list(members)}",
                     members=tuple(members), roles=tuple(roles), dim=int(dim))


def multi_blocks(blocks):
    return [tuple(b) for b in (blocks or ()) if len(b) > 1]


def refuse_blocks(model, fitter: str):
    """ModelSpecError when ``model`` declares blocks of several latents and ``fitter``
    fits one factor per latent (it would silently fit a different approximation)."""
    multi = multi_blocks(getattr(model, "blocks", ()))
    if multi:
        raise ModelSpecError(
            f"the model declares the joint block(s) {[list(b) for b in multi]}, which "
            f"{fitter} does not fit (it updates one factor per latent): fit the blocks with "
            "vj.cavi or vj.fit_gradient, or declare the model without blocks= for a "
            "mean-field fit")


def apply(compiled, blocks):
    """``compiled`` with each block of several latents made one joint factor (infos
    keyed by :func:`block_name` in place of the members; terms on joint statistics).

    Raises:
        ModelSpecError: a block fits no joint family, or a term does not fit its family.
    """
    multi = multi_blocks(blocks)
    if not multi:
        return compiled
    from vijax.conjugacy.compile import Compiled
    infos, terms = dict(compiled.infos), list(compiled.terms)
    for members in multi:
        fam, roles, dim = pick_family(members, infos)
        terms = [rewrite_term(t, members, roles, fam, infos, compiled.sizes) for t in terms]
        new = {}
        for n, inf in infos.items():
            if n == members[0]:
                new[block_name(members)] = _block_info(members, roles, fam, dim, infos)
            elif n not in members:
                new[n] = inf
        infos = new
    return Compiled(infos, compiled.const, terms, compiled.sizes)


def describe(compiled, blocks) -> list:
    """One line per declared block: its joint family, or why it is refused."""
    out = []
    for members in multi_blocks(blocks):
        try:
            fam, _, _ = pick_family(members, compiled.infos)
            for t in compiled.terms:
                rewrite_term(t, members, _roles(fam, members, compiled.infos), fam,
                             compiled.infos, compiled.sizes)
            out.append(f"block {list(members)}: joint {fam.__name__} factor "
                       f"({', '.join(fam.stat_names)})")
        except ModelSpecError as e:
            out.append(f"block {list(members)} refused: {e}")
    return out


def _roles(fam, members, infos):
    return _fit_roles(fam, members, infos)[0]


def suggest(compiled, blocks=()) -> list:
    """Blocks the terms would accept, for latents not already in a declared block:
    ``"mu and tau form a NormalGamma block: blocks=[['mu', 'tau']]"``. A pair is
    suggested when some term multiplies their statistics (a coupling the structured
    factor keeps) and every term fits the joint family."""
    taken = {n for b in multi_blocks(blocks) for n in b}
    names = [n for n, i in compiled.infos.items() if i.family is not None and n not in taken]
    out = []
    for a, b in itertools.combinations(names, 2):
        try:
            fam, roles, _ = pick_family((a, b), compiled.infos)
        except ModelSpecError:
            continue
        coupled = False
        try:
            for t in compiled.terms:
                lat = {x.latent for x in t.atoms}
                coupled = coupled or {a, b} <= lat
                rewrite_term(t, (a, b), roles, fam, compiled.infos, compiled.sizes)
        except ModelSpecError:
            continue
        if coupled:
            mean = (a, b)[roles.index("mean")]
            prec = (a, b)[roles.index("precision")]
            out.append(f"{mean} and {prec} form a {fam.__name__} block: "
                       f"blocks=[[{mean!r}, {prec!r}]] (q({mean}, {prec}) = "
                       f"q({mean} | {prec}) q({prec}) instead of mean-field)")
    return out


__all__ = ["BlockInfo", "block_name", "apply", "pick_family", "rewrite_term", "describe",
           "suggest"]
