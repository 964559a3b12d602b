"""A split's tube JSON, index and results from one pass: the same files as building the index
and results from the JSON read back, without reading it back."""

import builtins
import json
import pathlib

import numpy as np
import polars as pl
import pytest
from PIL import Image

from wsovvis_dagster.errors import MaskFormatError
from wsovvis_dagster.masks.png_io import write_mask_pngs
from wsovvis_dagster.paths import VideoRef, gt_json_path, masks_dir
from wsovvis_dagster.ytvis.format import load_gt
from wsovvis_dagster.ytvis.index import build_tube_index, index_counts, top_rows_markdown
from wsovvis_dagster.ytvis.linking import LinkParams
from wsovvis_dagster.ytvis.results import export_results
from wsovvis_dagster.ytvis.split import build_split_tubes
from wsovvis_dagster.ytvis.tubes import load_tube_json

W, H = 24, 16


def _video(data, out, name: str, frames: int, masked: range, seed: int) -> VideoRef:
    """Noise frames, and masks on the `masked` frames: two moving boxes and a flickering one."""
    ref = VideoRef("val", name)
    folder = data / "val" / "JPEGImages" / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for t in range(frames):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            folder / f"{t:05d}.jpg")
    maps = np.zeros((len(masked), H, W), dtype=np.uint8)
    for i, t in enumerate(masked):
        maps[i, 1:5, t % 8:t % 8 + 6] = 1
        maps[i, 8:14, 10 + t % 5:16 + t % 5] = 2
        if t % 3 == 0:
            maps[i, 12:14, 0:2] = 3 + t % 2  # short tubes with tiny masks
    write_mask_pngs(masks_dir(out, ref), [f"{t:05d}" for t in masked], maps,
                    {1: 0.9, 2: 0.4 + seed / 10, 3: 0.2})
    return ref


@pytest.fixture
def split(tmp_path):
    """Four val videos: one with masks on some of its frames, one with a broken mask PNG."""
    data, out = tmp_path / "data", tmp_path / "outputs"
    refs = [_video(data, out, "alpha", 6, range(6), 1),
            _video(data, out, "beta", 8, range(2, 7), 2),
            _video(data, out, "gamma", 5, range(5), 3),
            _video(data, out, "broken", 3, range(3), 4)]
    (masks_dir(out, refs[-1]) / "mask_00001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return data, out, refs


def _write_gt(data, names: list[str]) -> None:
    """GT for some videos of the split, under ids of its own (YouTube-VIS file names only)."""
    videos = [{"id": 40 + i, "width": W, "height": H, "length": 1,
               "file_names": [f"{name}/00000.jpg"]} for i, name in enumerate(names)]
    gt = {"videos": videos, "annotations": [],
          "categories": [{"id": 1, "name": "object"}]}
    path = gt_json_path(data, "val")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(gt))


class ReadGuard:
    """While `on`, a read of a `tubes_*.json` (builtins.open, Path.open / read_text /
    read_bytes) raises and is listed in `reads`."""

    def __init__(self) -> None:
        self.on, self.reads = True, []

    def check(self, file, mode: str) -> None:
        name = pathlib.Path(str(file)).name
        if self.on and name.startswith("tubes_") and name.endswith(".json") and "r" in mode:
            self.reads.append(name)
            raise AssertionError(f"{name} was read back")


@pytest.fixture
def read_guard(monkeypatch):
    guard = ReadGuard()
    real_open, real_path_open = builtins.open, pathlib.Path.open

    def checked_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, pathlib.PurePath)):
            guard.check(file, mode)
        return real_open(file, mode, *args, **kwargs)

    def checked_path_open(self, mode="r", *args, **kwargs):
        guard.check(self, mode)
        return real_path_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", checked_open)
    monkeypatch.setattr(pathlib.Path, "open", checked_path_open)
    return guard


def test_the_read_guard_catches_load_tube_json(split, read_guard):
    """Sanity for the test below: reading a tube JSON back the usual way trips the guard."""
    data, out, refs = split
    read_guard.on = False
    path = build_split_tubes(data, out, "val", refs[:1]).path
    read_guard.on = True
    with pytest.raises(AssertionError, match="was read back"):
        load_tube_json(path)


@pytest.mark.parametrize("gt_videos", [None, ["gamma", "alpha"]], ids=["own_ids", "gt_ids"])
@pytest.mark.parametrize("linking", [None, LinkParams()], ids=["plain", "linked"])
def test_index_and_results_of_the_one_pass_equal_those_of_the_json_read_back(
        split, gt_videos, linking, read_guard, tmp_path):
    """`build_split_tubes` writes the tube index and results beside the JSON without reading
    the JSON back (so memory holds one video, not the split), and they are what building them
    from the JSON read back gives (`build_tube_index`, `export_results`): the same index, the
    same results bytes, the same summary; a broken video is in none of them."""
    data, out, refs = split
    if gt_videos:
        _write_gt(data, gt_videos)
    result = build_split_tubes(data, out, "val", refs, linking=linking)
    assert read_guard.reads == []
    read_guard.on = False
    assert set(result.broken) == {"val__broken"} and result.videos == 3
    outputs = result.outputs

    tubes = load_tube_json(result.path)  # the path before: the JSON read back
    index = build_tube_index(tubes, "val")
    assert index.height == result.tubes > 6
    assert pl.read_parquet(outputs.index_path).equals(index)
    assert outputs.counts == index_counts(index) and outputs.counts["short_tubes"] > 0
    assert outputs.top_rows == top_rows_markdown(index)
    gt = load_gt(gt_json_path(data, "val")) if gt_videos else None
    export = export_results(tubes, tmp_path / "results_read_back.json", gt=gt)
    assert outputs.results_path.read_bytes() == export.path.read_bytes()
    assert (outputs.results, outputs.videos_not_in_gt) == (export.results, export.skipped_videos)
    assert outputs.results_use_gt_ids == bool(gt_videos)
    if gt_videos:
        assert outputs.videos_not_in_gt == ("beta",)
        assert {r["video_id"] for r in json.loads(export.path.read_text())} == {40, 41}
    else:
        assert outputs.results == result.tubes


def test_a_failed_pass_keeps_the_previous_index_and_results(split, read_guard):
    """Nothing converted (every video broken): the JSON, index and results stay as they were."""
    data, out, refs = split
    read_guard.on = False
    first = build_split_tubes(data, out, "val", refs[:2]).outputs
    before = {p: p.read_bytes() for p in (first.index_path, first.results_path)}
    with pytest.raises(MaskFormatError, match="could be converted"):
        build_split_tubes(data, out, "val", refs[3:])
    assert {p: p.read_bytes() for p in before} == before
    assert [p.name for p in first.index_path.parent.iterdir() if p.name.startswith(".")] == []
