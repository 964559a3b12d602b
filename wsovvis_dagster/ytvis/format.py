"""YouTube-VIS JSON: checking and normalising ground truth, results and tube JSON.

Ground truth (YouTube-VIS 2019 layout):
    {"videos": [{"id", "height", "width", "length", "file_names", "name"?}],
     "annotations": [{"id", "video_id", "category_id", "iscrowd",
                      "segmentations": [RLE | null per frame]}],
     "categories": [{"id", "name", "partition"?}]}
Results: [{"video_id", "category_id", "score", "segmentations": [RLE | null per frame]}].

An RLE is pycocotools' `{"size": [h, w], "counts": str}` (compressed) or `counts` as a list of
ints (uncompressed, column-major, starting with a background run). Normalising turns every RLE
into the compressed form with `counts` as `str`, and checks that its runs cover exactly h*w
pixels. Problems are reported with the JSON path of the offending value, e.g.
`annotations[3].segmentations[7]`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from wsovvis_dagster.errors import TubeFormatError

# RLE characters checked per NumPy batch: bounds its temporaries (some 80 bytes a character;
# a count of RLEs would not: 200,000 RLEs of a 720p video took 4 GB)
_CHECK_CHARS = 2_000_000


def compressed_counts_totals(counts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Decode many compressed RLE `counts` at once; return `(totals, ok)`, both `(N,)`.

    `totals[i]` is the number of pixels the i-th RLE covers (its runs summed, int64); `ok[i]` is
    False where the string is malformed (a character outside '0'..'o', a value of more than 7
    characters, a string that ends inside a value). This follows pycocotools' `rleFrString`,
    vectorised over the concatenated strings: 5 bits per character, 0x20 = more characters
    follow, 0x10 on the last one = negative, and runs from the fourth on stored as differences
    to the run two places before.
    Undoing that delta coding, run j >= 1 is the sum of the values of its parity from 1 (odd)
    or 2 (even) up to j, so the total is a weighted sum of the values: no per-run prefix sums.
    """
    n = len(counts)
    ok = np.ones(n, dtype=bool)
    totals = np.zeros(n, dtype=np.int64)
    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    nonempty = np.flatnonzero(lengths)
    if nonempty.size == 0:
        return totals, ok
    lengths = lengths[nonempty]
    chars = np.frombuffer(b"".join(counts), dtype=np.uint8) - np.uint8(48)  # bad ones wrap > 63
    str_start = np.cumsum(lengths) - lengths
    bad_str = np.zeros(nonempty.size, dtype=bool)
    more = (chars & 0x20) != 0
    bad_char = np.flatnonzero(chars > 63)
    if bad_char.size:
        bad_str[np.searchsorted(str_start, bad_char, side="right") - 1] = True
        more[bad_char] = False
    last_char = str_start + lengths - 1
    bad_str |= more[last_char]  # the string ends inside a value: truncated
    more[last_char] = False
    per_str = np.add.reduceat(~more, str_start)  # values per string
    ends = np.flatnonzero(~more)  # last character of each value
    starts = np.concatenate(([0], ends[:-1] + 1))
    nchar = ends - starts + 1
    values = np.zeros(ends.size, dtype=np.int64)
    for k in range(7):  # character k of every value that has one
        sel = np.flatnonzero(nchar > k)
        if sel.size == 0:
            break
        values[sel] |= (chars[starts[sel] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = np.flatnonzero((chars[ends] & 0x10) != 0)
    values[negative] -= np.int64(1) << (5 * np.minimum(nchar[negative], 7))
    vstr = np.repeat(np.arange(nonempty.size), per_str)  # string of each value
    j = np.arange(ends.size) - (np.cumsum(per_str) - per_str)[vstr]  # index within its string
    weight = np.where(j == 0, 1, (per_str[vstr] - 1 - j) // 2 + 1)
    bad_str[vstr[nchar > 7]] = True
    sums = np.bincount(vstr, weights=(values * weight).astype(np.float64), minlength=vstr.size)
    totals[nonempty] = sums[: nonempty.size].astype(np.int64)
    ok[nonempty[bad_str]] = False
    return totals, ok


class _RleChecker:
    """Collects compressed RLEs to check in batches; raises (or reports) with JSON paths."""

    def __init__(self) -> None:
        self.counts: list[bytes] = []
        self.expected: list[int] = []
        self.where: list[tuple[str, int, int]] = []  # (prefix, entry index, frame)

    def add(self, counts: bytes, expected: int, where: tuple[str, int, int]) -> None:
        self.counts.append(counts)
        self.expected.append(expected)
        self.where.append(where)

    def problems(self) -> Iterable[str]:
        ends = np.cumsum(np.fromiter(map(len, self.counts), dtype=np.int64,
                                     count=len(self.counts)))
        lo = 0
        while lo < len(self.counts):
            start = int(ends[lo - 1]) if lo else 0
            # at least one RLE, however long; else as many as fit in _CHECK_CHARS
            hi = max(lo + 1, int(np.searchsorted(ends, start + _CHECK_CHARS, side="right")))
            totals, ok = compressed_counts_totals(self.counts[lo:hi])
            expected = np.asarray(self.expected[lo:hi], dtype=np.int64)
            for k in np.flatnonzero(~ok | (totals != expected)):
                prefix, i, t = self.where[lo + k]
                what = (
                    "malformed compressed RLE counts" if not ok[k]
                    else f"runs cover {totals[k]} pixels, expected h*w = {expected[k]}"
                )
                yield f"{prefix}[{i}].segmentations[{t}]: {what}"
            lo = hi


def _normalise_rle(seg: object, h: int, w: int, where: str, checker: _RleChecker, key) -> dict:
    """Return `seg` as compressed `{"size": [h, w], "counts": str}` or raise naming `where`."""
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise TubeFormatError(
            f"{where}: expected an RLE {{'size': [h, w], 'counts': ...}} or null, "
            f"got {type(seg).__name__}"
        )
    size = seg["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and list(size) == [h, w]):
        raise TubeFormatError(
            f"{where}: RLE size {size} does not match its video's [height, width] = [{h}, {w}]"
        )
    counts = seg["counts"]
    if isinstance(counts, list):
        arr = np.asarray(counts)
        if arr.ndim != 1 or (arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0)):
            raise TubeFormatError(f"{where}: uncompressed RLE counts must be non-negative ints")
        if int(arr.sum()) != h * w:
            raise TubeFormatError(
                f"{where}: uncompressed RLE runs cover {int(arr.sum())} pixels, expected h*w = "
                f"{h * w}"
            )
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": arr.tolist()}, h, w)
        return {"size": [h, w], "counts": rle["counts"].decode("ascii")}
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise TubeFormatError(f"{where}: RLE counts must be a string or a list of ints")
    checker.add(counts.encode("ascii", errors="replace"), h * w, key)
    return {"size": [h, w], "counts": counts}


def _int_field(obj: dict, key: str, where: str, *, minimum: int = 0) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TubeFormatError(f"{where}.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _video_table(videos: object, where: str) -> dict[int, dict]:
    if not isinstance(videos, list):
        raise TubeFormatError(f"{where}: 'videos' must be a list")
    table = {}
    for i, video in enumerate(videos):
        vw = f"videos[{i}]"
        if not isinstance(video, dict):
            raise TubeFormatError(f"{vw}: expected an object")
        vid = _int_field(video, "id", vw)
        if vid in table:
            raise TubeFormatError(f"{vw}.id: duplicate video id {vid}")
        video = dict(video)
        if "length" not in video and isinstance(video.get("file_names"), list):
            video["length"] = len(video["file_names"])
        for key in ("height", "width"):
            _int_field(video, key, vw, minimum=1)
        _int_field(video, "length", vw)
        table[vid] = video
    return table


def _normalise_tracks(
    entries: list, videos: dict[int, dict], prefix: str, *, results: bool
) -> list[dict]:
    """Check and normalise GT annotations or results; `prefix` names the list in messages."""
    checker = _RleChecker()
    out = []
    for i, ann in enumerate(entries):
        where = f"{prefix}[{i}]"
        if not isinstance(ann, dict):
            raise TubeFormatError(f"{where}: expected an object, got {type(ann).__name__}")
        vid = ann.get("video_id")
        if vid not in videos:
            raise TubeFormatError(f"{where}.video_id: {vid!r} is not the id of any video")
        _int_field(ann, "category_id", where)
        if results:
            score = ann.get("score")
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(
                score
            ):
                raise TubeFormatError(f"{where}.score: expected a finite number, got {score!r}")
        segs = ann.get("segmentations")
        video = videos[vid]
        if not isinstance(segs, list) or len(segs) != video["length"]:
            got = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise TubeFormatError(
                f"{where}.segmentations: expected a list of {video['length']} frames "
                f"(video {vid}'s length), got {got}"
            )
        h, w = video["height"], video["width"]
        norm = dict(ann)
        norm["segmentations"] = [
            None if seg is None
            else _normalise_rle(seg, h, w, f"{where}.segmentations[{t}]", checker, (prefix, i, t))
            for t, seg in enumerate(segs)
        ]
        if not results:
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1):
                raise TubeFormatError(f"{where}.iscrowd: expected 0 or 1, got {crowd!r}")
            norm["iscrowd"] = int(crowd)
        out.append(norm)
    for problem in checker.problems():
        raise TubeFormatError(problem)
    return out


def is_cocovid(data: object) -> bool:
    """True for mmtracking's CocoVID layout (per-frame `images` and `segmentation`)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("annotations"), list)
        and any("instance_id" in a for a in data["annotations"] if isinstance(a, dict))
    )


def normalise_gt(gt: dict) -> dict:
    """A checked copy of a YouTube-VIS GT dict with compressed `str` RLEs and `iscrowd` set."""
    if not isinstance(gt, dict):
        raise TubeFormatError("ground truth: expected a JSON object with videos/annotations")
    if is_cocovid(gt):
        from wsovvis_dagster.ytvis.cocovid import cocovid_to_ytvis

        gt = cocovid_to_ytvis(gt)
    videos = _video_table(gt.get("videos"), "ground truth")
    cats = gt.get("categories")
    if not isinstance(cats, list):
        raise TubeFormatError("categories: must be a list of {id, name}")
    cat_ids = set()
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict):
            raise TubeFormatError(f"categories[{i}]: expected an object")
        cat_ids.add(_int_field(cat, "id", f"categories[{i}]"))
    anns = gt.get("annotations")
    if not isinstance(anns, list):
        raise TubeFormatError("annotations: must be a list")
    norm = _normalise_tracks(anns, videos, "annotations", results=False)
    for i, ann in enumerate(norm):
        if ann["category_id"] not in cat_ids:
            raise TubeFormatError(
                f"annotations[{i}].category_id: {ann['category_id']} is not in categories"
            )
    out = {k: v for k, v in gt.items() if k not in ("videos", "annotations", "categories")}
    out["videos"] = list(videos.values())
    out["categories"] = copy.deepcopy(cats)
    out["annotations"] = norm
    return out


def normalise_results(results: list, gt: dict) -> list[dict]:
    """A checked copy of a results list against (normalised) `gt`: known videos, lengths, sizes."""
    if not isinstance(results, list):
        raise TubeFormatError("results: expected a JSON list of {video_id, category_id, ...}")
    videos = _video_table(gt.get("videos"), "ground truth")
    return _normalise_tracks(results, videos, "results", results=True)


def _read_json(path: Path, what: str) -> object:
    try:
        with open(path) as fh:
            return json.load(fh)
    except OSError as exc:
        raise TubeFormatError(f"cannot read {what} {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise TubeFormatError(f"{what} {path} is not valid JSON: {exc}") from exc


def load_gt(path: Path) -> dict:
    """Read and normalise a YouTube-VIS GT JSON (CocoVID layout is converted on the fly)."""
    data = _read_json(Path(path), "ground truth")
    try:
        return normalise_gt(data)
    except TubeFormatError as exc:
        raise TubeFormatError(f"{path}: {exc}") from exc


def load_results(path: Path, gt: dict | None = None) -> list[dict]:
    """Read a YouTube-VIS results JSON list; with `gt`, check and normalise it against it."""
    data = _read_json(Path(path), "results")
    if not isinstance(data, list):
        raise TubeFormatError(
            f"{path}: results must be a JSON list of {{video_id, category_id, score, "
            "segmentations}} (a tube JSON? export it with wsovvis_dagster.ytvis.results)"
        )
    if gt is None:
        return data
    try:
        return normalise_results(data, gt)
    except TubeFormatError as exc:
        raise TubeFormatError(f"{path}: {exc}") from exc


def validate_tube_json(data: dict, path: Path | str = "tube JSON", limit: int = 50) -> list[str]:
    """Problems of a tube JSON dict (empty list = valid), each naming `path` and a JSON path.

    Checks: every RLE has its video's size and covers exactly h*w pixels; `segmentations`
    (and `areas`/`bboxes` when present) have one entry per frame of the video; no tube is
    empty (all frames null or zero area); `(video_id, track_id)` pairs are unique. At most
    `limit` problems are listed, then a count of the rest.
    """
    problems: list[str] = []
    try:
        videos = _video_table(data.get("videos") if isinstance(data, dict) else None, "videos")
    except TubeFormatError as exc:
        return [f"{path}: {exc}"]
    anns = data.get("annotations")
    if not isinstance(anns, list):
        return [f"{path}: 'annotations' must be a list"]
    for i, video in videos.items():
        names = video.get("file_names")
        if isinstance(names, list) and len(names) != video["length"]:
            problems.append(f"videos id {i}: {len(names)} file_names for length {video['length']}")
    checker = _RleChecker()
    seen: dict[tuple, int] = {}
    empty_candidates: dict[int, list[dict]] = {}
    for i, ann in enumerate(anns):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("video_id") not in videos:
            vid = ann.get("video_id") if isinstance(ann, dict) else None
            problems.append(f"{where}.video_id: {vid!r} is not the id of any video")
            continue
        video = videos[ann["video_id"]]
        length, h, w = video["length"], video["height"], video["width"]
        key = (ann["video_id"], ann.get("track_id", ann.get("id")))
        if key in seen:
            problems.append(f"{where}: same video_id/track_id {key} as annotations[{seen[key]}]")
        seen[key] = i
        segs = ann.get("segmentations")
        if not isinstance(segs, list) or len(segs) != length:
            got = len(segs) if isinstance(segs, list) else type(segs).__name__
            problems.append(f"{where}.segmentations: {got} frames, video has {length}")
            continue
        for field in ("areas", "bboxes"):
            vals = ann.get(field)
            if vals is not None and (not isinstance(vals, list) or len(vals) != length):
                problems.append(f"{where}.{field}: expected {length} entries (one per frame)")
        present = []
        for t, seg in enumerate(segs):
            if seg is None:
                continue
            try:
                present.append(
                    _normalise_rle(seg, h, w, f"{where}.segmentations[{t}]", checker,
                                   ("annotations", i, t))
                )
            except TubeFormatError as exc:
                problems.append(str(exc))
        if not present:
            problems.append(f"{where}: empty tube (every frame is null)")
        else:
            empty_candidates[i] = present
        if len(problems) > limit * 4:
            break
    problems.extend(checker.problems())
    for i, rles in empty_candidates.items():
        if not any(mask_utils.area(rles)):
            problems.append(f"annotations[{i}]: empty tube (every mask has zero area)")
    extra = len(problems) - limit
    out = [f"{path}: {p}" for p in problems[:limit]]
    if extra > 0:
        out.append(f"{path}: ... and {extra} more problems")
    return out
