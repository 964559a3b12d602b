"""Dagster assets of the wsovvis graph, one module per pipeline stage."""
