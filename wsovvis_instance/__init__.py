"""Dagster *instance* plugins for wsovvis, installed beside the plain library.

`dagster.yaml` names these classes, so the webserver, the daemon, `dagster asset materialize`
and every run worker import them through the instance, whatever their working directory (on
Kubernetes: from the image's site-packages). That is why they are neither in the code location
(`assets/`, `resources/`, loaded from the repo root by workspace.yaml only) nor in the library
(`wsovvis_dagster`, which never imports Dagster). Direction: this package imports the library,
never the reverse.

- `coordinator.GpuRunCoordinator`: the queued run coordinator, tagging every run that selects a
  GPU asset with the GPU run tags at submission (UI backfills included);
- `launcher.LocalRunLauncher`: Dagster's default launcher plus a run-worker health check by
  process id, so run monitoring fails dead runs (a `kill -9`ed CLI run included) and frees
  their pool slots;
- `liveness`: which processes a run has and whether any is alive; the `gpu` pool and lease
  report behind `wsovvis gpus`;
- `ray_launcher.WsovvisRayRunLauncher` (`ray` extra): runs placed on a Ray cluster, each GPU
  run asking for its GPU share;
- `fencing` / `fenced_storage`: a run Dagster has failed publishes nothing more and never
  becomes SUCCESS (multi-host runs);
- `cli`: the `wsovvis` command, the library's subcommands plus `gpus`.
"""
