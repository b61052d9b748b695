"""Smoke run of every benchmark suite at ``--size tiny`` (numpyro's test_examples idea).

Runs in-process through the runner, writes into a pytest tmp dir (never
benchmarks/results) and checks that the JSON and markdown writers produce what the
README promises: machine, versions, dtype, sizes, seed, compile time apart from steady
state, ratios against baselines.
"""

from __future__ import annotations

import json

import jax
import pytest

from benchmarks import report
from benchmarks import run as runner
from tests.conjugacy.helpers import long_params

TIMING_COLUMNS = {
    "compiler": {"xla_compile_s", "steady_median_ms", "ratio_median"},
    "cavi": {"xla_compile_s", "ms_per_iter_median", "ratio_median"},
    "gradient": {"xla_compile_s", "steps_per_s", "vs_numpyro"},
    "e2e": {"analysis_s", "walk_s", "wall_median_s", "vijax_over_this_median",
            "later_median_s", "ms_per_iter_median"},
}


@pytest.fixture(scope="module", autouse=True)
def cheap_compiles():
    """No timing is asserted here, so skip XLA's expensive optimization passes (about
    a quarter of this file's CPU time); restored afterwards."""
    old = jax.config.values.get("jax_disable_most_optimizations", False)
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_results")


#: suites whose tiny run is in the long slice (each still runs with `python -m
#: benchmarks.run NAME --size tiny`); the default run smokes the rest and the writers
LONG_SUITES = {"compiler", "gradient", "sharding", "svi", "state_space", "gmm_full", "hmm",
               "gibbs"}


@pytest.mark.parametrize("name", long_params(list(runner.SUITES), LONG_SUITES))
def test_suite_tiny(name, out_dir):
    res = runner.run_suite(name, "tiny", "float32", out_dir)
    data = json.loads((out_dir / f"{name}.json").read_text())
    for key in report.REQUIRED_KEYS:
        assert key in data, key
    assert data["suite"] == name and data["size"] == "tiny" and data["dtype"] == "float32"
    for key in report.ENV_KEYS:
        assert key in data["environment"], key
    assert data["environment"]["cpu_count"] >= 1 and data["environment"]["jax"]
    assert "seed" in data["config"]
    assert data["tables"], "a suite must report at least one table"
    for table in data["tables"]:
        assert table["name"] and table["columns"] and table["rows"]
        for row in table["rows"]:
            extra = set(row) - set(table["columns"])
            assert not extra, (table["name"], extra)
    columns = set().union(*(t["columns"] for t in data["tables"]))
    assert TIMING_COLUMNS.get(name, set()) <= columns
    for t in data["targets"]:
        assert set(t) >= {"target", "measured", "limit", "met"}
        assert isinstance(t["met"], bool)
    md = (out_dir / f"{name}.md").read_text()
    assert md.startswith(f"# {data['title']}")
    for section in ("## Machine", "## Configuration", "| jax |", "| device_kind |"):
        assert section in md, section
    for table in data["tables"]:
        assert f"## {table['name']}" in md
        assert "| " + " | ".join(table["columns"]) + " |" in md
    summary = (out_dir / "SUMMARY.md").read_text()
    assert data["title"] in summary
    assert res["paths"]["json"].endswith(f"{name}.json")


def test_cavi_tiny_sanity(out_dir):
    """The hand-written reference and vijax must agree (the cavi suite's own check)."""
    path = out_dir / "cavi.json"
    if not path.exists():
        runner.run_suite("cavi", "tiny", "float32", out_dir)
    data = json.loads(path.read_text())
    same = [t for t in data["targets"] if "same ELBO" in t["target"]]
    assert same and same[0]["met"], same


def test_writers_and_summary(tmp_path):
    result = {"suite": "toy", "title": "Toy", "size": "tiny", "dtype": "float64",
              "config": {"seed": 3, "N": 10}, "environment": report.environment(),
              "tables": [{"name": "t", "columns": ["a", "b"],
                          "rows": [{"a": 1.5, "b": "x|y"}, {"a": float("nan")}]}],
              "targets": [{"target": "toy ratio", "measured": 0.9, "limit": "<= 1",
                           "met": True}],
              "notes": ["n"], "timestamp": report.now()}
    paths = report.write(result, tmp_path)
    data = json.loads((tmp_path / "toy.json").read_text())
    assert data["tables"][0]["rows"][1]["a"] == "nan"  # JSON stays valid
    md = (tmp_path / "toy.md").read_text()
    assert "x\\|y" in md and "| toy ratio | 0.9 | <= 1 | yes |" in md
    (tmp_path / "foreign.json").write_text(json.dumps({"benchmark": "other"}))  # ignored
    summary = report.write_summary(tmp_path)
    text = open(summary).read()
    assert "| toy | toy ratio |" in text and "## Toy (`toy`)" in text
    assert paths["md"].endswith("toy.md")
    with pytest.raises(ValueError):
        report.write({"suite": "bad"}, tmp_path)


def test_cli(capsys, tmp_path):
    assert runner.main(["--list"]) == 0
    assert set(capsys.readouterr().out.split()) == set(runner.SUITES)
    with pytest.raises(SystemExit):
        runner.main(["no_such_suite", "--out", str(tmp_path)])
    with pytest.raises(ValueError):
        runner.run_suite("cavi", "huge", "float32", tmp_path)
