"""What `tube_json` writes beside a split's tube JSON, and what its asset checks compute.

Plain functions over files (the Dagster layer turns their dataclasses into metadata):
- `write_split_outputs`: the Parquet tube index and the YouTube-VIS results export;
- `check_split_format` / `evaluate_split_tubes`: tube JSON validation and class-agnostic
  AP / recall against `<data_root>/annotations/<split>_instances.json` when it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import TubeFormatError
from wsovvis_dagster.evaluation.ytvis_ap import evaluate_results
from wsovvis_dagster.paths import SPLITS, tube_json_path
from wsovvis_dagster.ytvis.format import load_gt, validate_tube_json
from wsovvis_dagster.ytvis.index import index_counts, top_rows_markdown, write_tube_index
from wsovvis_dagster.ytvis.results import export_results, results_json_path, tubes_to_results
from wsovvis_dagster.ytvis.tubes import load_tube_json


def splits_with_tubes(output_root: Path) -> list[str]:
    """Splits whose `tubes_<split>.json` exists."""
    return [s for s in SPLITS if tube_json_path(output_root, s).is_file()]


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


def write_split_outputs(
    tube_json: Path, split: str, *, gt_path: Path | None = None
) -> SplitOutputs:
    """Write `tubes_<split>.parquet` and `results_<split>.json` beside `tube_json`.

    With an existing `gt_path`, results use the GT's video ids (matched by name).
    """
    data = load_tube_json(tube_json)
    index_path, df = write_tube_index(data, split, tube_json)
    gt = load_gt(gt_path) if gt_path is not None and Path(gt_path).is_file() else None
    export = export_results(data, results_json_path(tube_json, split), gt=gt)
    return SplitOutputs(
        split=split,
        index_path=index_path,
        counts=index_counts(df),
        top_rows=top_rows_markdown(df),
        results_path=export.path,
        results=export.results,
        results_use_gt_ids=gt is not None,
        videos_not_in_gt=export.skipped_videos,
    )


def check_split_format(tube_json: Path) -> list[str]:
    """Problems of a tube JSON file (unreadable counts as one); empty when it is valid."""
    try:
        data = load_tube_json(tube_json)
    except TubeFormatError as exc:
        return [str(exc)]
    return validate_tube_json(data, Path(tube_json).name)


def evaluate_split_tubes(tube_json: Path, gt_path: Path) -> dict[str, float]:
    """Class-agnostic AP / AR / recall of a split's tubes against its ground truth."""
    gt = load_gt(gt_path)
    results = tubes_to_results(load_tube_json(tube_json), gt=gt)
    return evaluate_results(gt, results, class_agnostic=True)
