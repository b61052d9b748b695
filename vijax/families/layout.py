"""Where a latent's declared value shape meets a family's (batch, event) layout.

A dense Gaussian factor over the coupled axes of a latent of shape ``S`` keeps its
parameters as ``batch_shape + (E,)`` (statistic ``x``) and ``batch_shape + (E, E)``
(``xxT``): the *event axes* of ``S`` (those along which the log joint couples elements)
are moved last and flattened into one axis of size ``E``, the other (batch) axes keep
their order in front. :class:`EventLayout` is that map and its inverse, so that means,
variances and draws come back in the declared shape ``S`` (and a draw can be fed back
into the log joint).

Example:
    >>> import jax.numpy as jnp
    >>> lay = EventLayout((3, 2), (0,))  # coupled along the 3-axis: two 3-dim events
    >>> lay.batch_shape, lay.event_size
    ((2,), 3)
    >>> v = jnp.arange(6.0).reshape(3, 2)
    >>> lay.to_family(v).tolist()
    [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    >>> bool((lay.to_value(lay.to_family(v)) == v).all())
    True
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class EventLayout:
    """The event axes of a latent of declared shape ``shape`` (static, hashable).

    Attributes:
        shape: the latent's declared value shape.
        event_axes: the axes of ``shape`` forming one event, in increasing order.
    """

    shape: tuple
    event_axes: tuple

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "event_axes", tuple(sorted(int(a) for a in self.event_axes)))

    @property
    def batch_axes(self) -> tuple:
        return tuple(i for i in range(len(self.shape)) if i not in self.event_axes)

    @property
    def batch_shape(self) -> tuple:
        return tuple(self.shape[i] for i in self.batch_axes)

    @property
    def event_shape(self) -> tuple:
        return tuple(self.shape[i] for i in self.event_axes)

    @property
    def event_size(self) -> int:
        return int(math.prod(self.event_shape))

    @property
    def trailing(self) -> bool:
        """The event axes are the last ones (the layout is a plain reshape)."""
        n = len(self.event_axes)
        return self.event_axes == tuple(range(len(self.shape) - n, len(self.shape)))

    def _perm(self, lead):
        return tuple(range(lead)) + tuple(lead + a for a in self.batch_axes + self.event_axes)

    def to_family(self, x):
        """``(..., *shape) -> (..., *batch_shape, E)`` (leading axes kept)."""
        x = jnp.asarray(x)
        lead = x.ndim - len(self.shape)
        if tuple(x.shape[lead:]) != self.shape:
            raise ValueError(f"expected a value of shape (..., *{self.shape}), got {x.shape}")
        if not self.trailing:
            x = jnp.transpose(x, self._perm(lead))
        return jnp.reshape(x, x.shape[:lead] + self.batch_shape + (self.event_size,))

    def to_value(self, y):
        """``(..., *batch_shape, E) -> (..., *shape)`` (inverse of :meth:`to_family`)."""
        y = jnp.asarray(y)
        lead = y.ndim - len(self.batch_shape) - 1
        if lead < 0 or tuple(y.shape[lead:]) != self.batch_shape + (self.event_size,):
            raise ValueError(f"expected an array of shape (..., *{self.batch_shape}, "
                             f"{self.event_size}), got {y.shape}")
        y = jnp.reshape(y, y.shape[:lead] + self.batch_shape + self.event_shape)
        if self.trailing:
            return y
        return jnp.transpose(y, tuple(np.argsort(self._perm(lead))))

    def element_position(self, e):
        """Flat element ids of a value of ``shape`` -> ``(batch index, event position)``
        in the family's layout (``b * E + p`` is the entry of the ``x`` statistic).
        Works on numpy arrays and on traced index arrays."""
        xp = np if isinstance(e, (np.ndarray, np.generic, int)) else jnp
        e = xp.asarray(e)
        if not self.shape:
            return xp.zeros_like(e), xp.zeros_like(e)
        coords = xp.unravel_index(e, self.shape)

        def flat(axes):
            out = xp.zeros_like(e)
            for a in axes:
                out = out * self.shape[a] + coords[a]
            return out
        return flat(self.batch_axes), flat(self.event_axes)
