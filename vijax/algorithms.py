"""The algorithms as ``init``/``step`` pairs (:class:`vijax.Algorithm`), for users who
write their own loop (``lax.scan``, ``vmap`` over datasets) or call :func:`vijax.run`.

Each constructor returns an :class:`~vijax.inference.driver.Algorithm` whose ``init`` and
``step`` are pure and jittable; ``vj.cavi``, ``vj.fit_gradient``, ``vj.em`` and
``vj.laplace`` are the same algorithms run by :func:`vijax.run`.

- ``cavi(...)``: coordinate ascent, one sweep per step (:mod:`vijax.inference.cavi`).
- ``gradient(...)``: one optimizer step on the ELBO (:mod:`vijax.inference.gradient`).
- ``em(...)``: one M-step plus E-step (:mod:`vijax.inference.em`).
- ``laplace(...)``: one optimizer step towards the mode (:mod:`vijax.inference.laplace`).
"""

from __future__ import annotations

import importlib

from vijax.inference.driver import Algorithm, Info, Run, run

_WHERE = {"cavi": "vijax.inference.cavi", "gradient": "vijax.inference.gradient",
          "em": "vijax.inference.em", "laplace": "vijax.inference.laplace"}

__all__ = ["Algorithm", "Info", "Run", "run", *_WHERE]


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), "algorithm")
    raise AttributeError(f"module 'vijax.algorithms' has no attribute {name!r}")
