"""Operating the platform from Python: the layer benchmarks, scripts and tests share.

It builds on the library and the code location (definitions.py) and sits below `benchmarks/`,
`scripts/` and `tests/`, which import it and never each other (tests/test_definitions.py checks).

- `wsovvis_ops.instance`: render a DAGSTER_HOME from the project template, start/stop the
  daemon, wait.
- `wsovvis_ops.backfill`: queue a GPU-tagged asset backfill (what `scripts/backfill.py` runs).
- `wsovvis_ops.runs`: run and GPU-lease spans read back from an instance.
- `wsovvis_ops.pg_cluster`: a throw-away PostgreSQL cluster.
- `wsovvis_ops.ray_cluster`: a local Ray cluster with fake-GPU nodes (stopped by pid), the
  instance config of a Ray deployment, and both with PostgreSQL as one rehearsal deployment.
"""
