"""A split's tubes: every registered video's mask folder into one tube JSON (`tube_json`), with
the Parquet tube index and the YouTube-VIS results export beside it, all from one streaming pass;
what was left out and why; and the format check of a split's JSON."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wsovvis_dagster.atomic import remove_stale_temp_dirs
from wsovvis_dagster.errors import (
    FrameError,
    MaskFormatError,
    MissingMasksError,
    OutputWriteError,
    TubeFormatError,
    WsovvisError,
)
from wsovvis_dagster.masks.png_io import read_mask_source
from wsovvis_dagster.paths import (
    SPLITS,
    VideoRef,
    frames_dir,
    gt_json_path,
    masks_dir,
    tube_json_path,
)
from wsovvis_dagster.video.frames import list_frame_files
from wsovvis_dagster.ytvis.format import load_gt, validate_tube_json
from wsovvis_dagster.ytvis.index import (
    TubeIndexRows,
    index_counts,
    top_rows_markdown,
    write_index_frame,
)
from wsovvis_dagster.ytvis.linking import LinkParams
from wsovvis_dagster.ytvis.results import results_json_path, stream_results
from wsovvis_dagster.ytvis.tubes import (
    convert_mask_folders,
    default_workers,
    load_tube_json,
    write_tube_json,
)


@dataclass(frozen=True)
class SplitOutputs:
    """Files written beside a split's tube JSON, and a summary of its tubes."""

    split: str
    index_path: Path
    counts: dict[str, int | float]  # index.index_counts
    top_rows: str  # Markdown table of the best-scored tubes
    results_path: Path
    results: int
    results_use_gt_ids: bool
    videos_not_in_gt: tuple[str, ...]


@dataclass(frozen=True)
class SplitTubesResult:
    split: str
    path: Path
    videos: int
    tubes: int
    frames: int
    bytes: int
    # videos whose frame folder vanished: left out of the JSON (their masks cannot be checked and
    # their file names would point at nothing), never a crash
    missing_frames: tuple[str, ...]
    # the Parquet index and the results JSON written beside it in the same pass
    outputs: SplitOutputs
    # every registered video not in the JSON, partition key -> why (no masks, frames gone)
    left_out: dict[str, str] = field(default_factory=dict)
    # where the masks came from: "mask_pngs" (a predictor) or "import:<origin>" -> video count
    mask_sources: dict[str, int] = field(default_factory=dict)
    # videos left out because converting them failed (also in left_out): key -> the error
    broken: dict[str, str] = field(default_factory=dict)


def splits_with_tubes(output_root: Path) -> list[str]:
    """Splits whose `tubes_<split>.json` exists."""
    return [s for s in SPLITS if tube_json_path(output_root, s).is_file()]


def find_videos_without_masks(output_root: Path, refs: Iterable[VideoRef]) -> list[VideoRef]:
    return [r for r in refs if not masks_dir(output_root, r).is_dir()]


def build_split_tubes(
    data_root: Path,
    output_root: Path,
    split: str,
    refs: list[VideoRef],
    *,
    allow_partial: bool = False,
    linking: LinkParams | None = None,
    workers: int = 0,
    progress: Callable[[int, int, VideoRef], None] | None = None,
    failed: Collection[str] = (),
) -> SplitTubesResult:
    """Convert the mask folders of `refs` (one split) into `tubes_<split>.json`, and write
    `tubes_<split>.parquet` (the tube index) and `results_<split>.json` (YouTube-VIS results;
    with the split's GT, `<data_root>/annotations/<split>_instances.json`, under the GT's video
    ids, matched by name) beside it from the same pass: the JSON is never read back.

    Every mask is checked against its video's frames (stem and size), and each video's length,
    file names and size are its frames' (`tubes.video_tubes_from_masks`). Conversion runs over
    `workers` processes in one streaming pass (0: `tubes.default_workers`); with `linking`,
    ids are relinked into tracks by mask IoU (tubes keep the predictor's ids in `source_ids`).

    Videos with no masks yet raise `MissingMasksError` listing them, unless `allow_partial`,
    which leaves them out and lists them in `left_out`. A registered video whose frame folder
    was deleted is named in `missing_frames` and left out (no frames to check its masks against).
    A video that cannot be converted (frames emptied or changed under its masks, a broken mask,
    a path out of the roots) is left out too, its error in `broken` and `left_out`: one bad
    video costs itself, never the split (unless no video is left). So is a video without masks
    whose last `mask_pngs` run `failed` (partition keys): it is named, not an error.
    """
    frames_root = Path(data_root) / split / "JPEGImages"
    broken: dict[str, str] = {}  # videos that cannot be converted: left out, named
    usable = []
    for r in refs:
        try:  # a symlink out of a root costs its video, not the split
            frames_dir(data_root, r), masks_dir(output_root, r)
        except WsovvisError as exc:
            broken[r.partition_key] = str(exc)
        else:
            usable.append(r)
    refs = usable
    gone = {r for r in refs if not frames_dir(data_root, r).is_dir()}
    without_masks = find_videos_without_masks(output_root, refs)
    # only when the split's frame folder exists: an unmounted data root is not a deletion
    deleted = gone if frames_root.is_dir() else set()
    failed = set(failed)
    for r in without_masks:
        if r not in deleted and r.partition_key in failed:
            broken[r.partition_key] = ("its last mask_pngs run failed (see that run); fix the "
                                       "cause and materialise mask_pngs for it again")
    missing = [r for r in without_masks if r not in deleted and r.partition_key not in broken]
    if missing and not allow_partial:
        listed = ", ".join(r.partition_key for r in missing[:20])
        more = f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""
        raise MissingMasksError(
            f"{len(missing)} of {len(refs)} {split} videos have no mask PNGs yet: {listed}{more}. "
            "Materialise mask_pngs for them first (or import masks: wsovvis import-masks), or "
            "set allow_partial: true"
        )
    left_out = {r.partition_key: "no mask PNGs yet (mask_pngs not materialised)" for r in missing}
    for r in refs:
        if r in deleted:
            left_out[r.partition_key] = f"frame folder {frames_dir(data_root, r)} was deleted"
    ready = [r for r in refs if r.partition_key not in left_out and r.partition_key not in broken]
    if not ready and not allow_partial:
        raise MissingMasksError(
            f"none of the {len(refs)} registered {split} videos has mask PNGs and frames "
            f"({len(deleted)} were deleted from {frames_root}); refusing to write an empty "
            f"{tube_json_path(output_root, split).name}. Materialise mask_pngs first"
        )
    missing_frames = tuple(r.partition_key for r in refs if r in gone)
    if ready and not frames_root.is_dir():
        raise FrameError(
            f"{frames_root} does not exist, so the masks of {len(ready)} {split} videos cannot "
            "be checked against their frames: is the data root mounted (WSOVVIS_DATA_ROOT)?"
        )
    sources: dict[str, int] = {}
    order: deque = deque()  # (ref, mask source) of the items handed to the converter

    def items():  # lazily: one frame listing per video as conversion reaches it
        for ref in ready:
            try:
                folder = masks_dir(output_root, ref)
                frames = list_frame_files(frames_dir(data_root, ref))
                if not frames:
                    raise FrameError(
                        f"video folder {frames_dir(data_root, ref)} holds no frames (emptied?), "
                        "so its masks cannot be checked: restore its frames, or re-ingest it "
                        "and re-run mask_pngs")
                source = read_mask_source(folder)
            except WsovvisError as exc:
                broken[ref.partition_key] = str(exc)
                continue
            order.append((ref, f"import:{source.get('origin', '?')}" if source else "mask_pngs"))
            yield folder, ref.video_id, frames

    def videos():
        converted = convert_mask_folders(items(), linking=linking, keep_going=True,
                                         workers=workers or default_workers(len(ready)))
        done = 0
        for i, video in enumerate(converted):
            ref, label = order.popleft()
            if progress:
                progress(i, len(ready), ref)
            if isinstance(video, WsovvisError):
                # one bad video (frames changed under its masks, a broken mask) costs itself
                broken[ref.partition_key] = str(video)
                continue
            sources[label] = sources.get(label, 0) + 1  # info is written after the videos
            done += 1
            yield video
        if not done and broken:  # nothing usable: keep the previous JSON (atomic write)
            raise MaskFormatError(
                f"none of the {len(ready)} {split} videos with masks could be converted: "
                + "; ".join(f"{k}: {v}" for k, v in list(broken.items())[:5]))

    path = tube_json_path(output_root, split)
    remove_stale_temp_dirs(path.parent)  # temp files of tube_json runs killed over an hour ago
    gt_path = gt_json_path(data_root, split)
    gt = load_gt(gt_path) if gt_path.is_file() else None  # results then use its video ids
    info = {"split": split, "source": "wsovvis mask_pngs", "mask_sources": sources}
    if linking is not None:
        info["linking"] = asdict(linking)
    index = TubeIndexRows(split)
    try:
        # one pass: each video's tubes go to the JSON, the index rows and the results stream
        with stream_results(results_json_path(path, split), gt=gt) as results:
            counts = write_tube_json(path, videos(), info=info, collectors=(index, results))
        df = index.frame()
        index_path = write_index_frame(df, path, split)
    except OSError as exc:
        raise OutputWriteError(
            f"cannot write {path} (or the index and results beside it): {exc}. Files not yet "
            "replaced keep their previous version; free disk space (or fix permissions) and "
            "re-run tube_json"
        ) from exc
    left_out.update(broken)
    export = results.export()
    outputs = SplitOutputs(
        split=split, index_path=index_path, counts=index_counts(df),
        top_rows=top_rows_markdown(df), results_path=export.path, results=export.results,
        results_use_gt_ids=gt is not None, videos_not_in_gt=export.skipped_videos,
    )
    return SplitTubesResult(
        split=split, path=path, videos=counts["videos"], tubes=counts["tubes"],
        frames=counts["frames"], bytes=path.stat().st_size, missing_frames=missing_frames,
        left_out=left_out, mask_sources=sources, broken=broken, outputs=outputs,
    )


def check_split_format(tube_json: Path) -> list[str]:
    """Problems of a tube JSON file (unreadable counts as one); empty when it is valid."""
    try:
        data = load_tube_json(tube_json)
    except TubeFormatError as exc:
        return [str(exc)]
    return validate_tube_json(data, Path(tube_json).name)
