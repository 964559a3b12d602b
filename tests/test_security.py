"""Security: local-only webserver, no path escaping the configured roots, no unpickling."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsovvis_dagster.errors import UnsafeNameError
from wsovvis_dagster.masks.segment import segment_video
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.video.frames import read_video, scan_videos

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "wsovvis_dagster"
DAVIS_FRAME = REPO.parent / "shared/data/davis/JPEGImages/horsejump-high/00000.jpg"


@pytest.fixture(scope="module")
def real_jpegs() -> list[bytes]:
    """A real DAVIS frame where ../shared exists, else a generated JPEG."""
    if DAVIS_FRAME.exists():
        return [DAVIS_FRAME.read_bytes()]
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(
        out, "JPEG")
    return [out.getvalue()]


def make_video(data_root: Path, split: str, video_id: str, frames: list[bytes]) -> Path:
    folder = data_root / split / "JPEGImages" / video_id
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(frames):
        (folder / f"{i:05d}.jpg").write_bytes(data)
    return folder


class _NeverCalledPredictor:
    name, version = "never-called", "test"

    def predict(self, frames):
        raise AssertionError("the path check must come before any prediction")


def test_webserver_binds_to_localhost_by_default():
    import dagster_webserver.cli

    host = next(p for p in dagster_webserver.cli.dagster_webserver.params if p.name == "host")
    assert host.default == "127.0.0.1"
    # and nothing we ship widens it
    shipped = [*REPO.glob("*.yaml"), *REPO.glob("*.toml"), *(REPO / "scripts").glob("*"),
               *(REPO / "dagster_home").glob("*"), REPO / "definitions.py"]
    for path in shipped:
        if path.is_file():
            text = path.read_text(errors="replace")
            wide = r"0\.0\.0\.0|::/0|--host[ =](?!127\.0\.0\.1|localhost)"
            assert not re.search(wide, text), path


def test_paths_cannot_escape_the_roots_through_symlinks(real_jpegs, tmp_path):
    outside = tmp_path / "outside"
    make_video(outside, "val", "secret", real_jpegs[:1])
    data = tmp_path / "data"
    jpeg_dir = data / "val" / "JPEGImages"
    make_video(data, "val", "ok", real_jpegs[:1])
    # a video folder that is a symlink out of the data root: reported, never registered
    (jpeg_dir / "linked_out").symlink_to(outside / "val" / "JPEGImages" / "secret")
    # a video whose frame is a symlink out of the data root: refused when read
    sneaky = make_video(data, "val", "sneaky", real_jpegs[:1])
    (sneaky / "00001.jpg").symlink_to(outside / "val" / "JPEGImages" / "secret" / "00000.jpg")
    (jpeg_dir / "dangling").symlink_to(tmp_path / "nowhere")
    report = scan_videos(data)
    assert [v.ref.video_id for v in report.videos] == ["ok", "sneaky"]
    assert "escapes its root" in report.rejected["val/linked_out"]
    assert "dangling symlink" in report.rejected["val/dangling"]
    with pytest.raises(UnsafeNameError, match="escapes its root"):
        read_video(data, VideoRef("val", "sneaky"))

    # an output folder linked out of the output root: refused before anything is written
    out = tmp_path / "out"
    (out / "val" / "masks").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "val" / "masks" / "ok").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeNameError, match="escapes its root"):
        segment_video(data, out, VideoRef("val", "ok"), _NeverCalledPredictor())
    assert list((tmp_path / "elsewhere").iterdir()) == []

    # roots that are themselves symlinks are fine (resolved first)
    (tmp_path / "data_link").symlink_to(data)
    assert len(read_video(tmp_path / "data_link", VideoRef("val", "ok")).stems) == 1


_UNSAFE_LOADERS = {("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("dill", "loads"),
                   ("joblib", "load"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
                   ("yaml", "unsafe_load")}


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


_REVIEWED = re.compile(r"#\s*unsafe-load-ok:\s*\S")  # a reviewed exception must give a reason


def _unsafe_deserialisation(path: Path) -> list[str]:
    """Calls that can run code from a file's contents (AST, so multi-line calls count too)."""
    problems = []
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if _REVIEWED.search(lines[node.lineno - 1]):
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        call = (owner_name, node.func.attr)
        where = f"{path}:{node.lineno}"
        if call == ("torch", "load") and not _is_true(_keyword(node, "weights_only")):
            problems.append(f"{where}: torch.load without weights_only=True")
        elif call in _UNSAFE_LOADERS:
            problems.append(f"{where}: {'.'.join(call)} of a file")
        elif call == ("np", "load") and _is_true(_keyword(node, "allow_pickle")):
            problems.append(f"{where}: np.load(allow_pickle=True)")
        elif call == ("yaml", "load"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if not (isinstance(loader, ast.Attribute) and "Safe" in loader.attr):
                problems.append(f"{where}: yaml.load without a SafeLoader")
    return problems


def test_no_unsafe_deserialisation_of_files(tmp_path):
    sources = [*LIBRARY.rglob("*.py"), *(REPO / "assets").rglob("*.py"),
               *(REPO / "resources").rglob("*.py"), REPO / "definitions.py"]
    problems = [p for path in sources for p in _unsafe_deserialisation(path)]
    assert problems == [], "untrusted files must not be unpickled:\n" + "\n".join(problems)
    # the checker itself catches what it is meant to catch
    probe = tmp_path / "probe.py"
    probe.write_text("import torch, pickle\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
                     "torch.load(\n  p,\n  map_location='cpu',\n)\npickle.loads(b)\n"
                     "torch.load(p, weights_only=True)\nyaml.load(t, Loader=yaml.SafeLoader)\n"
                     "pickle.load(f)  # unsafe-load-ok: written by this process a line above\n")
    assert len(_unsafe_deserialisation(probe)) == 4


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels, with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 100_000])  # 1.1x and 112x PIL's pixel limit
def test_decompression_bombs_are_refused_before_decoding(side, tmp_path):
    from wsovvis_dagster.errors import FrameError, MaskFormatError
    from wsovvis_dagster.masks.png_io import load_id_map
    from wsovvis_dagster.video.frames import load_frame

    path = tmp_path / "00000.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(FrameError, match="DecompressionBombError"):
        load_frame(path)
    with pytest.raises(MaskFormatError, match="DecompressionBombError"):
        load_id_map(path)
