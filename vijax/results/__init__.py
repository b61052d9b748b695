"""What to do with a fitted posterior: print it, summarize it, draw from it, export it.

Each function takes any result whose ``posterior`` is a dict ``latent -> family``
(:func:`vijax.cavi`, :func:`vijax.fit_gradient`, :func:`vijax.em`) or the Laplace layout
(one Gaussian over the unconstrained vector; pass ``supports=model``).

- :func:`result_repr`: the one-screen ``repr``.
- :func:`summary`: mean, sd and quantiles per latent element.
- :func:`sample`: joint draws from ``q``; :func:`posterior_predictive`: a user
  simulator run on them.
- :func:`to_arviz`: an ``arviz.InferenceData`` (optional extra ``vijax[arviz]``).
- :func:`save_result` / :func:`load_result`: one ``.npz`` file, no pickle.
"""

from vijax.results.arviz_export import to_arviz
from vijax.results.display import result_repr
from vijax.results.draws import posterior_predictive, sample
from vijax.results.io import load_result, save_result
from vijax.results.summary import SummaryTable, summary

__all__ = ["result_repr", "summary", "SummaryTable", "sample", "posterior_predictive",
           "to_arviz", "save_result", "load_result"]
