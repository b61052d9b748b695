"""The README's main job: `vijax demo` as a subprocess; and the demo's Gibbs check."""

import importlib.util
import subprocess
import sys

import numpy as np

from vijax import cli, demo


def test_vijax_demo_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vijax.cli", "demo", "--plots", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "all checks passed" in out.stdout
    assert "AGREE" in out.stdout and "DISAGREE" not in out.stdout
    # the Gibbs path on both models, with its table against the exact moments
    assert out.stdout.count("blocked Gibbs") == 2
    assert "Gibbs var" in out.stdout and "Sigma_ii" in out.stdout
    # the lecture's pictures: their tables and all five figures
    assert "[3] a skewed posterior" in out.stdout and "Laplace, log lam" in out.stdout
    assert "[4] EM's lower bound" in out.stdout and "argmax bound" in out.stdout
    names = ("kl_bivariate_gaussian", "kl_two_mode", "elbo_traces", "laplace_vs_vi",
             "em_lower_bound")
    if importlib.util.find_spec("matplotlib") is None:  # the plot extra is optional
        assert "figures skipped: matplotlib is not installed" in out.stdout
        assert not any((tmp_path / f"{n}.png").exists() for n in names)
        return
    for name in names:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name


def test_demo_plots_flag():
    """``--plots DIR`` (and the older ``--out DIR``) name the figures' folder."""
    p = cli.build_parser()
    assert p.parse_args(["demo"]).plots == "vijax-demo-out"
    assert p.parse_args(["demo", "--plots", "figs"]).plots == "figs"
    assert p.parse_args(["demo", "--out", "old"]).plots == "old"
    assert p.parse_args(["demo", "--plots", ""]).plots == ""


def test_demo_gibbs_check_fails_on_wrong_variances():
    """The demo's check passes exact draws and fails draws with CAVI's variance 1/Lambda_ii
    (rho = 0.9: 0.19 instead of 1) or a shifted mean."""
    rng = np.random.default_rng(0)
    exact = rng.normal(1.0, 1.0, size=(4, 5000))
    row = ("z1", 1.0, 1.0, 1.0, 0.19)
    failures = []
    demo._gibbs_table([row + (exact,)], failures, "t")
    assert failures == []
    demo._gibbs_table([row + (1.0 + np.sqrt(0.19) * (exact - 1.0),)], failures, "t")
    assert len(failures) == 1 and "variance of z1" in failures[0]
    demo._gibbs_table([row + (exact + 0.2,)], failures, "t")
    assert len(failures) == 2 and "mean of z1" in failures[1]


def test_vijax_analyze_reports_families():
    out = subprocess.run([sys.executable, "-m", "vijax.cli", "analyze", "gaussian_mixture"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Categorical" in out.stdout and "Dirichlet" in out.stdout
