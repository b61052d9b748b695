"""The user's model: a log-joint function plus a support per latent; and its analysis."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.errors import DataError, ModelSpecError
from vijax.supports import Support


class Model:
    """A probabilistic model written as a log joint.

    Args:
        log_joint: ``log_joint(latents: dict, data) -> scalar``, jittable, written with
            ``jax.numpy`` / ``jax.scipy.stats``.
        supports: latent name -> :class:`~vijax.supports.Support` (``vj.real()``, ...).
        blocks: optional groups of latents to update jointly (each latent alone by
            default). A block of several latents is one joint CAVI factor: a mean and
            its precision, ``[["mu", "tau"]]`` (Normal-Gamma, elementwise) or
            ``[["mu", "L"]]`` (Normal-Wishart); see :mod:`vijax.conjugacy.joint_blocks`.

    Example:
        >>> import vijax as vj
        >>> from jax.scipy import stats
        >>> m = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"]) + stats.norm.logpdf(x, z["mu"]).sum(),
        ...              {"mu": vj.real()})
        >>> sorted(m.supports)
        ['mu']
    """

    def __init__(self, log_joint: Callable, supports: Dict[str, Support], blocks=None):
        if not callable(log_joint):
            raise ModelSpecError(f"log_joint must be callable, got {type(log_joint).__name__}")
        if not isinstance(supports, dict) or not supports:
            raise ModelSpecError("supports must be a non-empty dict: latent name -> vj.real(), "
                                 "vj.positive(), ...")
        for name, sup in supports.items():
            if not isinstance(name, str):
                raise ModelSpecError(f"latent names must be strings, got {name!r}")
            if not isinstance(sup, Support):
                raise ModelSpecError(
                    f"support of latent '{name}' must be a vijax support such as vj.real() or "
                    f"vj.positive(shape=(3,)), got {sup!r}")
        self.log_joint = log_joint
        self.supports = dict(supports)
        self.blocks = _check_blocks(blocks, self.supports)

    def __call__(self, latents, data):
        return self.log_joint(latents, data)

    def __repr__(self):
        return f"Model({getattr(self.log_joint, '__name__', 'log_joint')}, {self.supports})"


def _check_blocks(blocks, supports):
    """The blocks as lists covering every latent once (undeclared latents alone).
    A block of several latents becomes one joint factor for CAVI
    (:mod:`vijax.conjugacy.joint_blocks`: Normal-Gamma, Normal-Wishart)."""
    if blocks is None:
        return [[n] for n in supports]
    if isinstance(blocks, (str, bytes)) or not all(
            isinstance(b, (list, tuple)) and not isinstance(b, str) for b in blocks):
        raise ModelSpecError(f"blocks must be a list of lists of latent names, e.g. "
                             f"[['mu', 'tau']]; got {blocks!r}")
    seen = {}
    for b in blocks:
        if not b:
            raise ModelSpecError(f"blocks {blocks!r} holds an empty block")
        for n in b:
            if n not in supports:
                raise ModelSpecError(f"block {list(b)} names latent {n!r}, which is not "
                                     f"declared (declared: {sorted(supports)})")
            if n in seen:
                raise ModelSpecError(f"latent '{n}' is in two blocks ({seen[n]} and "
                                     f"{list(b)}); a latent belongs to one block")
            seen[n] = list(b)
    out = [list(b) for b in blocks]
    return out + [[n] for n in supports if n not in seen]


def _spans_devices(x) -> bool:
    """A concrete ``jax.Array`` on more than one device (or on another process's)."""
    return isinstance(x, jax.Array) and not _compat.is_tracer(x) and (
        len(x.sharding.device_set) > 1 or not x.is_fully_addressable)


def _checked_in_place(x) -> bool:
    """A concrete ``jax.Array`` whose NaN/Inf count is taken where it lives: split over
    devices or processes, or on an accelerator (a host copy of a GPU's data set on every
    fit would cost more than the fit's sweeps)."""
    return _spans_devices(x) or (
        isinstance(x, jax.Array) and not _compat.is_tracer(x)
        and any(d.platform != "cpu" for d in x.sharding.device_set))


@jax.jit
def _nonfinite_counts(leaves):
    # one reduction per leaf, run where the data live: each device counts its shard and
    # the counts are summed across devices (and processes), a replicated scalar each
    return [jnp.sum(~jnp.isfinite(x), dtype=jnp.int32) for x in leaves]


def check_data(data):
    """Raise :class:`DataError` when a concrete float leaf of ``data`` has NaN or Inf.

    Host arrays (NumPy, or jax arrays on the CPU) are checked on the host. A leaf on an
    accelerator, or split over several devices or processes, is never copied to the
    host: its NaN/Inf count ``sum(~isfinite(x))`` is one jitted reduction where it lives
    (over its shards: a replicated scalar, readable on every process), so a
    multi-process fit checks each process's slice in place.
    """
    sharded = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        if _compat.is_tracer(leaf) or leaf is None:
            continue
        if _checked_in_place(leaf):
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                sharded.append((path, leaf))
            continue
        arr = np.asarray(leaf)
        if not all_finite(arr):
            _raise_nonfinite(path, int(np.sum(~np.isfinite(arr))), arr.shape)
    if sharded:
        counts = _nonfinite_counts([leaf for _, leaf in sharded])
        for (path, leaf), bad in zip(sharded, counts):
            if int(bad):
                _raise_nonfinite(path, int(bad), leaf.shape)


def all_finite(arr) -> bool:
    """Whether a host array has no NaN/Inf (True for non-float arrays).

    For float32/float64 one BLAS pass: ``sum(x * x)`` is NaN or Inf when an element is
    (squares are >= 0, so no Inf - Inf cancels), and overflows only for finite values
    beyond ``sqrt(max float)``, for which the exact test runs (2-3x faster than
    ``isfinite(x).all()``, which builds a mask)."""
    if arr.dtype.kind not in "fc":
        return True
    if arr.dtype in (np.float32, np.float64) and arr.size:
        flat = arr.reshape(-1)
        if np.isfinite(np.dot(flat, flat)):
            return True
    return bool(np.all(np.isfinite(arr)))


def _raise_nonfinite(path, bad, shape):
    where = jax.tree_util.keystr(path) or "data"
    raise DataError(f"{where} has {bad} NaN/Inf value(s) (shape {tuple(shape)}); remove or "
                    "impute them before fitting")


@dataclasses.dataclass
class Analysis:
    """What the compiler found, per latent.

    Attributes:
        families: latent -> family class from :mod:`vijax.families` (None if not conjugate).
        reasons: latent -> why it is not conjugate (with the source line).
        statistics: latent -> the sufficient statistics the log joint uses.
        compiled: the compiled multilinear form (``compiled.F``) for the data given, or
            None when only shapes were given (``jax.ShapeDtypeStruct`` leaves).
        program: the :class:`~vijax.conjugacy.program.Program` (reusable for any data of
            these shapes; every fitter accepts it in place of the model).
        timings: analysis seconds: ``trace``, ``walk``, ``match``, ``xla_compile``.
    """

    families: dict
    reasons: dict
    statistics: dict
    compiled: object
    program: object = None
    timings: dict = dataclasses.field(default_factory=dict)
    #: one line per declared block of several latents (its joint family, or why it is
    #: refused) and per suggested block (:func:`vijax.conjugacy.joint_blocks.suggest`)
    blocks: list = dataclasses.field(default_factory=list)

    @property
    def conjugate(self):
        return all(f is not None for f in self.families.values())

    def __str__(self):
        lines = ["latent        support               family               structure   "
                 "statistics"]
        infos = self.program.infos if self.program is not None else self.compiled.infos
        notes = []
        for n, inf in infos.items():
            fam = inf.family or "NOT CONJUGATE"
            if getattr(inf, "chain_axes", ()):  # a Gauss-Markov chain: steps x state
                lay = inf.layout
                fam += f"(T={lay.num_steps}, D={lay.state_dim})"
            elif inf.dense:
                fam += f"(event={inf.event_size}" + (
                    f", axes {inf.event_axes}" if not inf.layout.trailing else "") + ")"
            structure = ("joint block" if getattr(inf, "members", None)
                         else getattr(inf, "structure", "factorized"))
            lines.append(f"{n:<13} {str(inf.support):<21} {fam:<20} {structure:<11} "
                         f"{', '.join(inf.stats) if inf.family else ''}")
            if inf.family and getattr(inf, "structure_note", None):
                notes.append(f"  {n}: {structure}: {inf.structure_note}")
        if notes:
            lines += ["why this structure:"] + notes
        for n, r in self.reasons.items():
            lines.append(f"  {n}: {r}")
        lines += [f"  {b}" for b in self.blocks]
        if self.timings:
            lines.append("analysis: " + ", ".join(
                f"{k} {v:.3f} s" for k, v in self.timings.items() if v is not None))
        return "\n".join(lines)

    __repr__ = __str__


def _check_finite_constant(model, data, comp):
    """DataError when the constant part of F (everything that does not depend on the
    latents) is -inf or NaN for these data values."""
    const = np.asarray(comp.const)
    if np.all(np.isfinite(const)):
        return
    from vijax.conjugacy import nonfinite
    from vijax.conjugacy.compile import locate_nonfinite, trace
    from vijax.conjugacy.program import data_spec
    closed = trace(model, data_spec(data))
    density, line, _ = locate_nonfinite(model, closed, data)
    raise DataError(nonfinite.message(const, density, line, data_dependent=True))


def analyze(model: Model, data) -> Analysis:
    """Run the conjugacy compiler and report, per latent, the family or the reason not.

    ``data`` may be arrays or ``jax.ShapeDtypeStruct`` leaves: the analysis reads only
    shapes and dtypes, and is cached per model and shapes. Does not raise for
    non-conjugacy (inference routines do): a latent without a closed-form update is
    listed with its reason and the user's line.

    Raises:
        ModelSpecError: the log joint is -inf or NaN at every value of the latents
            whatever the data (a latent-free part of it, e.g. a density of a closed-over
            constant outside its support); names the density and line.
        DataError: NaN/Inf data, or (concrete data) the log joint is -inf or NaN at every
            value of the latents for these data values (e.g.
            ``jax.scipy.stats.multinomial.logpmf`` of a batch of count vectors); names
            the density and line.
    """
    from vijax.conjugacy.program import is_abstract, program_for
    abstract = is_abstract(data)
    if not abstract:
        check_data(data)
    prog = program_for(model, data)
    comp = None if abstract else prog.materialize(data)
    if comp is not None:
        _check_finite_constant(model, data, comp)
    fams, reasons, stats = {}, {}, {}
    for n, inf in prog.infos.items():
        fams[n] = inf.family_class
        if inf.reason:
            reasons[n] = inf.reason
        stats[n] = tuple(inf.stats)
    blocks = []
    if comp is not None:  # joint blocks: declared ones checked, others suggested
        from vijax.conjugacy import joint_blocks
        blocks = (joint_blocks.describe(comp, model.blocks)
                  + joint_blocks.suggest(comp, model.blocks))
    return Analysis(fams, reasons, stats, comp, prog, dict(prog.timings), blocks)
