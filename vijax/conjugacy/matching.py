"""From the walked terms to families and the multilinear function F.

Each term's atoms are grouped per latent and mapped to the statistics of an
exponential family (DESIGN section 2 table). Two atoms of one real latent on different
elements make that latent a multivariate normal whose event spans exactly the axes along
which some such pair differs (the other axes are batch: independent events); any other
pattern is reported as non-conjugate. Like terms
are merged (constants added, per-element index patterns stacked), and F is their sum.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import terms as T
from vijax.families.layout import EventLayout

COUNT_REASON = (
    "count latents (vj.count()) have no conjugate update in this version; marginalize it "
    "in the log joint, or fit by vj.fit_gradient (a Poisson q, score-function gradients)")
FAMILY_BY_KIND = {"positive": "Gamma", "unit_interval": "Beta", "simplex": "Dirichlet",
                  "binary": "Bernoulli", "categorical": "Categorical"}


class _Reject(Exception):
    def __init__(self, latent, detail, src):
        super().__init__(detail)
        self.latent, self.detail, self.src = latent, detail, src


@dataclasses.dataclass(unsafe_hash=True)
class LatentInfo:
    """What the compiler found for one latent."""

    name: str
    support: object
    family: str | None = None
    stats: tuple = ()
    reason: str | None = None
    source: str | None = None
    primitive: str | None = None
    event_axes: tuple = ()  # latent axes forming one multivariate-normal event

    @property
    def event_ndim(self):
        return len(self.event_axes)

    @property
    def layout(self) -> EventLayout:
        """Declared value shape <-> the family's ``batch_shape + (event_size,)``."""
        return EventLayout(self.support.shape, self.event_axes)

    @property
    def batch_shape(self):
        return self.layout.batch_shape if self.event_axes else self.support.shape

    @property
    def event_size(self):
        return self.layout.event_size if self.event_axes else 1

    def stat_shape(self, stat):
        sup = self.support
        if self.family == "MultivariateNormal":
            E = self.event_size
            return self.batch_shape + ((E,) if stat == "x" else (E, E))
        if stat == "onehot":
            return sup.shape + (sup.num_categories,)
        return sup.value_shape


def _elements_over(w_sizes, a: T.Atom, shape, union):
    """The atom's flat index broadcast over the ``union`` labels."""
    idx = np.asarray(T.explicit_idx(a, shape))
    order = [a.labels.index(l) for l in union if l in a.labels]
    idx = np.transpose(idx, order) if idx.ndim else idx
    sh = [w_sizes[l] if l in a.labels else 1 for l in union]
    return np.broadcast_to(idx.reshape(sh), [w_sizes[l] for l in union])


def _classify(sizes, supports, t: T.Term):
    """Per latent: list of ('single', atom) or ('pair', atom_a, atom_b, union)."""
    groups = defaultdict(list)
    for a in t.atoms:
        groups[a.latent].append(a)
    out = {}
    for name, atoms in groups.items():
        sup = supports[name]
        kind = sup.kind
        if len(atoms) == 1:
            a = atoms[0]
            if kind == "real":
                if a.stat == "x" and a.power in (1.0, 2.0):
                    out[name] = ("single", a)
                    continue
                raise _Reject(name, f"'{name}' appears as {name}**{a.power:g}; a real latent "
                              "may appear at most squared", t.src)
            if kind == "positive":
                if a.stat == "log" or (a.stat == "x" and a.power in (1.0, -1.0)):
                    out[name] = ("single", a)
                    continue
                raise _Reject(name, f"'{name}' appears as {name}**{a.power:g}; a positive "
                              "latent may appear as tau, 1/tau or log(tau)", t.src)
            if kind == "count":  # no family is matched for count latents (see match)
                raise _Reject(name, COUNT_REASON, t.src)
            allowed = {"unit_interval": ("log", "log1m"), "simplex": ("log",),
                       "binary": ("x",), "categorical": ("onehot",)}[kind]
            if a.stat in allowed and a.power == 1.0:
                out[name] = ("single", a)
                continue
            what = {"x": f"{name}" + (f"**{a.power:g}" if a.power != 1 else "")}.get(a.stat, a.stat)
            raise _Reject(name, f"'{name}' ({kind}) appears as {what}; its family needs "
                          f"only {', '.join(allowed)} statistics", t.src)
        if len(atoms) == 2 and kind == "real" and all(
                a.stat == "x" and a.power == 1.0 for a in atoms):
            a, b = atoms
            if not (T.is_concrete(a.idx) and T.is_concrete(b.idx)):
                raise _Reject(name, f"two elements of '{name}' chosen by a data index are "
                              "multiplied together: which elements are coupled depends on "
                              "data values, so no family can be fixed from shapes alone. "
                              "Fit it by gradient, or index with a constant array", t.src)
            union = tuple(dict.fromkeys(a.labels + b.labels))
            shape = sup.shape
            ea = _elements_over(sizes, a, shape, union)
            eb = _elements_over(sizes, b, shape, union)
            out[name] = ("pair", a, b, union, ea, eb)
            continue
        same = len(atoms) == 2 and atoms[0].labels == atoms[1].labels and (
            atoms[0].idx is None and atoms[1].idx is None)
        if kind == "real":
            raise _Reject(name, f"'{name}' appears in a product of {len(atoms)} factors "
                          "(degree above 2 is not conjugate for a Gaussian)", t.src)
        if same:
            desc = " * ".join(_atom_str(a) for a in atoms)
            raise _Reject(name, f"'{name}' appears as {desc} of one element: not a "
                          "statistic of an exponential family", t.src)
        raise _Reject(name, f"two elements of '{name}' are multiplied together: its "
                      "mean-field factor does not factorize over elements. Split the latent "
                      "into separate latents, or fit it by gradient", t.src)
    return out


def _atom_str(a):
    if a.stat == "x":
        return a.latent if a.power == 1 else f"{a.latent}**{a.power:g}"
    return f"{a.stat}({a.latent})"


def _event_axes(shape, pairs):
    """The smallest set of axes holding every coupled pair in one event: the axes along
    which some pair's two elements differ. Every pair then agrees on the other (batch)
    axes, so each pair lies within one event; no smaller set does, since leaving out an
    axis along which a pair differs splits that pair over two independent events."""
    axes = set()
    for ea, eb in pairs:
        ca, cb = np.unravel_index(ea, shape), np.unravel_index(eb, shape)
        axes.update(d for d in range(len(shape)) if np.any(ca[d] != cb[d]))
    return tuple(sorted(axes))


def match(space, supports, value, reasons, all_latents):
    """Families per latent, and final terms (over family statistics)."""
    info = {n: LatentInfo(n, supports[n]) for n in supports}
    for r in reasons:
        for n in sorted(r.latents):
            if info[n].reason is None:
                info[n].reason = (f"'{r.primitive}' at {r.source or 'unknown line'}: {r.detail}")
                info[n].source, info[n].primitive = r.source, r.primitive
    terms = simplify_terms(space, list(value.terms) if value is not None else [])
    # pass 1: classify, find coupled pairs
    classified = []
    pairs = defaultdict(list)
    used = defaultdict(set)
    where = {}  # (latent, final statistic) -> source of a term that holds it
    for t in terms:
        if not t.atoms:
            classified.append((t, {}))
            continue
        try:
            c = _classify(space.sizes, supports, t)
        except _Reject as e:
            if info[e.latent].reason is None:
                info[e.latent].reason = e.detail + (f" (at {e.src})" if e.src else "")
                info[e.latent].source = e.src
                info[e.latent].primitive = "mul"
            continue
        classified.append((t, c))
        for name, entry in c.items():
            if entry[0] == "pair":
                _, a, b, union, ea, eb = entry
                if not np.array_equal(ea, eb):
                    pairs[name].append((ea, eb))
                used[name].add("x2")
            else:
                a = entry[1]
                used[name].add(_final_stat_name(supports[name].kind, a))
                where.setdefault((name, _final_stat_name(supports[name].kind, a)), t.src)
    for name, inf in info.items():
        if inf.reason is not None:
            continue
        kind = inf.support.kind
        stats = used.get(name, set())
        if kind == "real":
            if pairs.get(name):
                inf.event_axes = _event_axes(inf.support.shape, pairs[name])
                inf.family = "MultivariateNormal"
                inf.stats = ("x", "xxT")
            else:
                inf.family = "Normal"
                inf.stats = ("x", "x2")
        elif kind == "positive":
            if "x" in stats and "inv" in stats:
                src_x, src_inv = where.get((name, "x")), where.get((name, "inv"))
                at_x = f" (at {src_x})" if src_x and src_x != src_inv else ""
                inf.reason = (f"'{name}' appears both as {name}{at_x} and as 1/{name}: the "
                              "complete conditional is generalized inverse Gaussian, not "
                              "supported" + (f" (at {src_inv})" if src_inv else ""))
                inf.source = src_inv or src_x
                inf.primitive = "div"
                continue
            inf.family = "InverseGamma" if "inv" in stats else "Gamma"
            inf.stats = ("inv", "log") if "inv" in stats else ("x", "log")
        elif kind == "count":
            inf.reason = COUNT_REASON
        else:
            inf.family = FAMILY_BY_KIND[kind]
            inf.stats = {"unit_interval": ("log", "log1m"), "simplex": ("log",),
                         "binary": ("x",), "categorical": ("onehot",)}[kind]
    # pass 2: rewrite atoms onto final statistics
    const = 0.0
    final = []
    for t, c in classified:
        if not c:
            const = const + T.const_value(t, space.sizes)
            continue
        if any(info[n].family is None for n in c):
            continue
        atoms = []
        for name, entry in c.items():
            atoms.append(_final_atom(space.sizes, info[name], entry))
        final.append(T.compress(T.Term(t.consts, tuple(atoms), t.out, t.src), space.sizes))
    merged = [_fold_consts(space, T.compress(T._merge_diagonals(t), space.sizes), final=True)
              for t in merge_terms(space, final)]
    shapes = {n: {s: i.stat_shape(s) for s in i.stats} for n, i in info.items() if i.family}
    merged = [t.with_(atoms=tuple(T.as_identity(a, shapes[a.latent][a.stat], space)
                                  for a in t.atoms)) for t in merged]
    return info, const, merged


def _final_stat_name(kind, a):
    if a.stat == "x" and kind == "positive":
        return "x" if a.power == 1 else "inv"
    if a.stat == "x" and kind == "real":
        return "x" if a.power == 1 else "x2"
    return a.stat


def _final_atom(sizes, inf: LatentInfo, entry):
    kind = inf.support.kind
    if inf.family != "MultivariateNormal":
        if entry[0] == "pair":
            _, a, b, union, ea, eb = entry
            return T.Atom(inf.name, "x2", union, np.array(ea))
        a = entry[1]
        return T.Atom(inf.name, _final_stat_name(kind, a), a.labels, a.idx)
    # element e of the latent is entry b * E + p of the statistic x (and (b, p, p') of
    # xxT), with (b, p) its batch index and event position in the family's layout
    E = inf.event_size
    lay = inf.layout
    if entry[0] == "pair":
        _, a, b, union, ea, eb = entry
        ba, pa = lay.element_position(np.asarray(ea))
        _, pb = lay.element_position(np.asarray(eb))
        return T.Atom(inf.name, "xxT", union, np.array(ba * E * E + pa * E + pb))
    a = entry[1]
    if a.power == 1.0:
        if lay.trailing:  # a reshape: element ids are statistic entries
            if a.idx is None and inf.event_ndim > 1:  # the event axes are flattened
                return T.Atom(inf.name, "x", a.labels, T.explicit_idx(a, inf.support.shape))
            return T.Atom(inf.name, "x", a.labels, a.idx)
        bi, p = lay.element_position(T.host(T.explicit_idx(a, inf.support.shape)))
        return T.Atom(inf.name, "x", a.labels, bi * E + p)
    bi, p = lay.element_position(T.host(T.explicit_idx(a, inf.support.shape)))
    return T.Atom(inf.name, "xxT", a.labels, bi * E * E + p * E + p)


# ----------------------------------------------------------------- merging like terms

def _fold_group(space, group, keep_from, memo):
    """Contract ``group``'s constants into one over the labels in ``keep_from``, when
    that does not grow them. Data-derived (traced) groups are memoized on the identity
    of their operands and their label pattern, so equal products of the same data
    (``x * x`` in K tabulated copies of a term) are one array, which merging then
    recognizes as shared rather than stacking it K times."""
    if len(group) <= 1:
        return list(group)
    labs = []
    for _, ls in group:
        for l in ls:
            if l in keep_from and l not in labs:
                labs.append(l)
    size = math.prod(space.sizes[l] for l in labs) if labs else 1
    biggest = max(int(np.prod(jnp.shape(c))) for c, _ in group)
    if size > biggest:
        return list(group)
    key = None
    if not all(T.is_concrete(c) for c, _ in group):
        ren = {}
        for _, ls in group:
            for l in ls:
                ren.setdefault(l, len(ren))
        key = (tuple((id(c), tuple(ren[l] for l in ls)) for c, ls in group),
               tuple(ren[l] for l in labs))
        hit = memo.get(key)
        if hit is not None:
            return [(hit[0], tuple(labs))]
    folded = T._einsum(list(group), tuple(labs), space.sizes)
    if key is not None:
        memo[key] = (folded, [c for c, _ in group])  # operands kept alive: ids stay valid
    return [(folded, tuple(labs))]


def _fold_consts(space, t: T.Term, final=False) -> T.Term:
    """Contract a term's constants together when that does not grow them.

    Constants the log joint closes over (concrete) and data-derived ones (traced) are
    folded separately, so that the data part of like terms stays one shared array;
    ``final=True`` folds everything into one operand (after merging)."""
    if len(t.consts) <= 1:
        return t
    other = set(t.out)
    for a in t.atoms:
        other.update(a.labels)
    memo = space.__dict__.setdefault("fold_memo", {})
    if final:
        return t.with_(consts=tuple(_fold_group(space, list(t.consts), other, memo)))
    conc = [(c, ls) for c, ls in t.consts if T.is_concrete(c)]
    data = [(c, ls) for c, ls in t.consts if not T.is_concrete(c)]
    data_labels = {l for _, ls in data for l in ls}
    conc_labels = {l for _, ls in conc for l in ls}
    conc = _fold_group(space, conc, other | data_labels, memo)
    data = _fold_group(space, data, other | conc_labels, memo)
    return t.with_(consts=tuple(conc) + tuple(data))


def _canonical(t: T.Term):
    """Relabel in order of appearance; return (signature, relabeled term)."""
    atoms = sorted(t.atoms, key=lambda a: (a.latent, a.stat, a.power, len(a.labels)))
    ren = {}
    for l in t.out:
        ren.setdefault(l, len(ren))
    for a in atoms:
        for l in a.labels:
            ren.setdefault(l, len(ren))
    for _, ls in t.consts:
        for l in ls:
            ren.setdefault(l, len(ren))
    sig_atoms = tuple((a.latent, a.stat, a.power, tuple(ren[l] for l in a.labels),
                       None if a.idx is None else tuple(np.shape(a.idx))) for a in atoms)
    sig_consts = tuple((tuple(ren[l] for l in ls), tuple(jnp.shape(c))) for c, ls in t.consts)
    return (sig_atoms, sig_consts), atoms, ren


def _idx_key(a):
    if a.idx is None:
        return None
    if T.is_concrete(a.idx):
        arr = np.asarray(a.idx)
        return (arr.shape, arr.tobytes())
    return ("traced", id(a.idx))


def _add_same_index(members):
    """Members reading the same statistic entries and sharing every constant but one
    (same object, or equal closed-over constants): add them at that one position."""
    parts = defaultdict(list)
    for m in members:
        parts[tuple(_idx_key(a) for a in m[1])].append(m)
    out = []
    for part in parts.values():
        if len(part) == 1:
            out.extend(part)
            continue
        t0 = part[0][0]
        n = len(t0.consts)
        if n == 0 or any(len(m[0].consts) != n for m in part):
            out.extend(part)
            continue
        differ = [ci for ci in range(n) if not _shared([m[0].consts[ci][0] for m in part])]
        if len(differ) > 1:
            out.extend(part)
            continue
        consts = list(t0.consts)
        if not differ:  # identical members: scale a closed-over constant (or add one)
            conc = [ci for ci in range(n) if T.is_concrete(t0.consts[ci][0])]
            if conc:
                c, ls = consts[conc[0]]
                consts[conc[0]] = (T.host(c) * len(part), ls)
            else:
                consts.append((np.asarray(float(len(part))), ()))
        else:
            ci = differ[0]
            total = None
            for t, _, _ in part:
                c = T.host(t.consts[ci][0])
                total = c if total is None else total + c
            consts[ci] = (total, t0.consts[ci][1])
        out.append((t0.with_(consts=tuple(consts)), part[0][1], part[0][2]))
    return out


def simplify_terms(space, terms):
    """Before classification: fold constants, drop zero terms, fix delta-restricted
    labels, and cancel terms of one pattern whose constants sum to zero."""
    out = []
    for t in terms:
        t = _fold_consts(space, t)
        t = T.restrict_deltas(t, space.sizes)
        if t is not None:
            out.append(T.compress(t, space.sizes))
    groups = defaultdict(list)
    for t in out:
        if not t.atoms:
            groups[("const", id(t))].append((t, None, None))
            continue
        sig, atoms, ren = _canonical(t)
        groups[sig].append((t, atoms, ren))
    result = []
    for sig, members in groups.items():
        if members[0][1] is None:
            result.append(members[0][0])
            continue
        for t, _, _ in _add_same_index(members):
            if t.consts and len(t.consts) == 1 and T.is_concrete(t.consts[0][0]) \
                    and not np.any(np.asarray(t.consts[0][0])):
                continue
            result.append(t)
    return result


def _shared(arrs):
    """Whether ``arrs`` are one value: the same object, or equal closed-over constants
    (concrete arrays are never data: the analysis sees data only as abstract values)."""
    first = arrs[0]
    if all(a is first for a in arrs):
        return True
    if all(T.is_concrete(a) for a in arrs):
        a0 = np.asarray(first)
        return all(np.shape(a) == a0.shape and np.array_equal(np.asarray(a), a0)
                   for a in arrs[1:])
    return False


def merge_terms(space, terms):
    """Merge terms of one pattern: add constants (same indices) or stack along a new label."""
    groups = defaultdict(list)
    for t in terms:
        t = _fold_consts(space, t)
        sig, atoms, ren = _canonical(t)
        groups[sig].append((t, atoms, ren))
    out = []
    for sig, members in groups.items():
        members = _add_same_index(members)
        if len(members) == 1:
            out.append(members[0][0])
            continue
        t0, atoms0, ren0 = members[0]
        # stack along a new summed label s
        s = space.fresh(len(members))
        consts = []
        for ci, (c0, ls0) in enumerate(t0.consts):
            arrs = [T.host(m[0].consts[ci][0]) for m in members]
            if _shared(arrs):  # one array for every member: no stacked copies
                consts.append((c0, ls0))
                continue
            stacked = T.xp(*arrs).stack(arrs)
            consts.append((stacked, (s,) + ls0))
        atoms = []
        for ai, a0 in enumerate(atoms0):
            if all(m[1][ai].idx is None for m in members):
                atoms.append(a0)
                continue
            idxs = [m[1][ai].idx for m in members]
            if any(i is None for i in idxs):
                # mixed: fall back to keeping the group unmerged
                atoms = None
                break
            if all(T.is_concrete(i) for i in idxs):
                stacked = np.stack([np.asarray(i) for i in idxs])
            else:
                stacked = jnp.stack([jnp.asarray(i) for i in idxs])
            atoms.append(T.Atom(a0.latent, a0.stat, (s,) + a0.labels, stacked, a0.power))
        if atoms is None:
            out.extend(m[0] for m in members)
            continue
        out.append(T.Term(tuple(consts), tuple(atoms), t0.out, t0.src))
    return out
