"""Queue a GPU-tagged backfill of mask_pngs (then tube_json) for the daemon to run.

The same as the UI's "Materialize all partitions" (whose runs the instance's run coordinator
tags `gpu=true`, wsovvis_instance.coordinator), from a shell: every run is tagged here already,
so surplus runs stay QUEUED under the tag limit, and `--missing` / `--split` pick the videos.
Needs the daemon (`dagster dev` or `dagster-daemon run -w workspace.yaml`) on the same
DAGSTER_HOME. Runs hold up to WSOVVIS_VIDEOS_PER_RUN neighbouring videos each (model loaded
once per run; 48 with videocutler, else 4).

    python scripts/backfill.py                 # every registered video
    python scripts/backfill.py --missing       # videos without masks (imported ones have some)
    python scripts/backfill.py --overwrite-imported --split val   # replace imported masks too
    python scripts/backfill.py --split val --no-tubes
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dagster import AssetKey, DagsterInstance  # noqa: E402

from wsovvis_dagster.errors import UnsafeNameError  # noqa: E402
from wsovvis_dagster.paths import VideoRef  # noqa: E402
from wsovvis_dagster.pipeline import find_imported_masks  # noqa: E402
from wsovvis_ops.backfill import configured_paths, launch_backfill  # noqa: E402


def _imported_keys(keys: list[str]) -> set[str]:
    """The keys whose mask folder holds imported masks (keys that name no video are left to
    the mask runs, which report them)."""
    refs = []
    for key in keys:
        try:
            refs.append(VideoRef.from_partition_key(key))
        except UnsafeNameError:
            continue
    return {r.partition_key for r in find_imported_masks(configured_paths().outputs, refs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--missing", action="store_true",
                        help="only videos without masks: not materialised, and not imported "
                        "(wsovvis import-masks)")
    parser.add_argument("--overwrite-imported", action="store_true",
                        help="replace imported masks with predictor output (without it every "
                        "run keeps them); queues mask_pngs only, materialise tube_json after")
    parser.add_argument("--split", choices=["train", "val", "test"], help="only this split")
    parser.add_argument("--no-tubes", action="store_true", help="do not rebuild tube_json after")
    args = parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        keys = instance.get_dynamic_partitions("videos")
        if args.split:
            keys = [k for k in keys if k.startswith(f"{args.split}__")]
        if args.missing:
            done = instance.get_materialized_partitions(AssetKey("mask_pngs"))
            imported = _imported_keys(keys)
            keys = [k for k in keys if k not in done and k not in imported]
        if not keys:
            print("nothing to backfill (materialise video_partitions to register videos)")
            return 0
        # a backfill's run config goes to all its runs: tube_json's would refuse mask_pngs' key
        assets = (("mask_pngs",) if args.no_tubes or args.overwrite_imported
                  else ("mask_pngs", "tube_json"))
        run_config = ({"ops": {"mask_pngs": {"config": {"overwrite_imported": True}}}}
                      if args.overwrite_imported else None)
        backfill_id = launch_backfill(instance, keys, assets=assets, run_config=run_config)
    print(f"queued backfill {backfill_id}: {len(keys)} videos, assets {', '.join(assets)}; "
          f"follow it at http://127.0.0.1:{os.environ.get('WSOVVIS_UI_PORT') or 3000}/runs/b/"
          f"{backfill_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
