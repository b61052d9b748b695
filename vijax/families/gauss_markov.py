"""A Gauss-Markov chain: a Gaussian over ``T`` steps of dimension ``D`` whose precision is
block-tridiagonal (the linear-Gaussian state-space model's smoothing posterior).

Everything runs in ``O(T D^3)`` time by one block-tridiagonal Cholesky factorization
``Lambda = L L^T`` (``L`` lower block-bidiagonal: diagonal blocks ``L_t``, blocks
``C_t^T`` below them) written as ``lax.scan`` s:

    L_0 L_0^T = J_00,   C_t = L_t^{-1} J_{t,t+1},   L_{t+1} L_{t+1}^T = J_{t+1,t+1} - C_t^T C_t.

The mean solves ``L L^T m = h`` (a forward and a backward sweep) and the covariance blocks
on and next to the diagonal come from the backward recursion of selected inversion (the
Rauch-Tung-Striebel smoother in information form):

    S_{t,t+1} = -L_t^{-T} C_t S_{t+1,t+1},   S_tt = L_t^{-T} L_t^{-1} - S_{t,t+1} C_t^T L_t^{-1}.
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
    return jnp.einsum("...ij,...j->...i", a, v)


def _mtv(a, v):
    return jnp.einsum("...ji,...j->...i", a, v)


#: state dimensions up to this use unrolled elementwise Cholesky and triangular solves
#: (fused by XLA inside the scans; a LAPACK call per step costs microseconds)
_SMALL = 4


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


def _trsolve_vec(chol, v, trans=False):
    return _trsolve(chol, v[..., None], trans)[..., 0]


def _tri_inv(chol):
    eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
    return _trsolve(chol, eye)


def precision_blocks(natural: Mapping[str, Array]) -> tuple[Array, Array]:
    """``J_tt = -2 sym(eta_xxT)`` ``[..., T, D, D]`` and ``J_{t,t+1} = -eta_pair``."""
    return -2.0 * _sym(natural["xxT"]), -natural["pair"]


def factorize(j_diag: Array, j_off: Array) -> tuple[Array, Array]:
    """Block Cholesky of the block-tridiagonal precision, time-major: ``L_t``
    ``[T, ..., D, D]`` and ``C_t = L_t^{-1} J_{t,t+1}`` ``[T-1, ..., D, D]``
    (NaN blocks where the precision is not positive definite)."""
    jd, jo = _tm(j_diag, 2), _tm(j_off, 2)
    l0 = _cholesky(jd[0])

    def step(l_prev, xs):
        jo_t, jd_next = xs
        c = _trsolve(l_prev, jo_t)
        l_next = _cholesky(_sym(jd_next - jnp.swapaxes(c, -1, -2) @ c))
        return l_next, (l_next, c)

    _, (rest, cs) = jax.lax.scan(step, l0, (jo, jd[1:]))
    return jnp.concatenate([l0[None], rest], 0), cs


def _solve(chol: Array, cs: Array, h: Array):
    """``w = L^{-1} h`` and ``m = L^{-T} w`` (time-major ``[T, ..., D]``)."""
    w0 = _trsolve_vec(chol[0], h[0])

    def fwd(w_prev, xs):
        l_t, c_t, h_t = xs
        w = _trsolve_vec(l_t, h_t - _mtv(c_t, w_prev))
        return w, w

    _, rest = jax.lax.scan(fwd, w0, (chol[1:], cs, h[1:]))
    w = jnp.concatenate([w0[None], rest], 0)
    m_last = _trsolve_vec(chol[-1], w[-1], trans=True)

    def bwd(m_next, xs):
        l_t, c_t, w_t = xs
        m = _trsolve_vec(l_t, w_t - _mv(c_t, m_next), trans=True)
        return m, m

    _, ms = jax.lax.scan(bwd, m_last, (chol[:-1], cs, w[:-1]), reverse=True)
    return w, jnp.concatenate([ms, m_last[None]], 0)


def _covariances(chol: Array, cs: Array) -> tuple[Array, Array]:
    """Diagonal blocks ``S_tt`` ``[T, ..., D, D]`` and ``S_{t,t+1}`` ``[T-1, ..., D, D]``
    of ``Lambda^{-1}`` (selected inversion, backward)."""
    linv = _tri_inv(chol)
    s_last = jnp.swapaxes(linv[-1], -1, -2) @ linv[-1]

    def bwd(s_next, xs):
        li, c = xs
        lit = jnp.swapaxes(li, -1, -2)
        cross = -lit @ c @ s_next
        s = _sym(lit @ li - cross @ jnp.swapaxes(c, -1, -2) @ li)
        return s, (s, cross)

    _, (ss, crosses) = jax.lax.scan(bwd, s_last, (linv[:-1], cs), reverse=True)
    return jnp.concatenate([ss, s_last[None]], 0), crosses


def _logdet_half(chol: Array) -> Array:
    """``sum_t log|L_t| = log|Lambda| / 2`` (batch shape)."""
    return jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), (0, -1))


def _moments(chol, cs, m):
    """Mean parameters (time axis back in place) from the factor and the mean."""
    s, cross = _covariances(chol, cs)
    xxT = s + m[..., :, None] * m[..., None, :]
    pair = cross + m[:-1, ..., :, None] * m[1:, ..., None, :]
    back = lambda a, nd: jnp.moveaxis(a, 0, a.ndim - nd - 1)  # noqa: E731
    return {"x": back(m, 1), "xxT": back(xxT, 2), "pair": back(pair, 2)}


def _draw(chol, cs, eps):
    """``L^{-T} eps`` (time-major ``eps`` ``[T, *sample, ..., D]``)."""
    linv = _tri_inv(chol)
    u_last = _mtv(linv[-1], eps[-1])

    def bwd(u_next, xs):
        li, c, e = xs
        u = _mtv(li, e - _mv(c, u_next))
        return u, u

    _, us = jax.lax.scan(bwd, u_last, (linv[:-1], cs, eps[:-1]), reverse=True)
    return jnp.concatenate([us, u_last[None]], 0)


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
        jd, jo = precision_blocks(natural)
        chol, cs = factorize(jd, jo)
        w, m = _solve(chol, cs, _tm(natural["x"], 1))
        a = 0.5 * jnp.sum(w * w, (0, -1)) - _logdet_half(chol)
        return chol, cs, m, a

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        return cls._parts(natural)[3]

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        return cls.mean_and_log_normalizer(natural)[0]

    @classmethod
    def mean_and_log_normalizer(cls, natural):
        chol, cs, m, a = cls._parts(natural)
        return _moments(chol, cs, m), a

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
        jd, jo = precision_blocks(natural)
        chol, _ = factorize(jd, jo)
        d = jnp.diagonal(chol, axis1=-2, axis2=-1)
        return (jnp.all(jnp.isfinite(chol) & (d[..., None] > 0), (0, -2, -1))
                & jnp.all(jnp.isfinite(natural["x"]), (-2, -1)))

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
        chol, _ = factorize(jd, jo)
        n = self.num_steps * self.state_dim
        return 0.5 * n * (1.0 + _LOG_2PI) - _logdet_half(chol)

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
        _, _, m, _ = cls._parts(natural)
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
        mean = _moments(chol, cs, m)
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
