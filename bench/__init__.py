"""Benchmarks of pipeline-state: figures and ratios against baselines measured in the same run.

Run ``python bench/run.py`` (or ``python -m bench.run``); see ``bench/README.md``. Nothing
here is imported by the library or asserted on by the test suite, apart from a smoke test
that runs the quick mode and checks the figure names.
"""
