"""The README's main job: `vijax demo` as a subprocess."""

import subprocess
import sys


def test_vijax_demo_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vijax.cli", "demo", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "all checks passed" in out.stdout
    assert "AGREE" in out.stdout and "DISAGREE" not in out.stdout


def test_vijax_analyze_reports_families():
    out = subprocess.run([sys.executable, "-m", "vijax.cli", "analyze", "gaussian_mixture"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Categorical" in out.stdout and "Dirichlet" in out.stdout
