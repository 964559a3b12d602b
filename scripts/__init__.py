"""Entry scripts, run from the repository root as modules: `python -m scripts.<name>`
(the repository root on the path gives them the code location and `wsovvis_ops`)."""
