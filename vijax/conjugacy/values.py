"""The values a conjugacy walk carries, besides constants.

A value in the walk's environment is one of

- a concrete array (data, hyper-parameters; may be a tracer of an outer transform),
- :class:`~vijax.conjugacy.walker.Lazy`, a constant ``broadcast_in_dim`` kept
  unmaterialized,
- :class:`~vijax.conjugacy.terms.Sym`, a latent-dependent sum of einsum terms,
- :class:`Poison`, a latent-dependent value with no multilinear form (the reasons are
  kept, with its value at the canonical point, carried along but never used to decide:
  a predicate on a Poison is refused, see :mod:`vijax.conjugacy.intervals`).

Sym and Poison are the *symbolic* values: an equation with one of them as input goes to
a rule; the others are constants, folded by the walker.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vijax.conjugacy import terms as T


@dataclasses.dataclass(frozen=True)
class Reason:
    """Why a latent-dependent value has no multilinear form."""

    latents: frozenset
    primitive: str
    source: str | None
    detail: str


@dataclasses.dataclass(frozen=True)
class Poison:
    """Non-multilinear value: ``good`` (Sym or None) + a part known only at the point."""

    shape: tuple
    dtype: Any
    good: Any
    point: Any
    reasons: tuple


def is_sym(v):
    return isinstance(v, T.Sym)


def is_symbolic(v):
    return isinstance(v, (T.Sym, Poison))


def latents_of(invals):
    """Names of the latents that the symbolic values among ``invals`` depend on."""
    out = set()
    for v in invals:
        if isinstance(v, T.Sym):
            out |= v.latents()
        elif isinstance(v, Poison):
            for r in v.reasons:
                out |= set(r.latents)
            if v.good is not None:
                out |= v.good.latents()
    return out
