"""Inference routines: CAVI, gradient ELBO, EM, Laplace, KL projections."""
