"""The mean-field family that CAVI and the exact gradient path share.

q(Z) = prod_j q_j(z_j), each q_j an exponential family picked by the compiler. Its
natural parameters are ``{latent: {stat: array}}``; the ELBO is

    L(q) = F(mu) + sum_j H[q_j],   mu_j = grad A_j(eta_j),

with F the compiled multilinear form (so L includes every constant of log p).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vijax import _xla
from vijax import families as fam_mod
from vijax.errors import ModelSpecError
from vijax.families import registry, start_random


def family_class(info):
    return info.family_class


def _infos(compiled_or_infos):
    return compiled_or_infos if isinstance(compiled_or_infos, dict) else compiled_or_infos.infos


def families_of(compiled):
    return {n: family_class(i) for n, i in _infos(compiled).items() if i.family is not None}


def variational_infos(model, compiled):
    """Per factor, the q family: the compiler's where conjugate, else the support's
    default family from the registry (Normal, Gamma, Beta, Dirichlet, Bernoulli,
    Categorical, Poisson; a count latent's Poisson q has no reparameterization:
    score-function gradients).

    A declared block of several latents is one joint factor keyed by its block name
    (``"mu+tau"``, a :class:`~vijax.conjugacy.joint_blocks.BlockInfo`), in the place of
    its first member as :func:`vijax.conjugacy.joint_blocks.apply` orders it (so that
    the default start is CAVI's); ``compiled`` must be the block-applied form.

    Raises:
        ModelSpecError: a block when the compiler gave no form of the log joint (its
            joint family is matched on the compiled terms).
    """
    import dataclasses
    from vijax.conjugacy.joint_blocks import block_name, multi_blocks
    from vijax.conjugacy.matching import LatentInfo
    joint = multi_blocks(getattr(model, "blocks", ()))
    if joint and compiled is None:
        raise ModelSpecError(
            f"block {list(joint[0])}: the conjugacy compiler could not read this log joint, "
            "and a joint factor (Normal-Gamma, Normal-Wishart) is matched on its compiled "
            "terms; declare the model without blocks= for a mean-field gradient fit")
    member_of = {m: b for b in joint for m in b}
    out = {}
    for n, sup in model.supports.items():
        if n in member_of:
            b = member_of[n]
            if n == b[0]:
                name = block_name(b)
                out[name] = compiled.infos[name]
            continue
        inf = compiled.infos.get(n) if compiled is not None else None
        if inf is not None and inf.family is not None:
            out[n] = inf
            continue
        fam = registry.default_family(sup.kind)
        if fam is None:
            raise ModelSpecError(f"latent '{n}': no variational family for support {sup}")
        base = inf if inf is not None else LatentInfo(n, sup)
        out[n] = dataclasses.replace(base, family=fam.__name__, event_axes=())
    return out


def to_latents(infos, values):
    """Factor values (draws, means) as latent values: a joint block's value
    ``{"mean": ..., "precision": ...}`` is handed out under its members' names."""
    out = {}
    for n, v in values.items():
        members = getattr(infos[n], "members", ())
        if members:
            out.update({m: v[r] for m, r in zip(members, infos[n].roles)})
        else:
            out[n] = v
    return out


def mean_params(compiled, natural):
    fams = families_of(compiled)
    return {n: fams[n].mean_params(natural[n]) for n in natural}


def entropies(compiled, natural):
    fams = families_of(compiled)
    return {n: jnp.sum(fams[n].from_natural(natural[n]).entropy()) for n in natural}


def elbo(compiled, natural):
    """``F(mu) + sum_j H[q_j]``."""
    mu = mean_params(compiled, natural)
    ent = entropies(compiled, natural)
    return compiled.F(mu) + sum(ent.values())


def factor(info, natural, validate=True):
    """The family object of one latent from its natural parameters, in the latent's
    declared shape: a dense Gaussian carries its event layout, so that its ``mean()``,
    ``variance()`` and ``sample()`` have the declared shape (and a draw can be passed
    to the log joint) whatever axes its event spans."""
    cls = info.family_class
    q = cls.from_natural(natural) if validate else cls(natural)
    return q.with_layout(info.layout) if info.dense else q


def posterior(compiled, natural):
    """latent -> family object (see :func:`factor`). A joint block's factor (keyed by
    its block name in ``natural``) gives each member latent its exact marginal
    (:meth:`vijax.conjugacy.joint_blocks.BlockInfo.marginals`)."""
    infos = _infos(compiled)
    out = {}
    for n in natural:
        q = factor(infos[n], natural[n])
        marginals = getattr(infos[n], "marginals", None)
        out.update(marginals(q) if marginals is not None else {n: q})
    return out


def default_init_jit(infos, key, dtype):
    """:func:`default_init` as one compiled program (cached per latents and dtype)
    instead of dozens of eager operations."""
    return _default_init_jit(tuple(_infos(infos).items()), key, jax.numpy.dtype(dtype))


def posterior_jit(compiled, natural):
    """:func:`posterior` built in one compiled program (the fit already checked the
    natural parameters, so no eager validation)."""
    infos = _infos(compiled)
    return _posterior_static(tuple(infos.items()), natural)


def default_init(compiled, key, dtype):
    """Natural parameters of a sensible starting q for every latent: each family's
    :meth:`~vijax.families.base.ExponentialFamily.default_start` (e.g. unit variance
    around small random means for Gaussians, mean 1 for Gamma and inverse Gamma,
    uniform Beta and Dirichlet, random probabilities for Categorical and Bernoulli:
    symmetry breaking for mixtures; Poisson: rate 1)."""
    out = {}
    for i, (n, inf) in enumerate(_infos(compiled).items()):
        if inf.family is None:
            continue
        q = inf.family_class.default_start(start_random.fold(key, i), inf, dtype)
        out[n] = {s: jnp.asarray(v, dtype) for s, v in q.natural.items()}
    return out


def user_init(compiled, init, base):
    """Overlay user-supplied factors (family objects, or probabilities for discrete
    latents) on ``base`` natural parameters. A joint block's factor is given under its
    block name (``{"mu+tau": NormalGamma(...)}``)."""
    if not init:
        return base
    out = dict(base)
    infos = _infos(compiled)
    for n, v in init.items():
        if n not in infos:
            block = next((b for b, i in infos.items() if n in getattr(i, "members", ())), None)
            if block is not None:  # a member of a joint factor: the joint factor is the init
                raise ModelSpecError(
                    f"init names latent '{n}', which is a member of the joint block "
                    f"'{block}': pass init={{'{block}': {infos[block].family}(...)}} (e.g. a "
                    f"fit's NormalGamma/NormalWishart(fit.natural['{block}']))")
            raise ModelSpecError(f"init names latent '{n}', which the model does not declare")
        inf = infos[n]
        cls = inf.family_class
        if isinstance(v, fam_mod.ExponentialFamily):
            if not isinstance(v, cls):
                raise ModelSpecError(f"init for '{n}' is a {type(v).__name__}; the compiler "
                                     f"chose {cls.__name__} for this latent")
            nat = v.natural
        else:
            q = cls.from_user_value(v)
            if q is None:
                raise ModelSpecError(f"init for '{n}' must be a {cls.__name__} instance (or "
                                     "probabilities for a discrete latent)")
            nat = q.natural
        ref = base[n]
        conform = getattr(cls, "conform_natural", None)  # e.g. a chain's pair layout
        if conform is not None:
            nat = conform(nat, {s: jnp.shape(r) for s, r in ref.items()}, n)
        for s in ref:
            if jnp.shape(nat[s]) != jnp.shape(ref[s]):
                raise ModelSpecError(f"init for '{n}': parameter '{s}' has shape "
                                     f"{jnp.shape(nat[s])}, expected {jnp.shape(ref[s])}")
        out[n] = {s: jnp.asarray(nat[s], ref[s].dtype) for s in ref}
    return out


_default_init_jit = _xla.jit(lambda infos, key, dtype: default_init(dict(infos), key, dtype),
                             static_argnums=(0, 2))
_posterior_static = _xla.jit(lambda infos, natural: posterior(dict(infos), natural),
                             static_argnums=(0,))
