"""A small synthetic video dataset in the LV-VIS layout, with YouTube-VIS ground truth.

Textured objects (a colour + a shape each) move over a panning textured background, enter and
leave the frame and occlude each other. Categories are named by attributes ("red circle"), and
split into base (LV-VIS partitions 0/1) and novel (2/3) so that every novel category is an
unseen pair of seen attributes. Everything is deterministic given the seed.

Writes:
    <root>/<split>/JPEGImages/<video_id>/<00000>.jpg
    <root>/annotations/<split>_instances.json      (YouTube-VIS 2019 style, RLE per frame)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from wsovvis_dagster.atomic import atomic_dir, write_json_atomic
from wsovvis_dagster.paths import gt_json_path

COLOURS = {  # RGB, saturated so they stand out from the grey-ish background
    "red": (215, 45, 40),
    "yellow": (225, 205, 40),
    "green": (45, 170, 60),
    "cyan": (40, 195, 205),
    "blue": (45, 75, 215),
    "magenta": (205, 50, 195),
}
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Category:
    id: int
    colour: str
    shape: str
    partition: int  # 0/1 base, 2/3 novel (LV-VIS convention)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def is_novel(self) -> bool:
        return self.partition >= 2


def categories() -> list[Category]:
    """18 colour x shape categories; one shape per colour is novel ((ci + si) % 3 == 0)."""
    out = []
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            cid = len(out) + 1
            novel = (ci + si) % 3 == 0
            out.append(Category(cid, colour, shape, (2 if novel else 0) + cid % 2))
    return out


def _texture(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth random texture in [-1, 1], `(h, w) float32`."""
    small = rng.standard_normal((h // scale + 2, w // scale + 2)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(big / 2.0, -1, 1)


def _shape_mask(shape: str, h: int, w: int, cx: float, cy: float, r: float, angle: float):
    canvas = np.zeros((h, w), dtype=np.uint8)
    if shape == "circle":
        cv2.circle(canvas, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
    else:
        k = 4 if shape == "square" else 3
        radius = r * (1.25 if shape == "square" else 1.35)
        theta = angle + 2 * np.pi * np.arange(k) / k
        pts = np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


@dataclass
class _Object:
    category: Category
    x: float
    y: float
    vx: float
    vy: float
    r: float
    angle: float
    spin: float
    texture: np.ndarray  # (2r', 2r') in [-1, 1]


def _make_objects(rng, cats, n, h, w) -> list[_Object]:
    objs = []
    for i in range(n):
        cat = cats[int(rng.integers(len(cats)))]
        r = float(rng.uniform(0.09, 0.16) * min(h, w))
        speed = float(rng.uniform(0.6, 1.6)) * min(h, w) / 16  # pixels per frame
        if i == n - 1 and n > 1:
            # the last object enters from outside the left or right edge
            x = -r * 1.2 if rng.random() < 0.5 else w + r * 1.2
            vx = abs(speed) * 1.5 if x < 0 else -abs(speed) * 1.5
            y, vy = float(rng.uniform(r, h - r)), float(rng.uniform(-0.3, 0.3)) * speed
        else:
            x, y = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
            theta = rng.uniform(0, 2 * np.pi)
            vx, vy = speed * np.cos(theta), speed * np.sin(theta)
        tex = _texture(rng, int(4 * r) + 4, int(4 * r) + 4, 6)
        objs.append(_Object(cat, x, y, vx, vy, r, float(rng.uniform(0, np.pi)),
                            float(rng.uniform(-0.08, 0.08)), tex))
    return objs


def render_video(rng: np.random.Generator, cats: list[Category], *, num_frames: int,
                 height: int, width: int, num_objects: int):
    """Render one clip. Returns frames `(T, H, W, 3) uint8` and per-object visible masks
    `(N, T, H, W) bool` (after occlusion), plus the objects' categories."""
    pad = 40
    bg = _texture(rng, height + 2 * pad, width + 2 * pad, 8)
    fine = _texture(rng, height + 2 * pad, width + 2 * pad, 2)
    tint = rng.uniform(95, 150, size=3)
    background = np.clip(tint[None, None, :] + 45 * bg[..., None] + 15 * fine[..., None], 0, 255)
    pan = rng.uniform(-1.2, 1.2, size=2)
    objs = _make_objects(rng, cats, num_objects, height, width)
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    visible = np.zeros((len(objs), num_frames, height, width), dtype=bool)
    for t in range(num_frames):
        ox = int(np.clip(pad + pan[0] * t, 0, 2 * pad))
        oy = int(np.clip(pad + pan[1] * t, 0, 2 * pad))
        img = background[oy:oy + height, ox:ox + width].copy()
        owner = np.full((height, width), -1, dtype=np.int32)
        for k, o in enumerate(objs):  # later objects are in front
            m = _shape_mask(o.category.shape, height, width, o.x, o.y, o.r, o.angle)
            if m.any():
                ys, xs = np.nonzero(m)
                ty = np.clip(ys - int(o.y) + o.texture.shape[0] // 2, 0, o.texture.shape[0] - 1)
                tx = np.clip(xs - int(o.x) + o.texture.shape[1] // 2, 0, o.texture.shape[1] - 1)
                shade = 1.0 + 0.25 * o.texture[ty, tx]
                colour = np.array(COLOURS[o.category.colour], dtype=np.float32)
                img[ys, xs] = np.clip(colour[None, :] * shade[:, None], 0, 255)
                owner[m] = k
            o.x += o.vx
            o.y += o.vy
            o.angle += o.spin
            # bounce off the borders unless the object is entering/leaving on purpose
            if o.r < o.y < height - o.r or not (0 <= o.y <= height):
                pass
            else:
                o.vy = -o.vy
        for k in range(len(objs)):
            visible[k, t] = owner == k
        frames[t] = img.astype(np.uint8)
    return frames, visible, [o.category for o in objs]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def generate_dataset(
    root: Path,
    *,
    seed: int = 0,
    videos_per_split: dict[str, int] | None = None,
    num_frames: int = 16,
    height: int = 120,
    width: int = 160,
    min_visible_pixels: int = 20,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write the synthetic dataset under `root`; returns the GT JSON path per split.

    Each video folder is written atomically; re-running with the same arguments rewrites
    identical files.
    """
    root = Path(root)
    videos_per_split = videos_per_split or {"train": 24, "val": 24}
    cats = categories()
    cat_json = [
        {"id": c.id, "name": c.name, "partition": c.partition, "colour": c.colour,
         "shape": c.shape, "supercategory": "novel" if c.is_novel else "base"}
        for c in cats
    ]
    gt_paths = {}
    for split_index, (split, n_videos) in enumerate(sorted(videos_per_split.items())):
        videos, annotations = [], []
        for v in range(n_videos):
            rng = np.random.default_rng([seed, split_index, v])
            video_id = f"{split}{v:04d}"
            frames, visible, obj_cats = render_video(
                rng, cats, num_frames=num_frames, height=height, width=width,
                num_objects=int(rng.integers(2, 5)),
            )
            with atomic_dir(root / split / "JPEGImages" / video_id) as tmp:
                for t in range(num_frames):
                    Image.fromarray(frames[t]).save(tmp / f"{t:05d}.jpg", quality=92)
            vid = len(videos) + 1
            if progress:
                progress(video_id)
            videos.append({
                "id": vid, "name": video_id, "width": width, "height": height,
                "length": num_frames,
                "file_names": [f"{video_id}/{t:05d}.jpg" for t in range(num_frames)],
            })
            for k, cat in enumerate(obj_cats):
                segs, areas, boxes = [], [], []
                for t in range(num_frames):
                    m = visible[k, t]
                    if m.sum() < min_visible_pixels:
                        segs.append(None), areas.append(None), boxes.append(None)
                        continue
                    rle = _rle(m)
                    segs.append(rle)
                    areas.append(int(m.sum()))
                    boxes.append([float(x) for x in mask_utils.toBbox(rle)])
                if all(s is None for s in segs):
                    continue
                annotations.append({
                    "id": len(annotations) + 1, "video_id": vid, "category_id": cat.id,
                    "iscrowd": 0, "height": height, "width": width, "length": num_frames,
                    "segmentations": segs, "areas": areas, "bboxes": boxes,
                })
        gt = {
            "info": {"description": "wsovvis synthetic dataset", "seed": seed},
            "categories": cat_json, "videos": videos, "annotations": annotations,
        }
        path = gt_json_path(root, split)
        write_json_atomic(path, gt)
        gt_paths[split] = path
    (root / "README.txt").write_text(
        "Synthetic WS-OVVIS dataset written by `wsovvis generate-demo` "
        f"(seed {seed}). Safe to delete; regenerate with the same seed.\n"
    )
    return gt_paths


def load_gt(path: Path) -> dict:
    return json.loads(Path(path).read_text())
