"""mmtracking's CocoVID annotations -> YouTube-VIS GT dict.

CocoVID: `videos` [{id, name, width?, height?}], `images` [{id, video_id, frame_id, file_name,
height, width}], per-frame `annotations` [{image_id, video_id, instance_id, category_id,
segmentation, bbox, area, iscrowd}], `categories`. One YouTube-VIS annotation is made per
(video_id, instance_id), with one entry per image of the video (ordered by frame_id; null where
the instance is absent). Segmentations may be compressed or uncompressed RLE (column-major,
`size` = [h, w]) or polygons; all come out as compressed RLE with `counts` as str.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from pycocotools import mask as mask_utils

from wsovvis_dagster.errors import TubeFormatError


def _to_rle(seg: object, h: int, w: int, where: str) -> dict:
    """Compressed RLE (`counts` str) of a CocoVID segmentation (RLE dict or polygon list)."""
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            raise TubeFormatError(f"{where}: RLE size {seg['size']} but the image is [{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, list):
            if sum(counts) != h * w:
                raise TubeFormatError(
                    f"{where}: uncompressed RLE runs cover {sum(counts)} pixels, expected {h * w}"
                )
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = {"size": [h, w], "counts": counts}
    elif isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    else:
        raise TubeFormatError(f"{where}: expected an RLE dict or a list of polygons")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [h, w], "counts": counts}


def cocovid_to_ytvis(data: dict) -> dict:
    """Convert a CocoVID dict to a YouTube-VIS GT dict (see the module docstring)."""
    for key in ("videos", "images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise TubeFormatError(f"CocoVID: top-level '{key}' must be a list")
    frames: dict[int, list[dict]] = defaultdict(list)
    for i, img in enumerate(data["images"]):
        if "video_id" not in img or "frame_id" not in img:
            raise TubeFormatError(f"images[{i}]: CocoVID images need video_id and frame_id")
        frames[img["video_id"]].append(img)
    image_pos: dict[int, tuple[int, int]] = {}  # image id -> (video id, frame index)
    videos = []
    for video in data["videos"]:
        imgs = sorted(frames.get(video["id"], []), key=lambda im: im["frame_id"])
        for t, img in enumerate(imgs):
            image_pos[img["id"]] = (video["id"], t)
        first = imgs[0] if imgs else {}
        videos.append(
            {
                "id": video["id"],
                "name": video.get("name", str(video["id"])),
                "width": video.get("width", first.get("width")),
                "height": video.get("height", first.get("height")),
                "length": len(imgs),
                "file_names": [im.get("file_name", "") for im in imgs],
            }
        )
    by_video = {v["id"]: v for v in videos}

    tracks: dict[tuple[int, object], dict] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if ann.get("image_id") not in image_pos:
            raise TubeFormatError(f"{where}.image_id: {ann.get('image_id')!r} is not an image id")
        if "instance_id" not in ann:
            raise TubeFormatError(f"{where}: CocoVID annotations need an instance_id")
        vid, t = image_pos[ann["image_id"]]
        video = by_video[vid]
        track = tracks.get((vid, ann["instance_id"]))
        if track is None:
            n = video["length"]
            track = tracks[(vid, ann["instance_id"])] = {
                "id": len(tracks) + 1,
                "video_id": vid,
                "instance_id": ann["instance_id"],
                "category_id": ann["category_id"],
                "iscrowd": 0,
                "height": video["height"],
                "width": video["width"],
                "length": n,
                "segmentations": [None] * n,
                "areas": [None] * n,
                "bboxes": [None] * n,
            }
        elif track["category_id"] != ann["category_id"]:
            raise TubeFormatError(
                f"{where}.category_id: instance {ann['instance_id']} of video {vid} is category "
                f"{track['category_id']} in an earlier frame and {ann['category_id']} here"
            )
        rle = _to_rle(
            ann.get("segmentation"), video["height"], video["width"], f"{where}.segmentation"
        )
        track["segmentations"][t] = rle
        track["areas"][t] = int(mask_utils.area(rle))
        track["bboxes"][t] = [float(x) for x in mask_utils.toBbox(rle)]
        track["iscrowd"] = max(track["iscrowd"], int(ann.get("iscrowd", 0)))
    return {
        "info": data.get("info", {}),
        "videos": videos,
        "categories": data["categories"],
        "annotations": list(tracks.values()),
    }


def load_cocovid(path: Path) -> dict:
    """Read a CocoVID JSON file as a YouTube-VIS GT dict."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TubeFormatError(f"cannot read CocoVID JSON {path}: {exc}") from exc
    try:
        return cocovid_to_ytvis(data)
    except TubeFormatError as exc:
        raise TubeFormatError(f"{path}: {exc}") from exc
