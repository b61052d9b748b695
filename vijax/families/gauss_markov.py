"""A Gauss-Markov chain: a Gaussian over ``T`` steps of dimension ``D`` whose precision is
block-tridiagonal (the linear-Gaussian state-space model's smoothing posterior).

Everything runs in ``O(T D^3)`` time in two ``lax.scan`` s, a Kalman filter and a
Rauch-Tung-Striebel smoother in information form. The forward scan is the block Cholesky
factorization ``Lambda = L L^T`` (``L`` lower block-bidiagonal: diagonal blocks ``L_t``,
blocks ``C_t^T`` below them) fused with the forward solve ``w = L^{-1} h``:

    L_0 L_0^T = J_00,   C_t = L_t^{-1} J_{t,t+1},   L_{t+1} L_{t+1}^T = J_{t+1,t+1} - C_t^T C_t,

and gives ``A = |w|^2 / 2 - sum_t log|L_t|``. The backward scan gives the mean and the
covariance blocks on and next to the diagonal (selected inversion), with the gains
``B_t = L_t^{-T} C_t``:

    m_t = L_t^{-T} w_t - B_t m_{t+1},   S_tt = L_t^{-T} L_t^{-1} + B_t S_{t+1,t+1} B_t^T,
    S_{t,t+1} = -B_t S_{t+1,t+1}.

Scalar states (``D = 1``) run the same recursions on the pivots ``P_t = L_t^2`` with
scalar operations only (no square roots, no matrix calls).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import ndtri

from vijax.families import start_random
from vijax.families.base import Array, ExponentialFamily, Natural, as_float_arrays, family

_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------ layout
@dataclasses.dataclass(frozen=True)
class ChainLayout:
    """Declared value shape ``shape`` <-> the chain's ``batch + (T, D)`` layout: axis
    ``time_axis`` is the chain's time, ``state_axes`` (flattened, in order) the state of one
    step, the other axes are batch (independent chains)."""

    shape: tuple
    time_axis: int
    state_axes: tuple = ()

    @property
    def batch_axes(self) -> tuple:
        used = (self.time_axis,) + tuple(self.state_axes)
        return tuple(i for i in range(len(self.shape)) if i not in used)

    @property
    def batch_shape(self) -> tuple:
        return tuple(self.shape[i] for i in self.batch_axes)

    @property
    def num_steps(self) -> int:
        return int(self.shape[self.time_axis])

    @property
    def state_dim(self) -> int:
        return int(math.prod(self.shape[i] for i in self.state_axes))

    @property
    def event_size(self) -> int:
        return self.num_steps * self.state_dim

    @property
    def trailing(self) -> bool:
        return False

    def _perm(self, lead):
        axes = self.batch_axes + (self.time_axis,) + tuple(self.state_axes)
        return tuple(range(lead)) + tuple(lead + a for a in axes)

    def to_family(self, x):
        """``(..., *shape) -> (..., *batch, T, D)``."""
        x = jnp.asarray(x)
        lead = x.ndim - len(self.shape)
        if lead < 0 or tuple(x.shape[lead:]) != tuple(self.shape):
            raise ValueError(f"expected a value of shape (..., *{self.shape}), got {x.shape}")
        x = jnp.transpose(x, self._perm(lead))
        return x.reshape(x.shape[:lead] + self.batch_shape + (self.num_steps, self.state_dim))

    def to_value(self, y):
        """``(..., *batch, T, D) -> (..., *shape)`` (inverse of :meth:`to_family`)."""
        y = jnp.asarray(y)
        lead = y.ndim - len(self.batch_shape) - 2
        sh = self._perm(0)
        y = y.reshape(y.shape[:lead] + tuple(self.shape[a] for a in sh))
        return jnp.transpose(y, tuple(range(lead)) + tuple(lead + i for i in np.argsort(sh)))

    def element_position(self, e):
        """Flat element ids of a value of ``shape`` -> ``(batch index, t, d)``."""
        c = np.unravel_index(np.asarray(e), self.shape)

        def flat(axes):
            out = np.zeros_like(np.asarray(e))
            for a in axes:
                out = out * self.shape[a] + c[a]
            return out
        return flat(self.batch_axes), c[self.time_axis], flat(self.state_axes)


# ------------------------------------------------------------------ linear algebra
def _sym(a):
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _tm(a, nd):
    """Time axis (``nd`` axes before the end) to the front."""
    return jnp.moveaxis(a, a.ndim - nd - 1, 0)


def _mv(a, v):
    """``a v`` (small ``D``: a broadcast product XLA fuses inside a scan, not a dot call)."""
    if a.shape[-1] <= _SMALL:
        return jnp.sum(a * v[..., None, :], -1)
    return jnp.einsum("...ij,...j->...i", a, v)


def _mtv(a, v):
    return _mv(jnp.swapaxes(a, -1, -2), v)


def _mm(a, b):
    if a.shape[-1] <= _SMALL:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], -2)
    return a @ b


#: state dimensions up to this use unrolled elementwise Cholesky, triangular solves and
#: products (fused by XLA inside the scans; a LAPACK or dot call per step costs microseconds)
_SMALL = 4


def _unroll(n):
    """Scalar scans over ``n`` steps: 4 steps per loop iteration where ``n`` is a multiple
    of 4 (2 where even): 10-25% faster at ``T >= 1e4`` on CPU; a remainder loop costs
    more than it saves, and 8 compiled far slower loops (XLA CPU, jax 0.10)."""
    return 4 if n % 4 == 0 else 2 if n % 2 == 0 else 1


def _cholesky(a):
    """Lower Cholesky factor (NaN where ``a`` is not positive definite)."""
    D = a.shape[-1]
    if D > _SMALL:
        return jnp.linalg.cholesky(a)
    L = [[None] * D for _ in range(D)]
    for i in range(D):
        for j in range(i + 1):
            v = a[..., i, j] - sum((L[i][k] * L[j][k] for k in range(j)), 0.0)
            L[i][j] = jnp.sqrt(v) if i == j else v / L[j][j]
    zero = jnp.zeros_like(a[..., 0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(D)], -1)
                      for i in range(D)], -2)


def _trsolve(chol, b, trans=False):
    """``L^{-1} b`` (``L^{-T} b`` with ``trans``) for ``b`` ``[..., D, K]``."""
    D = chol.shape[-1]
    if D > _SMALL:
        return solve_triangular(chol, b, lower=True, trans="T" if trans else 0)
    x = [None] * D
    order = range(D - 1, -1, -1) if trans else range(D)
    for i in order:
        ks = range(i + 1, D) if trans else range(i)
        coef = (lambda k: chol[..., k, i]) if trans else (lambda k: chol[..., i, k])
        v = b[..., i, :] - sum((coef(k)[..., None] * x[k] for k in ks), 0.0)
        x[i] = v / chol[..., i, i][..., None]
    return jnp.stack(x, -2)


def _tri_inv(chol):
    eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
    return _trsolve(chol, eye)


def precision_blocks(natural: Mapping[str, Array]) -> tuple[Array, Array]:
    """``J_tt = -2 sym(eta_xxT)`` ``[..., T, D, D]`` and ``J_{t,t+1} = -eta_pair``."""
    return -2.0 * _sym(natural["xxT"]), -natural["pair"]


def _scalar_pivots(jd, jo):
    """``D = 1``, time-major ``[T, ...]``: the pivots ``P_t = J_tt - J_{t-1,t}^2 / P_{t-1}``
    (``L_t^2``), one scan."""
    def pivot(p, xs):
        jo_t, jd_n = xs
        p = jd_n - jo_t * jo_t / p
        return p, p

    _, ps = jax.lax.scan(pivot, jd[0], (jo, jd[1:]))
    return jnp.concatenate([jd[:1], ps], 0)


def _scalar_forward(jd, jo, h):
    """``D = 1`` filter, time-major ``[T, ...]``, one scan of scalar operations over all
    ``T`` steps (``J_{-1,0} = J_{T-1,T} = 0``):

        P_t = J_tt - B_{t-1} J_{t-1,t},   k_t = h_t - B_{t-1} k_{t-1},   B_t = J_{t,t+1} / P_t.

    Returns ``r_t = 1 / P_t`` (``L_t^{-2}``), ``mk_t = k_t / P_t`` (``L_t^{-T} w_t``) and
    ``J_{t,t+1}`` padded to ``T`` steps."""
    jo_next = jnp.concatenate([jo, jnp.zeros_like(jd[:1])], 0)

    def step(c, xs):
        q, u = c  # B_{t-1} J_{t-1,t} and B_{t-1} k_{t-1}
        jd_t, h_t, jo_t = xs
        r = 1.0 / (jd_t - q)
        mk = (h_t - u) * r
        return (jo_t * jo_t * r, jo_t * mk), (r, mk)

    zero = jnp.zeros_like(jd[0])
    _, (r, mk) = jax.lax.scan(step, (zero, zero), (jd, h, jo_next),
                                 unroll=_unroll(jd.shape[0]))
    return r, mk, jo_next


def _scalar_smoothed(jd, jo, h, covariances=True):
    """``D = 1`` filter + smoother (two scans), time-major ``[T, ...]``: ``m``, ``S_tt``,
    ``S_{t,t+1}`` and ``A = sum_t (mk_t^2 P_t - log P_t) / 2`` (``mk_t^2 P_t = w_t^2``);
    backward ``m_t = mk_t - B_t m_{t+1}``, ``S_tt = r_t + B_t^2 S_{t+1}``."""
    r, mk, jo_next = _scalar_forward(jd, jo, h)
    a = 0.5 * jnp.sum(mk * mk / r + jnp.log(r), 0)
    zero = jnp.zeros_like(jd[0])
    if not covariances:
        def mean_step(m_next, xs):
            r_t, mk_t, jo_t = xs
            m = mk_t - jo_t * r_t * m_next
            return m, m

        _, m = jax.lax.scan(mean_step, zero, (r, mk, jo_next), reverse=True)
        return m, None, None, a

    def step(c, xs):
        m_next, s_next = c
        r_t, mk_t, jo_t = xs
        b = jo_t * r_t
        c = (mk_t - b * m_next, r_t + b * b * s_next)
        return c, c

    _, (m, s) = jax.lax.scan(step, (zero, zero), (r, mk, jo_next), reverse=True,
                             unroll=_unroll(jd.shape[0]))
    return m, s, -jo * r[:-1] * s[1:], a


def _block_filter(jd, jo, h=None):
    """Block Cholesky of the time-major precision fused with the forward solve: ``L_t``
    ``[T, ..., D, D]``, ``C_t = L_t^{-1} J_{t,t+1}`` ``[T-1, ..., D, D]`` and (with ``h``)
    ``w = L^{-1} h`` ``[T, ..., D]``, in one scan (NaN blocks where ``Lambda`` is not
    positive definite)."""
    l0 = _cholesky(jd[0])
    w0 = None if h is None else _trsolve(l0, h[0][..., None])[..., 0]

    def step(c, xs):
        l_prev, w_prev = c
        jo_t, jd_n, h_n = xs
        cc = _trsolve(l_prev, jo_t)
        l_next = _cholesky(_sym(jd_n - _mm(jnp.swapaxes(cc, -1, -2), cc)))
        w = None if h_n is None else _trsolve(l_next, (h_n - _mtv(cc, w_prev))[..., None])[
            ..., 0]
        return (l_next, w), (l_next, cc, w)

    _, (ls, cs, ws) = jax.lax.scan(step, (l0, w0), (jo, jd[1:], None if h is None else h[1:]))
    chol = jnp.concatenate([l0[None], ls], 0)
    return chol, cs, None if h is None else jnp.concatenate([w0[None], ws], 0)


def _factor(jd, jo, h):
    """``(L_t, C_t, w_t)`` time-major (``D = 1``: from the scalar filter)."""
    if jd.shape[-1] > 1:
        return _block_filter(jd, jo, h)
    r, mk, _ = _scalar_forward(jd[..., 0, 0], jo[..., 0, 0], h[..., 0])
    lt = jax.lax.rsqrt(r)
    return lt[..., None, None], (jo[..., 0, 0] / lt[:-1])[..., None, None], (mk * lt)[..., None]


def _backward(mk, b, ip=None):
    """The RTS smoother's backward scan: ``m_t = mk_t - B_t m_{t+1}`` and (with ``ip``)
    ``S_tt = ip_t + B_t S_{t+1,t+1} B_t^T``; ``mk`` ``[T, ..., D]``, ``B``
    ``[T-1, ..., D, D]``. Returns ``m`` and ``S`` (or None). (``D = 1`` chains smooth
    with the scalar recursions of :func:`_scalar_smoothed`.)"""
    def quad(b_, s_):
        return _sym(_mm(_mm(b_, s_), jnp.swapaxes(b_, -1, -2)))

    if ip is None:
        def mean_step(m_next, xs):
            mk_t, b_t = xs
            m = mk_t - _mv(b_t, m_next)
            return m, m

        _, ms = jax.lax.scan(mean_step, mk[-1], (mk[:-1], b), reverse=True)
        return jnp.concatenate([ms, mk[-1:]], 0), None

    def step(c, xs):
        m_next, s_next = c
        mk_t, b_t, ip_t = xs
        c = (mk_t - _mv(b_t, m_next), ip_t + quad(b_t, s_next))
        return c, c

    _, (ms, ss) = jax.lax.scan(step, (mk[-1], ip[-1]), (mk[:-1], b, ip[:-1]), reverse=True)
    return jnp.concatenate([ms, mk[-1:]], 0), jnp.concatenate([ss, ip[-1:]], 0)


def _gains(chol, cs):
    """``L_t^{-T}`` and ``B_t = L_t^{-T} C_t`` (the smoother's gains), time-major."""
    lit = jnp.swapaxes(_tri_inv(chol), -1, -2)
    return lit, _mm(lit[:-1], cs)


def _smoothed(natural, covariances=True):
    """Filter and smoother, time-major: ``m`` ``[T, ..., D]``, ``S_tt`` ``[T, ..., D, D]``,
    ``S_{t,t+1} = -B_t S_{t+1,t+1}`` ``[T-1, ..., D, D]`` (None without ``covariances``)
    and ``A = |w|^2 / 2 - log|L|``, from two scans; scalar states (``D = 1``) with scalar
    recursions (``ip_t = 1 / P_t``, ``B_t = J_{t,t+1} / P_t``, ``mk_t = k_t / P_t``)."""
    jd, jo = precision_blocks(natural)
    jd, jo, h = _tm(jd, 2), _tm(jo, 2), _tm(natural["x"], 1)
    if jd.shape[-1] == 1:
        m, s, cross, a = _scalar_smoothed(jd[..., 0, 0], jo[..., 0, 0], h[..., 0], covariances)
        if s is None:
            return m[..., None], None, None, a
        return m[..., None], s[..., None, None], cross[..., None, None], a
    chol, cs, w = _block_filter(jd, jo, h)
    a = 0.5 * jnp.sum(w * w, (0, -1)) - _logdet_half(chol)
    lit, b = _gains(chol, cs)
    ip = _mm(lit, jnp.swapaxes(lit, -1, -2)) if covariances else None
    m, s = _backward(_mv(lit, w), b, ip)
    return m, s, None if s is None else -_mm(b, s[1:]), a


def _logdet_half(chol: Array) -> Array:
    """``sum_t log|L_t| = log|Lambda| / 2`` (batch shape)."""
    return jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), (0, -1))


def _moments(m, s, cross):
    """Mean parameters (time axis back in place) from the smoothed moments."""
    xxT = s + m[..., :, None] * m[..., None, :]
    pair = cross + m[:-1, ..., :, None] * m[1:, ..., None, :]
    back = lambda a, nd: jnp.moveaxis(a, 0, a.ndim - nd - 1)  # noqa: E731
    return {"x": back(m, 1), "xxT": back(xxT, 2), "pair": back(pair, 2)}


def _factor_moments(chol, cs, m):
    """Mean parameters from a given factor and mean (covariances by the smoother)."""
    lit, b = _gains(chol, cs)
    mk = m.at[:-1].add(_mv(b, m[1:]))  # m_t = mk_t - B_t m_{t+1}
    _, s = _backward(mk, b, _mm(lit, jnp.swapaxes(lit, -1, -2)))
    return _moments(m, s, -_mm(b, s[1:]))


def _draw(chol, cs, eps):
    """``L^{-T} eps`` (time-major ``eps`` ``[T, *sample, ..., D]``): the smoother's mean
    recursion with ``mk_t = L_t^{-T} eps_t``."""
    lit, b = _gains(chol, cs)
    ns = eps.ndim - chol.ndim + 1
    grow = lambda a: a.reshape(a.shape[:1] + (1,) * ns + a.shape[1:])  # noqa: E731
    return _backward(_mv(grow(lit), eps), grow(b))[0]


def _dominant(jd, jo, h):
    """Every row of ``Lambda`` strictly diagonally dominant with a positive diagonal (then
    ``Lambda`` is positive definite, by Gershgorin) and ``h`` finite, per batch: one
    reduction, no scan."""
    pad = [(0, 0)] * (jo.ndim - 3)
    if jd.shape[-1] == 1:  # one fused pass over the scalars
        a = jnp.abs(jo[..., 0, 0])
        radius = jnp.pad(a, pad + [(0, 1)]) + jnp.pad(a, pad + [(1, 0)])
        d = jd[..., 0, 0]
        return jnp.all(jnp.isfinite(radius + d + h[..., 0]) & (d > radius), -1)
    diag = jnp.diagonal(jd, axis1=-2, axis2=-1)
    ao = jnp.abs(jo)
    radius = (jnp.sum(jnp.abs(jd), -1) - jnp.abs(diag)
              + jnp.pad(jnp.sum(ao, -1), pad + [(0, 1), (0, 0)])
              + jnp.pad(jnp.sum(ao, -2), pad + [(1, 0), (0, 0)]))
    return jnp.all(jnp.isfinite(radius + diag + h) & (diag > radius), (-2, -1))


def _positive_definite(jd, jo):
    """``Lambda`` positive definite (every pivot positive and finite), per batch."""
    jd, jo = _tm(jd, 2), _tm(jo, 2)
    if jd.shape[-1] == 1:
        p = _scalar_pivots(jd[..., 0, 0], jo[..., 0, 0])
        return jnp.all(jnp.isfinite(p) & (p > 0), 0)
    chol, _, _ = _block_filter(jd, jo)
    d = jnp.diagonal(chol, axis1=-2, axis2=-1)
    return jnp.all(jnp.isfinite(chol) & (d[..., None] > 0), (0, -2, -1))


def _chol_from_raw(raw: Array) -> Array:
    """``tril(R, -1) + diag(exp(diag R))``."""
    d = jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
    return jnp.tril(raw, -1) + d[..., None, :] * jnp.eye(raw.shape[-1], dtype=raw.dtype)


def _h_from(j_diag, j_off, m):
    """``h = Lambda m`` for a block-tridiagonal ``Lambda`` (``[..., T, D]``)."""
    h = _mv(j_diag, m)
    h = h.at[..., :-1, :].add(_mv(j_off, m[..., 1:, :]))
    return h.at[..., 1:, :].add(_mtv(j_off, m[..., :-1, :]))


# ------------------------------------------------------------------ family
@family
class GaussMarkov(ExponentialFamily):
    """Gauss-Markov chain over ``x = (x_0, ..., x_{T-1})``, ``x_t`` in ``R^D``, with
    block-tridiagonal precision ``Lambda`` (blocks ``J_tt`` and ``J_{t,t+1}``).

    Statistics ``T(x) = {"x": x_t [..., T, D], "xxT": x_t x_t^T [..., T, D, D],
    "pair": x_t x_{t+1}^T [..., T-1, D, D]}``; natural parameters
    ``eta = {"x": h, "xxT": -J_tt / 2, "pair": -J_{t,t+1}}`` (``h = Lambda m``; a
    non-symmetric ``"xxT"`` is symmetrized); ``log h(x) = -T D log(2 pi) / 2``;

    .. math:: A(\\eta) = \\tfrac12 h^T \\Lambda^{-1} h - \\tfrac12 \\log|\\Lambda|,

    computed with the mean parameters (``E[x_t]``, ``E[x_t x_t^T]``,
    ``E[x_t x_{t+1}^T]``), the entropy ``T D (1 + log 2 pi) / 2 - log|Lambda| / 2`` and
    reparameterized draws ``m + L^{-T} eps`` in ``O(T D^3)`` (see the module docstring).

    ``layout`` (static, optional): a :class:`ChainLayout` from the latent's declared shape;
    with it :meth:`mean`, :meth:`variance`, :meth:`sample` and :meth:`log_prob` use values
    of the declared shape (``natural`` and the properties stay ``batch + (T, D)``).

    Example:
        >>> import jax.numpy as jnp
        >>> q = GaussMarkov.from_blocks(jnp.zeros((3, 1)), 2.0 * jnp.ones((3, 1, 1)),
        ...                             -jnp.ones((2, 1, 1)))
        >>> [round(v, 4) for v in q.variance()[:, 0].tolist()]
        [0.75, 1.0, 0.75]
    """

    layout: Optional[ChainLayout] = None

    stat_names = ("x", "xxT", "pair")
    stat_event_ndims = {"x": 2, "xxT": 3, "pair": 3}
    event_ndim = 2
    support = "real"
    walk_stats = {("x", 1.0): "x", ("x", 2.0): "xxT"}
    #: for the compiler: the statistic holding ``x_t x_{t+1}^T`` (a chain of neighbours)
    chain_pair_stat = "pair"

    def with_layout(self, layout):
        return dataclasses.replace(self, layout=layout)

    def _value(self, y):
        return y if self.layout is None else self.layout.to_value(y)

    def _flat(self, x):
        return x if self.layout is None else self.layout.to_family(x)

    # ------------------------------------------------------------ statistics
    @classmethod
    def stats(cls, x: Array) -> Natural:
        (x,) = as_float_arrays(x)
        return {"x": x, "xxT": x[..., :, None] * x[..., None, :],
                "pair": x[..., :-1, :, None] * x[..., 1:, None, :]}

    @classmethod
    def chain_stat_shape(cls, layout: ChainLayout, stat: str) -> tuple:
        """Shape of statistic ``stat`` for a latent laid out by ``layout``."""
        b, T, D = layout.batch_shape, layout.num_steps, layout.state_dim
        return {"x": b + (T, D), "xxT": b + (T, D, D), "pair": b + (T - 1, D, D)}[stat]

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        (x,) = as_float_arrays(x)
        return jnp.full(x.shape[:-2], -0.5 * x.shape[-1] * x.shape[-2] * _LOG_2PI, x.dtype)

    # ------------------------------------------------------------ log-normalizer
    @classmethod
    def _parts(cls, natural):
        """Time-major factor ``L_t``, ``C_t``, mean and ``A`` (filter + mean smoother)."""
        jd, jo = precision_blocks(natural)
        chol, cs, w = _factor(_tm(jd, 2), _tm(jo, 2), _tm(natural["x"], 1))
        a = 0.5 * jnp.sum(w * w, (0, -1)) - _logdet_half(chol)
        lit, b = _gains(chol, cs)
        return chol, cs, _backward(_mv(lit, w), b)[0], a

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        """From the forward (filter) scan alone."""
        jd, jo = precision_blocks(natural)
        jd, jo, h = _tm(jd, 2), _tm(jo, 2), _tm(natural["x"], 1)
        if jd.shape[-1] == 1:
            r, mk, _ = _scalar_forward(jd[..., 0, 0], jo[..., 0, 0], h[..., 0])
            return 0.5 * jnp.sum(mk * mk / r + jnp.log(r), 0)
        chol, _, w = _block_filter(jd, jo, h)
        return 0.5 * jnp.sum(w * w, (0, -1)) - _logdet_half(chol)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        return cls.mean_and_log_normalizer(natural)[0]

    @classmethod
    def mean_and_log_normalizer(cls, natural):
        """Kalman filter (``A`` from its pass) + RTS smoother: two scans."""
        m, s, cross, a = _smoothed(natural)
        return _moments(m, s, cross), a

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        """A Markov chain factorizes as ``prod_t p(x_t, x_{t+1}) / prod_{0<t<T-1} p(x_t)``,
        so ``Lambda`` is the sum of the inverse pairwise covariances minus the inverse
        interior marginal covariances (embedded in their blocks)."""
        m = mean["x"]
        D = m.shape[-1]
        s = _sym(mean["xxT"]) - m[..., :, None] * m[..., None, :]
        inv_s = jnp.linalg.inv(s)
        if m.shape[-2] == 1:
            jd, jo = inv_s, mean["pair"]
        else:
            c = mean["pair"] - m[..., :-1, :, None] * m[..., 1:, None, :]
            joint = jnp.concatenate([jnp.concatenate([s[..., :-1, :, :], c], -1),
                                     jnp.concatenate([jnp.swapaxes(c, -1, -2),
                                                      s[..., 1:, :, :]], -1)], -2)
            p = jnp.linalg.inv(_sym(joint))
            jd = jnp.zeros_like(s).at[..., :-1, :, :].add(p[..., :D, :D])
            jd = jd.at[..., 1:, :, :].add(p[..., D:, D:])
            jd = jd.at[..., 1:-1, :, :].add(-inv_s[..., 1:-1, :, :])
            jo = p[..., :D, D:]
        return {"x": _h_from(jd, jo, m), "xxT": -0.5 * jd, "pair": -jo}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        """``Lambda`` positive definite and ``h`` finite. A strictly diagonally dominant
        ``Lambda`` (checked without a scan) is; otherwise the pivots decide (one scan)."""
        jd, jo = precision_blocks(natural)
        dom = _dominant(jd, jo, natural["x"])

        def exact(nat):  # the blocks are formed in the branch (no pass when it is not taken)
            return (_positive_definite(*precision_blocks(nat))
                    & jnp.all(jnp.isfinite(nat["x"]), (-2, -1)))

        return jax.lax.cond(jnp.all(dom), lambda _: dom, exact, dict(natural))

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        return cls.is_valid_natural(cls.natural_from_mean(mean))

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_blocks(cls, loc: Array, j_diag: Array, j_off: Array) -> "GaussMarkov":
        """From the mean ``[..., T, D]`` and the precision blocks ``J_tt`` ``[..., T, D, D]``
        and ``J_{t,t+1}`` ``[..., T-1, D, D]``."""
        loc, j_diag, j_off = as_float_arrays(loc, j_diag, j_off)
        return cls.from_natural({"x": _h_from(_sym(j_diag), j_off, loc),
                                 "xxT": -0.5 * j_diag, "pair": -j_off})

    # ------------------------------------------------------------ usual quantities
    @property
    def num_steps(self) -> int:
        return self.natural["x"].shape[-2]

    @property
    def state_dim(self) -> int:
        return self.natural["x"].shape[-1]

    @property
    def batch_shape(self) -> tuple:
        return tuple(jnp.shape(self.natural["x"])[:-2])

    @property
    def loc(self) -> Array:
        """``E[x_t]``, ``[..., T, D]``."""
        return self.mean_parameters()["x"]

    @property
    def marginal_cov(self) -> Array:
        """``Cov[x_t]``, ``[..., T, D, D]``."""
        mu = self.mean_parameters()
        return mu["xxT"] - mu["x"][..., :, None] * mu["x"][..., None, :]

    @property
    def cross_cov(self) -> Array:
        """``Cov[x_t, x_{t+1}]``, ``[..., T-1, D, D]``."""
        mu = self.mean_parameters()
        return mu["pair"] - mu["x"][..., :-1, :, None] * mu["x"][..., 1:, None, :]

    def precision_dense(self) -> Array:
        """The assembled ``[..., T D, T D]`` precision (for checks on short chains)."""
        from vijax.families.mvn import check_dense_size
        T, D = self.num_steps, self.state_dim
        check_dense_size("GaussMarkov.precision_dense", self.batch_shape, T * D, self.dtype,
                         copies=1)
        jd, jo = precision_blocks(self.natural)
        eye = jnp.eye(T, dtype=self.dtype)
        lam = jnp.einsum("ts,...tij->...tisj", eye, jd)
        rows, cols = eye[:-1], jnp.eye(T, k=1, dtype=self.dtype)[:-1]
        up = jnp.einsum("tr,ts,...tij->...risj", rows, cols, jo)  # block (t, t+1)
        lam = lam + up + jnp.einsum("...risj->...sjri", up)
        return lam.reshape(self.batch_shape + (T * D, T * D))

    def to_dense(self):
        """The same distribution as a :class:`~vijax.families.MultivariateNormal` over
        the flattened ``T D`` steps (short chains; checks the memory it would need)."""
        from vijax.families.mvn import MultivariateNormal
        return MultivariateNormal({"x": self.natural["x"].reshape(self.batch_shape + (-1,)),
                                   "xxT": -0.5 * self.precision_dense()})

    def mean(self) -> Array:
        return self._value(self.loc)

    def variance(self) -> Array:
        return self._value(jnp.diagonal(self.marginal_cov, axis1=-2, axis2=-1))

    def quantile(self, q: Array) -> Array:
        """Per-element quantiles of the marginal normals, ``jnp.shape(q)`` + value shape."""
        q = self._quantile_shape(q, (1, 1))
        var = jnp.diagonal(self.marginal_cov, axis1=-2, axis2=-1)
        return self._value(self.loc + jnp.sqrt(var) * ndtri(q))

    def usual_params(self) -> dict[str, Array]:
        return {"loc": self.loc, "marginal_cov": self.marginal_cov}

    def expected_log_base_measure(self) -> Array:
        return self._constant(-0.5 * self.num_steps * self.state_dim * _LOG_2PI)

    def entropy(self) -> Array:
        jd, jo = precision_blocks(self.natural)
        jd, jo = _tm(jd, 2), _tm(jo, 2)
        if jd.shape[-1] == 1:
            logdet_half = 0.5 * jnp.sum(jnp.log(_scalar_pivots(jd[..., 0, 0], jo[..., 0, 0])), 0)
        else:
            logdet_half = _logdet_half(_block_filter(jd, jo)[0])
        n = self.num_steps * self.state_dim
        return 0.5 * n * (1.0 + _LOG_2PI) - logdet_half

    def log_prob(self, x: Array) -> Array:
        x = self._flat(jnp.asarray(x))
        return (self.inner(self.natural, self.stats(x)) + self.log_base_measure(x)
                - self.log_normalizer(self.natural))

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """``m + L^{-T} eps`` (reparameterized), ``sample_shape`` + value shape."""
        chol, cs, m, _ = self._parts(self.natural)
        return self._value(_sample(key, sample_shape, chol, cs, m))

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """The mean (the mode of a Gaussian), valid where ``Lambda`` is positive definite."""
        m = _smoothed(natural, covariances=False)[0]
        x = jnp.moveaxis(m, 0, m.ndim - 2)
        valid = cls.is_valid_natural(natural)
        return x, jnp.broadcast_to(valid[..., None, None], x.shape)

    # ------------------------------------------------------------ starts, gradient path
    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "GaussMarkov":
        """Unit precision (independent steps) around small random means."""
        lay = info.layout
        b, T, D = lay.batch_shape, lay.num_steps, lay.state_dim
        loc = 0.1 * start_random.normal(key, b + (T, D), dtype)
        eye = jnp.broadcast_to(jnp.eye(D, dtype=dtype), b + (T, D, D))
        return cls({"x": loc, "xxT": -0.5 * eye, "pair": jnp.zeros(b + (T - 1, D, D), dtype)})

    def to_unconstrained(self) -> dict[str, Array]:
        """``{"loc": m, "chol": R_t, "off": C_t^T}``: the precision's block Cholesky factor,
        diagonal blocks ``L_t = tril(R_t, -1) + diag(exp(diag R_t))`` and sub-diagonal
        blocks ``C_t^T`` (free); every real value gives a positive-definite ``Lambda``."""
        chol, cs, m, _ = self._parts(self.natural)
        d = jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1))
        raw = jnp.tril(chol, -1) + d[..., None, :] * jnp.eye(chol.shape[-1], dtype=d.dtype)
        back = lambda a, nd: jnp.moveaxis(a, 0, a.ndim - nd - 1)  # noqa: E731
        return {"loc": back(m, 1), "chol": back(raw, 2),
                "off": back(jnp.swapaxes(cs, -1, -2), 2)}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "GaussMarkov":
        """``Lambda = L L^T``: ``J_tt = L_t L_t^T + C_{t-1}^T C_{t-1}``,
        ``J_{t,t+1} = L_t C_t``."""
        lo = _chol_from_raw(u["chol"])
        b = u["off"]  # C_t^T
        c = jnp.swapaxes(b, -1, -2)
        jd = lo @ jnp.swapaxes(lo, -1, -2)
        jd = jd.at[..., 1:, :, :].add(b @ c)
        jo = lo[..., :-1, :, :] @ c
        return cls({"x": _h_from(jd, jo, u["loc"]), "xxT": -0.5 * jd, "pair": -jo})

    @classmethod
    def factor_from_unconstrained(cls, u: Mapping[str, Array]):
        """Mean parameters, entropy and sampler straight from the factor (no
        refactorization): ``H = T D (1 + log 2 pi) / 2 - sum diag R``."""
        chol = _tm(_chol_from_raw(u["chol"]), 2)
        cs = _tm(jnp.swapaxes(u["off"], -1, -2), 2)
        m = _tm(u["loc"], 1)
        mean = _factor_moments(chol, cs, m)
        n = u["loc"].size
        entropy = 0.5 * n * (1.0 + _LOG_2PI) - jnp.sum(
            jnp.diagonal(u["chol"], axis1=-2, axis2=-1))
        return mean, entropy, lambda key, shape: _sample(key, shape, chol, cs, m)


def _sample(key, sample_shape, chol, cs, m):
    """Draws ``[*sample, ..., T, D]`` from the time-major factor and mean."""
    shape = (m.shape[0],) + tuple(sample_shape) + m.shape[1:]
    eps = jax.random.normal(key, shape, m.dtype)
    x = m.reshape((m.shape[0],) + (1,) * len(tuple(sample_shape)) + m.shape[1:]) + _draw(
        chol, cs, eps)
    return jnp.moveaxis(x, 0, x.ndim - 2)
