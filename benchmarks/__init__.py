"""Measurements, run from the repository root as modules: `python -m benchmarks.<name>`.

Each writes its figures to `benchmarks/results/<name>.json` (see `results_io`), and
`python -m benchmarks.render_docs` renders every figure in README.md and docs/ from them.
"""
