"""vijax: variational inference from a plain log-joint function.

Write the model once as ``log_joint(latents, data)`` with a support per latent; vijax
derives closed-form CAVI updates from its jaxpr, maximizes the same ELBO by gradient,
and compares the two.
"""

# Names are imported on first use (PEP 562): ``import vijax`` then ``vj.cavi(...)`` loads
# the CAVI path only, not the Gibbs, SVI, EM, Laplace, NumPyro or results modules (about a
# third of the import time of a fresh process). Every name below is public as before;
# ``from vijax import *`` and ``dir(vijax)`` list them all.

import importlib as _importlib

# the three names that a module of the same name also defines (vijax.compare holds
# compare, ...): bound now, so a later import of that module cannot replace the function
# by the module on the package
from vijax.compare import Comparison, compare
from vijax.compare_draws import DrawComparison, compare_draws
from vijax.marginalize import CollapseError, log_evidence, marginalize

#: public name -> (module, attribute; None: the module itself)
_LAZY = {
    **{m: (f"vijax.{m}", None) for m in ("algorithms", "errors", "families", "models",
                                          "results", "stats")},
    **{n: ("vijax.errors", n) for n in (
        "ConvergenceWarning", "DataError", "FitDivergedError", "InvalidParameterError",
        "ModelSpecError", "NonConjugateError", "UnsupportedPrimitiveError", "VijaxError")},
    "CaviResult": ("vijax.inference.cavi", "CaviResult"),
    "CaviState": ("vijax.inference.cavi", "CaviState"),
    "cavi": ("vijax.inference.cavi", "cavi"),
    "distributed": ("vijax.inference.distributed", None),
    "batch_cavi": ("vijax.inference.batch", "batch_cavi"),
    "gibbs": ("vijax.inference.gibbs", "gibbs"),
    "GibbsResult": ("vijax.inference.gibbs_result", "GibbsResult"),
    "svi_batch_indices": ("vijax.inference.svi", "batch_indices"),
    "svi": ("vijax.inference.svi", "svi"),
    "from_numpyro": ("vijax.numpyro_bridge", "from_numpyro"),
    **{n: ("vijax.families", n) for n in ("GaussMarkov", "InverseWishart", "MarkovChain",
                                          "Wishart")},
    **{n: ("vijax.inference.driver", n) for n in ("Algorithm", "Info", "Run", "run")},
    "EMResult": ("vijax.inference.em", "EMResult"),
    "PreparedEM": ("vijax.inference.em", "PreparedEM"),
    "em": ("vijax.inference.em", "em"),
    "prepare_em": ("vijax.inference.em", "prepare"),
    **{n: ("vijax.inference.kl_projection", n) for n in (
        "ReverseKLFit", "forward_kl_gaussian", "forward_kl_samples", "reverse_kl_fit",
        "reverse_kl_gaussian")},
    **{n: ("vijax.inference.laplace", n) for n in ("LaplaceResult", "LaplaceState",
                                                   "laplace")},
    "GradState": ("vijax.inference.gradient", "GradState"),
    "fit_gradient": ("vijax.inference.gradient", "fit_gradient"),
    "EMState": ("vijax.inference.em_steps", "EMState"),
    "MStepInfo": ("vijax.inference.em_steps", "MStepInfo"),
    "FitResult": ("vijax.inference.result", "FitResult"),
    **{n: ("vijax.results", n) for n in ("load_result", "posterior_predictive",
                                         "save_result", "summary", "to_arviz")},
    **{n: ("vijax.model", n) for n in ("Analysis", "Model", "analyze")},
    "Program": ("vijax.conjugacy.program", "Program"),
    "compile": ("vijax.conjugacy.program", "compile"),
    **{n: ("vijax.supports", n) for n in (
        "Support", "binary", "categorical", "count", "positive", "positive_definite",
        "real", "simplex", "unit_interval")},
}

__version__ = "0.1.0"

#: every public name: the eager ones above and the lazy ones (one list to keep)
__all__ = ["compare", "Comparison", "compare_draws", "DrawComparison", "marginalize",
           "log_evidence", "CollapseError", *_LAZY]


def __getattr__(name):
    """Import a public name (or a subpackage, e.g. ``vijax.inference``) on first use."""
    spec = _LAZY.get(name)
    if spec is None:
        try:
            value = _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        module = _importlib.import_module(spec[0])
        value = module if spec[1] is None else getattr(module, spec[1])
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
