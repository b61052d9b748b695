"""The registry of families: the one place that maps family names to classes.

Everything else asks the registry by support or by name and then calls the class; no
module outside this one branches on a family's name. A family enters with one line,
``register(MyFamily)`` (see :mod:`vijax.families`, which registers the built-in ones in
order). Order matters twice:

- :func:`default_family` is the first family registered for a support (the gradient
  path's q for a latent the compiler gives no family);
- :func:`conjugate_families` lists, in order, the families the compiler may pick for a
  support: it takes the first whose walk statistics cover every way the log joint uses
  the latent (so Gamma, registered before InverseGamma, wins for a latent seen only
  as ``log tau``).

Example:
    >>> from vijax.families import registry
    >>> registry.default_family("positive").__name__
    'Gamma'
    >>> [c.__name__ for c in registry.conjugate_families("real")]
    ['Normal', 'MultivariateNormal', 'GaussMarkov']
"""

from __future__ import annotations

import contextlib

#: name -> family class, in registration order (also :data:`vijax.families.FAMILIES`)
FAMILIES: dict[str, type] = {}


def register(cls: type) -> type:
    """Add a family class under its ``__name__`` (usable as a class decorator).

    The class declares its support kind (``support``), its statistics and, for the
    compiler, ``walk_stats`` (see :class:`~vijax.families.base.ExponentialFamily`).
    """
    from vijax.supports import SUPPORTS
    if cls.support not in SUPPORTS:
        raise ValueError(f"register: {cls.__name__}.support is {cls.support!r}; expected "
                         f"one of {tuple(SUPPORTS)}")
    FAMILIES[cls.__name__] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a family (tests that register their own)."""
    FAMILIES.pop(name, None)


@contextlib.contextmanager
def registered(cls: type):
    """Register ``cls`` for the duration of a ``with`` block."""
    previous = FAMILIES.get(cls.__name__)
    register(cls)
    try:
        yield cls
    finally:
        if previous is None:
            unregister(cls.__name__)
        else:
            FAMILIES[cls.__name__] = previous


@contextlib.contextmanager
def without(name: str):
    """Leave the family ``name`` out for the duration of a ``with`` block (e.g.
    ``without("GaussMarkov")``: the compiler keeps a chain's dense Gaussian)."""
    previous = dict(FAMILIES)
    FAMILIES.pop(name, None)
    try:
        yield
    finally:
        FAMILIES.clear()
        FAMILIES.update(previous)


def get(name: str) -> type:
    """The family class registered as ``name``."""
    try:
        return FAMILIES[name] if name in FAMILIES else JOINT_FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; registered: {tuple(FAMILIES)}") from None


def families_for(kind: str) -> tuple:
    """Every family on the support ``kind``, in registration order."""
    return tuple(c for c in FAMILIES.values() if c.support == kind)


def default_family(kind: str) -> type | None:
    """The first family registered for the support ``kind`` (None if there is none)."""
    found = families_for(kind)
    return found[0] if found else None


def conjugate_families(kind: str) -> tuple:
    """The families the compiler may pick for a latent of support ``kind`` (those that
    declare ``walk_stats``), in registration order."""
    return tuple(c for c in families_for(kind) if c.walk_stats)


def walk_forms(kind: str) -> dict:
    """``(stat, power) -> family statistic`` over the conjugate families of ``kind``:
    every single-atom form a latent of this support may take in a conjugate log joint."""
    out = {}
    for c in conjugate_families(kind):
        for key, stat in c.walk_stats.items():
            out.setdefault(key, stat)
    return out


def accepts_products(kind: str) -> bool:
    """Some family of ``kind`` has a statistic for products ``x_i x_j`` of two elements
    (``pair_stat``: the square of one element, or a dense covariance)."""
    return any(c.pair_stat for c in conjugate_families(kind))


def select(kind: str, forms, coupled: bool = False) -> type | None:
    """The first conjugate family of ``kind`` whose ``walk_stats`` hold every
    ``(stat, power)`` in ``forms`` (and that couples elements, when ``coupled``)."""
    forms = set(forms)
    for c in conjugate_families(kind):
        if forms <= set(c.walk_stats) and (c.couples_elements or not coupled):
            return c
    return None


def chain_family(kind: str) -> type | None:
    """The first conjugate family of ``kind`` for a chain of neighbouring elements (one
    declaring ``chain_pair_stat``, the statistic of ``one_hot(z_t) one_hot(z_{t+1})^T``),
    or None."""
    found = [c for c in conjugate_families(kind) if getattr(c, "chain_pair_stat", None)]
    return found[0] if found else None


__all__ = ["FAMILIES", "register", "unregister", "registered", "get", "families_for",
           "default_family", "conjugate_families", "walk_forms", "accepts_products",
           "select"]
__all__ += ["chain_family", "without"]


#: joint families of declared blocks (``Model(..., blocks=[["mu", "tau"]])``), by name:
#: kept apart from :data:`FAMILIES` so that the compiler never picks one for a single
#: latent (:mod:`vijax.conjugacy.joint_blocks` matches blocks against these, in order)
JOINT_FAMILIES: dict[str, type] = {}


def register_joint(cls: type) -> type:
    """Add a joint family (declaring ``roles``, ``role_supports``, ``role_families``,
    ``joint_stats`` and ``joint_kind``) under its ``__name__``."""
    JOINT_FAMILIES[cls.__name__] = cls
    return cls


def joint_families() -> tuple:
    """The joint families, in registration order."""
    return tuple(JOINT_FAMILIES.values())


__all__ += ["JOINT_FAMILIES", "register_joint", "joint_families"]
