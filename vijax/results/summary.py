"""Posterior summaries: mean, sd and quantiles per latent element.

:func:`summary` makes one row per element of every latent (``mu[0,1]``), with columns
``mean``, ``sd`` and one per quantile level (``2.5%``, ``50%``, ``97.5%`` by default).
It returns a ``pandas.DataFrame`` when pandas is installed, else a :class:`SummaryTable`
that prints as a table and hands back the numbers as arrays.

Where the numbers come from:

- **closed form** for a dict of factor families (:func:`vijax.cavi`,
  :func:`vijax.fit_gradient`, :func:`vijax.em`): ``mean()``, ``std()`` and
  ``quantile(q)`` of each family. Categorical latents are summarized through their
  one-hot indicators: row ``z[i]==k`` has mean ``P(z_i = k)``, sd ``sqrt(p (1 - p))``
  and the indicator's quantiles (0 or 1).
- **Monte Carlo** (``num_draws`` draws with ``key``, default ``PRNGKey(0)``) for a
  family without a closed-form ``quantile`` and for a :class:`~vijax.LaplaceResult`,
  whose posterior is a Gaussian in the unconstrained space pushed through each latent's
  bijection (pass ``supports=model``). Which latents used draws is recorded in
  ``.attrs["method"]`` (DataFrame) or ``.method`` (:class:`SummaryTable`).

Summaries need concrete arrays (call them outside ``jit``).
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vijax.results import draws as _draws

DEFAULT_QUANTILES = (0.025, 0.5, 0.975)


def quantile_label(q: float) -> str:
    """Column name of quantile level ``q``: ``0.025 -> "2.5%"``."""
    return f"{100.0 * float(q):g}%"


def element_names(name: str, shape: Sequence[int]) -> list[str]:
    """Row names of a latent's elements in C order: ``mu``, ``mu[0]``, ``mu[0,1]``."""
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]"
            for idx in itertools.product(*(range(s) for s in shape))]


class SummaryTable:
    """A summary without pandas: prints as a table, gives the numbers as arrays.

    Attributes:
        index: row names (``mu[0]``, ...).
        columns: column names (``mean``, ``sd``, ``2.5%``, ...).
        values: ``(len(index), len(columns))`` float array.
        method: latent -> ``"closed form"`` or ``"monte carlo"``.
    """

    max_rows = 40

    def __init__(self, index, columns, values, method):
        self.index = list(index)
        self.columns = list(columns)
        self.values = np.asarray(values, float).reshape(len(self.index), len(self.columns))
        self.method = dict(method)

    def __getitem__(self, column: str) -> np.ndarray:
        """One column as an array over the rows."""
        return self.values[:, self.columns.index(column)]

    def __len__(self) -> int:
        return len(self.index)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{column: {row: value}}`` (pandas' ``to_dict()`` layout)."""
        return {c: dict(zip(self.index, self.values[:, j].tolist()))
                for j, c in enumerate(self.columns)}

    def row(self, name: str) -> dict[str, float]:
        """``{column: value}`` of one row."""
        return dict(zip(self.columns, self.values[self.index.index(name)].tolist()))

    def __repr__(self) -> str:
        rows = list(range(len(self.index)))
        cut = len(rows) > self.max_rows
        if cut:
            half = self.max_rows // 2
            rows = rows[:half] + [None] + rows[-half:]
        cells = [[""] + self.columns]
        for i in rows:
            if i is None:
                cells.append(["..."] + ["..."] * len(self.columns))
            else:
                cells.append([self.index[i]] + [f"{v:.4g}" for v in self.values[i]])
        widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
        lines = ["  ".join([r[0].ljust(widths[0])]
                           + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]) for r in cells]
        if cut:
            lines.append(f"[{len(self.index)} rows x {len(self.columns)} columns]")
        mc = [k for k, m in self.method.items() if m != "closed form"]
        if mc:
            lines.append(f"(Monte Carlo: {', '.join(mc)})")
        return "\n".join(lines)


def _std(fam):
    if hasattr(fam, "std"):
        return fam.std()
    return jnp.sqrt(fam.variance())


def _indicator_quantiles(p, levels):
    """Quantiles of a 0/1 indicator with ``P(1) = p``: 0 where ``q <= 1 - p``, else 1."""
    levels = jnp.reshape(levels, levels.shape + (1,) * jnp.ndim(p))
    return jnp.where(levels <= 1.0 - p, 0.0, 1.0)


def _closed_form(name, fam, levels):
    """``(names, mean, sd, quantiles (L, rows))`` or None where no closed form exists."""
    support = getattr(fam, "support", "")
    mean = jnp.asarray(fam.mean())
    if support == "categorical":
        # mean() is the probability vector: summarize the one-hot indicators
        p = mean
        batch, k = p.shape[:-1], p.shape[-1]
        names = [f"{n}=={c}" for n in element_names(name, batch) for c in range(k)]
        return names, p, jnp.sqrt(p * (1.0 - p)), _indicator_quantiles(p, levels)
    if support == "binary":
        quant = _indicator_quantiles(mean, levels)
    else:
        try:
            quant = fam.quantile(levels)
        except (AttributeError, NotImplementedError):
            return None
        if jnp.shape(quant) != levels.shape + mean.shape:
            return None
    return element_names(name, mean.shape), mean, _std(fam), quant


def _from_draws(name, x, levels):
    x = jnp.asarray(x, jnp.result_type(x, float))
    mean = jnp.mean(x, 0)
    sd = jnp.std(x, 0, ddof=1)
    quant = jnp.quantile(x, levels, axis=0)
    return element_names(name, mean.shape), mean, sd, quant


def summary(result: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES, *,
            key: jax.Array | None = None, num_draws: int = 4000, supports: Any = None,
            pandas: bool | None = None):
    """Mean, sd and quantiles of every latent element under the fitted ``q``.

    Args:
        result: a fit result (``posterior`` a dict of families, or a Laplace result).
        quantiles: quantile levels in ``(0, 1)``.
        key: PRNG key for the Monte Carlo parts (default ``jax.random.PRNGKey(0)``).
        num_draws: draws used where there is no closed form (see the module docstring).
        supports: a :class:`~vijax.Model` or ``{latent: Support}``; Laplace results only.
        pandas: True for a DataFrame (raises without pandas), False for a
            :class:`SummaryTable`, None (default) for a DataFrame when pandas imports.

    Returns:
        a ``pandas.DataFrame`` indexed by element name, or a :class:`SummaryTable`.

    Example:
        >>> import jax.numpy as jnp
        >>> from vijax.families import Normal
        >>> from vijax.inference.result import FitResult
        >>> fit = FitResult({"mu": Normal.from_loc_scale(jnp.zeros(2), jnp.ones(2))},
        ...                 0.0, jnp.zeros(1), 1, True, {}, {})
        >>> t = summary(fit, pandas=False)
        >>> t.columns
        ['mean', 'sd', '2.5%', '50%', '97.5%']
        >>> t.index
        ['mu[0]', 'mu[1]']
    """
    levels = np.asarray(quantiles, float).reshape(-1)
    if levels.size and ((levels <= 0) | (levels >= 1)).any():
        raise ValueError(f"quantile levels must lie in (0, 1), got {list(quantiles)}")
    columns = ["mean", "sd"] + [quantile_label(q) for q in levels]
    key = jax.random.PRNGKey(0) if key is None else key
    levels_j = jnp.asarray(levels)

    method: dict[str, str] = {}
    parts: dict[str, tuple] = {}
    laplace = _draws.is_laplace(result)
    if not laplace:
        for name in sorted(result.posterior):
            got = _closed_form(name, result.posterior[name], levels_j)
            if got is not None:
                parts[name], method[name] = got, "closed form"
    todo = [n for n in sorted(_latent_names(result)) if n not in parts]
    if todo:
        if laplace:
            x = _draws.sample(result, key, num_draws, supports=supports)
        else:
            keys = dict(zip(sorted(result.posterior),
                            jax.random.split(key, len(result.posterior))))
            x = {n: result.posterior[n].sample(keys[n], (num_draws,)) for n in todo}
        for name in todo:
            parts[name], method[name] = _from_draws(name, x[name], levels_j), "monte carlo"

    index, rows = [], []
    for name in sorted(parts):
        names, mean, sd, quant = parts[name]
        cols = [np.asarray(mean).reshape(-1), np.asarray(sd).reshape(-1)]
        cols += list(np.asarray(quant).reshape(len(levels), -1))
        index += names
        rows.append(np.stack(cols, 1))
    values = np.concatenate(rows, 0) if rows else np.zeros((0, len(columns)))

    if pandas is None or pandas:
        try:
            import pandas as pd
        except ImportError:
            if pandas:
                raise ImportError("summary(pandas=True) needs pandas: pip install pandas "
                                  "(or vijax[pandas])") from None
        else:
            frame = pd.DataFrame(values, index=pd.Index(index, name="element"),
                                 columns=columns)
            frame.attrs["method"] = method
            return frame
    return SummaryTable(index, columns, values, method)


def _latent_names(result) -> list[str]:
    if _draws.is_laplace(result):
        return list(result.map_unconstrained)
    return list(result.posterior)

