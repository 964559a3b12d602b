"""Queue GPU-tagged mask_pngs runs (then tube_json) for the daemon to run.

The runs go straight on the run queue (`wsovvis_ops.backfill.queue_mask_runs`): the first starts
within seconds, and the last mask run to end (failed ones too) queues tube_json at once (the
`tube_json_after_masks` sensor when two end together), instead of the backfill daemon's 30 s
loop that a UI backfill waits on. Every run is tagged `gpu=true`, so surplus runs stay QUEUED
under the tag limit; `--missing` / `--split` pick the videos. Needs the daemon (`dagster dev`
or `dagster-daemon run -w workspace.yaml`) on the same DAGSTER_HOME. Runs hold up to
WSOVVIS_VIDEOS_PER_RUN neighbouring videos each (128 with videocutler, else 4), fewer when that
leaves a GPU slot idle.

With a backend that keeps its model in a predictor worker (videocutler, by default), it also
starts the workers of the GPU slots the runs will take, in the background, before it returns (it
does not wait for the models: 13-22 s each on an H200, docs/gpu.md), so the first runs find
their model built or building rather than building it themselves; it prints which slots.
Registering videos (`video_partitions`) already started them when it found videos without
masks, so a backfill queued after that usually finds them built. Workers this script starts
use this shell's environment: run it with the daemon's WSOVVIS_* settings, or the runs (whose
settings would then differ) replace them. If starting them fails, it says so and each run
starts its own.

    python -m scripts.backfill                 # every registered video
    python -m scripts.backfill --missing       # videos without masks (imported ones have some)
    python -m scripts.backfill --overwrite-imported --split val   # replace imported masks too
    python -m scripts.backfill --split val --no-tubes
"""

from __future__ import annotations

import argparse
import os
import sys

from dagster import DagsterInstance

from wsovvis_ops.backfill import configured_paths, queue_mask_runs, videos_without_masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--missing", action="store_true",
                        help="only videos without masks: not materialised, and not imported "
                        "(wsovvis import-masks)")
    parser.add_argument("--overwrite-imported", action="store_true",
                        help="replace imported masks with predictor output (without it every "
                        "run keeps them)")
    parser.add_argument("--split", choices=["train", "val", "test"], help="only this split")
    parser.add_argument("--no-tubes", action="store_true", help="do not rebuild tube_json after")
    args = parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        keys = instance.get_dynamic_partitions("videos")
        if args.split:
            keys = [k for k in keys if k.startswith(f"{args.split}__")]
        if args.missing:
            keys = videos_without_masks(instance, keys, configured_paths().outputs)
        if not keys:
            print("nothing to backfill (materialise video_partitions to register videos)")
            return 0
        # the run config reaches the mask runs only (tube_json's run is the sensor's)
        run_config = ({"ops": {"mask_pngs": {"config": {"overwrite_imported": True}}}}
                      if args.overwrite_imported else None)
        batch = queue_mask_runs(instance, keys, tubes=not args.no_tubes, run_config=run_config)
    print(batch.workers.summary())
    print(f"queued {len(batch.run_ids)} mask_pngs runs for {len(keys)} videos (batch "
          f"{batch.batch_id}{', then tube_json' if batch.tubes else ''}); follow them at "
          f"http://127.0.0.1:{os.environ.get('WSOVVIS_UI_PORT') or 3000}/runs?q%5B0%5D="
          f"tag%3Awsovvis%2Fbatch%3D{batch.batch_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
