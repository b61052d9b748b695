"""vijax: variational inference from a plain log-joint function.

Write the model once as ``log_joint(latents, data)`` with a support per latent; vijax
derives closed-form CAVI updates from its jaxpr, maximizes the same ELBO by gradient,
and compares the two.
"""

from vijax import algorithms, errors, families, models, results, stats
from vijax.errors import (ConvergenceWarning, DataError, FitDivergedError,
                          InvalidParameterError, ModelSpecError, NonConjugateError,
                          UnsupportedPrimitiveError, VijaxError)
from vijax.compare import Comparison, compare
from vijax.inference.cavi import CaviResult, CaviState, cavi
from vijax.inference import distributed
from vijax.inference.batch import batch_cavi
from vijax.inference.gibbs import gibbs
from vijax.inference.gibbs_result import GibbsResult
from vijax.inference.svi import batch_indices as svi_batch_indices
from vijax.inference.svi import svi
from vijax.compare_draws import DrawComparison, compare_draws
from vijax.marginalize import CollapseError, log_evidence, marginalize
from vijax.numpyro_bridge import from_numpyro
from vijax.families import GaussMarkov, InverseWishart, MarkovChain, Wishart
from vijax.inference.driver import Algorithm, Info, Run, run
from vijax.inference.em import EMResult, PreparedEM, em
from vijax.inference.em import prepare as prepare_em
from vijax.inference.kl_projection import (ReverseKLFit, forward_kl_gaussian, forward_kl_samples,
                                           reverse_kl_fit, reverse_kl_gaussian)
from vijax.inference.laplace import LaplaceResult, LaplaceState, laplace
from vijax.inference.gradient import GradState, fit_gradient
from vijax.inference.em_steps import EMState, MStepInfo
from vijax.inference.result import FitResult
from vijax.results import load_result, posterior_predictive, save_result, summary, to_arviz
from vijax.model import Analysis, Model, analyze
from vijax.conjugacy.program import Program, compile
from vijax.supports import (Support, binary, categorical, count, positive, positive_definite,
                            real, simplex, unit_interval)

__version__ = "0.1.0"

__all__ = [
    "Model", "analyze", "Analysis", "compile", "Program", "cavi", "batch_cavi", "CaviResult", "FitResult", "fit_gradient",
    "compare", "Comparison", "em", "EMResult", "prepare_em", "PreparedEM", "laplace", "LaplaceResult",
    "forward_kl_gaussian", "forward_kl_samples", "reverse_kl_gaussian", "reverse_kl_fit",
    "ReverseKLFit",
    "Support", "real", "positive", "simplex", "unit_interval", "binary", "categorical", "count",
    "positive_definite", "stats", "MarkovChain", "GaussMarkov", "Wishart",
    "InverseWishart",
    "svi", "svi_batch_indices", "gibbs", "GibbsResult", "compare_draws", "DrawComparison",
    "marginalize", "log_evidence", "CollapseError", "from_numpyro", "distributed",
    "errors", "families", "models", "results", "summary", "posterior_predictive", "to_arviz",
    "save_result", "load_result", "algorithms", "Algorithm", "Info", "Run", "run",
    "CaviState", "GradState", "EMState", "MStepInfo", "LaplaceState",
    "VijaxError", "ModelSpecError", "NonConjugateError", "UnsupportedPrimitiveError",
    "DataError", "InvalidParameterError", "FitDivergedError", "ConvergenceWarning",
]
