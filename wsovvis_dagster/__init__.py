"""wsovvis_dagster: the plain library behind the wsovvis Dagster platform.

Nothing in this package imports Dagster: the code location (`definitions.py`, `assets/`,
`resources/` at the repository root) imports this library, never the reverse.
"""

__version__ = "0.1.0"
