"""Video folders on disk for tests: frames from real JPEG bytes, broken copies, folder snapshots."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

FRAMES_PER_VIDEO = 3


def make_video(data_root: Path, split: str, video_id: str, frames: list[bytes],
               names: list[str] | None = None) -> Path:
    folder = data_root / split / "JPEGImages" / video_id
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:05d}.jpg" for i in range(len(frames))]
    for name, data in zip(names, frames, strict=True):
        (folder / name).write_bytes(data)
    return folder


def resized(jpeg: bytes, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("RGB").resize(size).save(out, "JPEG", quality=90)
    return out.getvalue()


def corruptions(jpeg: bytes) -> dict[str, bytes]:
    """Ways a real JPEG arrives broken: cut short, emptied, overwritten, not a JPEG at all."""
    sof = jpeg.find(b"\xff\xc0")
    bad_sof = bytearray(jpeg)
    bad_sof[sof + 5:sof + 9] = b"\x00\x00\x00\x00"  # height and width 0
    return {
        "truncated": jpeg[: len(jpeg) // 2],
        "header_only": jpeg[:600],
        "empty": b"",
        "zeroed_sof": bytes(bad_sof),
        "html_error_page": b"<html><body>404 Not Found</body></html>",
    }


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every visible file under `folder` (relative name -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


