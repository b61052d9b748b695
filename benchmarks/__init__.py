"""vijax benchmark suites and their runner (``python -m benchmarks.run``)."""
