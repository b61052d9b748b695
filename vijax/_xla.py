"""``jax.jit`` for vijax's compiled programs, with XLA's compile options per backend.

On the CPU, XLA's newer MLIR fusion emitters take 1.5-3x longer to compile vijax's fit
programs than its classic emitters and run them no faster (GMM CAVI at N=1e5, D=10,
K=10, float64: compile 1.5 s against 1.0 s, 100 sweeps 0.59 s against 0.57 s, measured
side by side in one process; a gradient fit's program 4.9 s against 1.9 s). A user pays
that compile on every first fit, so vijax's programs ask for the classic emitters on the
CPU (``compiler_options``, per program: the user's own jitted code is not affected).
Other backends get ``jax.jit``'s defaults. ``VIJAX_XLA_DEFAULTS=1`` in the environment
turns the choice off.

The backend is read at the first call (not at import, which must not start one).
"""

from __future__ import annotations

import os

import jax

from vijax import _compat

#: the compile options of vijax's programs on the CPU backend
CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


_SUPPORTED: list = []  # [bool] once probed


def _supported() -> bool:
    """Whether this XLA knows :data:`CPU_OPTIONS` (probed once with a one-op program, so
    that an XLA release without the flag gets its defaults, not a failed fit)."""
    if not _SUPPORTED:
        try:
            jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(1.0).compile()
            _SUPPORTED.append(True)
        except Exception:  # noqa: BLE001 - any refusal means: use XLA's defaults
            _SUPPORTED.append(False)
    return _SUPPORTED[0]


def compiler_options() -> dict | None:
    """The options for programs compiled now: :data:`CPU_OPTIONS` on the CPU backend
    (unless ``VIJAX_XLA_DEFAULTS`` is set, or this XLA does not know them), else None
    (XLA's defaults)."""
    if os.environ.get("VIJAX_XLA_DEFAULTS") or jax.default_backend() != "cpu":
        return None
    return dict(CPU_OPTIONS) if _supported() else None


class Jit:
    """``jax.jit(fun, **kwargs)`` built at its first use with :func:`compiler_options`;
    ``lower``, ``trace``, ``eval_shape``, ``_cache_size`` ... are the jitted function's.
    Called inside another trace (the user's ``jit``, or one vijax program inside
    another), it is a plain ``jax.jit`` (JAX takes compile options only at top level;
    the outer program's options apply)."""

    def __init__(self, fun, **kwargs):
        self._fun, self._kwargs, self._jitted, self._nested = fun, kwargs, None, None
        self.__wrapped__ = fun
        self.__doc__ = getattr(fun, "__doc__", None)

    def _get(self):
        if self._jitted is None:
            self._jitted = jax.jit(self._fun, compiler_options=compiler_options(),
                                   **self._kwargs)
        return self._jitted

    def __call__(self, *args, **kwargs):
        if _compat.trace_state_clean() is True:
            return self._get()(*args, **kwargs)
        if self._nested is None:
            self._nested = jax.jit(self._fun, **self._kwargs)
        return self._nested(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun=None, **kwargs):
    """:class:`Jit` of ``fun``; usable as ``jit(f, static_argnames=...)`` or as a
    decorator ``@jit`` / ``@functools.partial(jit, static_argnums=...)``."""
    if fun is None:
        return lambda f: Jit(f, **kwargs)
    return Jit(fun, **kwargs)
