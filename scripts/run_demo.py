"""Run the embedded demo end to end against the Dagster instance in $DAGSTER_HOME.

Generates the synthetic dataset (if absent), then materialises video_partitions, mask_pngs for
every registered video (multi-partition runs of `mask_pngs_job`), tube_json and trained_model
(2 CPU processes under torchrun, tracked by Sacred; skip it with --no-train). Each step is a
real Dagster run recorded in the instance, visible afterwards in `dagster dev`.
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # no DEBUG event stream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", default=str(REPO / "data" / "demo"),
                   help="where the synthetic dataset lives / is generated (default: data/demo)")
    p.add_argument("--output-root", default=str(REPO / "outputs"),
                   help="where masks and tube JSON go (default: outputs/)")
    p.add_argument("--videos-per-split", type=int, default=24,
                   help="synthetic videos per split (24: enough for training to beat chance)")
    p.add_argument("--frames", type=int, default=16, help="frames per synthetic video")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    p.add_argument("--no-train", action="store_true",
                   help="stop after tube_json (no torch needed)")
    return p.parse_args(argv)


def contiguous_ranges(all_keys: list[str], wanted: set[str]) -> list[tuple[str, str]]:
    """Split `wanted` into runs of consecutive keys in the instance's key order."""
    ranges, start, prev = [], None, None
    for key in all_keys:
        if key in wanted:
            start = start or key
            prev = key
        elif start:
            ranges.append((start, prev))
            start = None
    if start:
        ranges.append((start, prev))
    return ranges


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["WSOVVIS_DATA_ROOT"] = args.data_root
    os.environ["WSOVVIS_OUTPUT_ROOT"] = args.output_root

    from dagster import AssetKey, DagsterInstance

    from definitions import defs
    from wsovvis_dagster.video.frames import scan_videos
    from wsovvis_dagster.video.synthetic import generate_dataset
    from wsovvis_instance.dagster_private import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    started = time.perf_counter()
    data_root = Path(args.data_root)
    if not (data_root / "annotations").is_dir():
        print(f"[demo] generating synthetic dataset in {data_root}")
        generate_dataset(
            data_root, seed=args.seed, num_frames=args.frames,
            videos_per_split={"train": args.videos_per_split, "val": args.videos_per_split},
        )
    assets_job = defs.resolve_implicit_global_asset_job_def()
    with DagsterInstance.get() as instance:
        print(f"[demo] Dagster instance: {instance.root_directory}")
        ok = assets_job.execute_in_process(
            instance=instance, asset_selection=[AssetKey("video_partitions")], run_config=QUIET
        ).success
        wanted = {v.ref.partition_key for v in scan_videos(data_root).videos}
        keys = instance.get_dynamic_partitions("videos")
        masks_job = defs.resolve_job_def("mask_pngs_job")
        for first, last in contiguous_ranges(keys, wanted):
            print(f"[demo] mask_pngs for partitions {first} ... {last}")
            ok = ok and masks_job.execute_in_process(
                instance=instance, run_config=QUIET,
                tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
            ).success
        ok = ok and assets_job.execute_in_process(
            instance=instance, asset_selection=[AssetKey("tube_json")], run_config=QUIET
        ).success
        if ok and not args.no_train:
            print("[demo] trained_model: torchrun, 2 CPU processes, tracked by Sacred")
            result = assets_job.execute_in_process(
                instance=instance, asset_selection=[AssetKey("trained_model")], run_config=QUIET
            )
            ok = result.success
            if ok:
                md = result.asset_materializations_for_node("trained_model")[0].metadata
                # the last value of each Sacred metric is the asset's metadata
                trained = {k: md[k].value for k in ("val.model.AP", "val.model.APb",
                                                    "val.model.APn", "val.random.AP",
                                                    "val.oracle.AP") if k in md}
    if not ok:
        print("[demo] a step failed; see the log above", file=sys.stderr)
        return 1
    out = Path(args.output_root)
    print(f"[demo] done in {time.perf_counter() - started:.1f} s")
    for tubes in sorted(out.glob("*/tubes_*.json")):
        print(f"[demo] tube JSON: {tubes}")
    print(f"[demo] mask PNGs under {out}/<split>/masks/<video_id>/")
    if not args.no_train:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in trained.items())
        print(f"[demo] trained_model on val: {shown}")
    print("[demo] open the UI:  source .venv/bin/activate && dagster dev -h 127.0.0.1   (http://127.0.0.1:3000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
