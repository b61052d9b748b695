"""Optional-cost modules imported on first use: ``optax`` costs ~0.1 s of every
``import vijax``, and only the gradient, EM, Laplace and KL-projection fits need it."""

from __future__ import annotations

import importlib


class LazyModule:
    """Stands for module ``name``; the first attribute read imports it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self):
        return f"<lazy module {self._name!r}>"


optax = LazyModule("optax")
