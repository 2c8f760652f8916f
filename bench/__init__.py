"""Benchmarks for issue #6: `sfcluster up/run/down` against Ray's own launcher (`ray up`) and the
bare lower bound, on N = 2, 4, 8 uniform nodes. Not tests: nothing here asserts a time.
Entry point: `python -m bench.run` (see bench/README.md)."""
