"""Mask PNGs: one integer id map per frame, `mask_<frame stem>.png`.

Pixel value = track id (0 = background). 8-bit greyscale while every id fits, 16-bit
greyscale when any id exceeds 255. A `tracks.json` beside the PNGs keeps each id's score.
Masks brought from elsewhere (`import_masks`) also carry a `source.json` naming where they came
from and a fingerprint of their content; predictor output has none.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsovvis_dagster.atomic import atomic_dir
from wsovvis_dagster.errors import MaskFormatError, OutputWriteError, WsovvisError
from wsovvis_dagster.video.frames import natural_key, open_image

MASK_PREFIX = "mask_"
TRACKS_FILE = "tracks.json"
SOURCE_FILE = "source.json"  # only in folders of imported masks
MAX_ID = 65535


def mask_png_name(stem: str) -> str:
    return f"{MASK_PREFIX}{stem}.png"


def save_id_map(path: Path, id_map: np.ndarray, *, sixteen_bit: bool) -> None:
    """Save `(H, W)` integer ids losslessly as an 8- or 16-bit greyscale PNG."""
    if sixteen_bit:
        img = Image.fromarray(id_map.astype(np.uint16))  # PIL mode I;16
    else:
        img = Image.fromarray(id_map.astype(np.uint8), mode="L")
    img.save(path, format="PNG", optimize=False, compress_level=1)


RERUN_FIX = "delete the video's mask folder and re-run mask_pngs"


def load_id_map(path: Path, *, fix: str = RERUN_FIX) -> np.ndarray:
    """Read one mask PNG as `(H, W)` integer ids (uint8 or uint16); errors name `path` and
    end with `fix` (what to do about a PNG of this kind: ours, or one being imported)."""
    with open_image(path, MaskFormatError, "mask", f"; {fix}") as img:
        if img.mode not in ("L", "P", "I;16", "I"):
            raise MaskFormatError(
                f"mask {path} has mode {img.mode}: expected a greyscale or palette id map "
                f"(8-bit L/P or 16-bit I;16); {fix}"
            )
        img.load()
        arr = np.asarray(img)
    if arr.ndim != 2:
        raise MaskFormatError(f"mask {path} is not a single-channel id map (shape {arr.shape})")
    if arr.dtype.kind not in "ui" or (arr.size and (arr.min() < 0 or arr.max() > MAX_ID)):
        raise MaskFormatError(f"mask {path} holds ids outside 0..{MAX_ID}")
    return arr


@dataclass(frozen=True)
class MaskWriteSummary:
    frames: int
    tracks: int
    mean_area: float  # mean pixels per (track, frame where present)
    sixteen_bit: bool


def write_mask_pngs(
    dest: Path,
    stems: Iterable[str],
    id_maps: Iterable[np.ndarray],
    scores: dict[int, float],
    *,
    source: dict | None = None,
    pool: Executor | None = None,
    before_publish: Callable[[], None] | None = None,
) -> MaskWriteSummary:
    """Write one PNG per frame into `dest`, atomically: `dest` appears complete or not at all.

    With `pool`, the PNGs are encoded there in parallel (zlib releases the GIL); the bytes are
    the same as without it, and the folder is swapped in only once every file is written.

    `id_maps` yields `(H, W)` integer arrays (consumed one at a time). `scores` maps each track
    id to its confidence; all ids appearing in the maps must be in it. The bit depth is chosen
    from `scores` before the first frame, so an id above it raises `MaskFormatError` rather than
    being wrapped silently. A failed write (e.g. disk full) raises `OutputWriteError` and leaves
    the previous `dest` as it was. `source` (imported masks) is written as `source.json` in
    the same atomic swap. `before_publish` runs right before the swap (`atomic_dir`).
    """
    top = max(scores, default=0)
    if top > MAX_ID or min(scores, default=1) < 1:
        raise MaskFormatError(
            f"track ids for {dest} must be 1..{MAX_ID} to fit a 16-bit PNG; got "
            f"{min(scores)}..{top} ({len(scores)} tracks)"
        )
    sixteen_bit = top > 255
    writer = MaskFolderWriter(dest, pool=pool, before_publish=before_publish)
    try:
        for stem, id_map in zip(stems, id_maps, strict=True):
            writer.add(stem, id_map, sixteen_bit=sixteen_bit)
    except ValueError as exc:  # zip(strict=True): predictor gave more or fewer maps than frames
        writer.abort()
        if isinstance(exc, WsovvisError):
            raise
        raise MaskFormatError(f"mask PNGs for {dest}: {exc} (one id map per frame)") from exc
    except BaseException:
        writer.abort()
        raise
    return writer.finish(scores, source=source)


class MaskFolderWriter:
    """One video's mask PNGs, written as they come into a hidden temp folder that `finish`
    swaps in whole (`atomic.atomic_dir`); `abort` drops it. What `write_mask_pngs` and the
    streaming loop (frames handed over chunk by chunk, final ids known only at the end) use.

    Each `add` saves one `(H, W)` id map at the bit depth asked for (encoded in `pool` when
    given); `finish` can relabel every written PNG through a look-up table (`lut[id]` = final
    id) and changes the bit depth where the final ids need another, then writes `tracks.json`.
    Write errors raise `OutputWriteError`, leaving the previous `dest` as it was.
    `before_publish` runs right before the swap; if it raises, nothing is published (a fenced
    run, `wsovvis_instance.fencing`).
    """

    def __init__(self, dest: Path, *, pool: Executor | None = None,
                 max_queued: int = 32,
                 before_publish: Callable[[], None] | None = None) -> None:
        self.dest, self.pool, self.max_queued = Path(dest), pool, max_queued
        self._stack = contextlib.ExitStack()
        try:
            self.tmp = self._stack.enter_context(
                atomic_dir(self.dest, before_swap=before_publish))
        except OSError as exc:
            raise self._write_error(exc) from exc
        self._written: dict[str, bool] = {}  # PNG name -> written as 16-bit
        self._pending: list[Future] = []
        self._shape: tuple | None = None
        self._area = self._present = 0

    def add(self, stem: str, id_map: np.ndarray, *, sixteen_bit: bool) -> None:
        name = mask_png_name(stem)
        id_map = np.asarray(id_map)
        _check_id_map(self.dest, name, id_map, MAX_ID if sixteen_bit else 255, self._shape)
        if name in self._written or "/" in stem or stem.startswith("."):
            raise MaskFormatError(f"frame stem {stem!r} for {self.dest} is repeated or unsafe")
        self._written[name] = sixteen_bit
        self._shape = id_map.shape
        self._save(name, id_map, sixteen_bit)
        counts = np.bincount(id_map.ravel().astype(np.int64))[1:]
        self._area += int(counts.sum())
        self._present += int((counts > 0).sum())

    def _save(self, name: str, id_map: np.ndarray, sixteen_bit: bool) -> None:
        try:
            if self.pool is None:
                save_id_map(self.tmp / name, id_map, sixteen_bit=sixteen_bit)
            else:
                self._pending.append(self.pool.submit(save_id_map, self.tmp / name, id_map,
                                                      sixteen_bit=sixteen_bit))
                while len(self._pending) > self.max_queued:  # memory: id maps waiting
                    self._pending.pop(0).result()
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _wait(self) -> None:
        try:
            for future in self._pending:  # every PNG is on disk, or we raise
                future.result()
        except OSError as exc:
            raise self._write_error(exc) from exc
        finally:
            _drain(self._pending)
            self._pending = []

    def finish(self, scores: dict[int, float], *, lut: np.ndarray | None = None,
               source: dict | None = None) -> MaskWriteSummary:
        """Relabel (`lut`), write `tracks.json` (+ `source.json`), swap the folder in."""
        sixteen_bit = max(scores, default=0) > 255
        try:
            self._wait()
            identity = lut is None or np.array_equal(lut[1:], np.arange(1, len(lut)))
            for name, was_sixteen in self._written.items():
                if identity and was_sixteen == sixteen_bit:
                    continue
                ids = load_id_map(self.tmp / name)
                self._save(name, ids if identity else lut[ids], sixteen_bit)
            self._wait()
            tracks = {str(k): float(v) for k, v in sorted(scores.items())}
            (self.tmp / TRACKS_FILE).write_text(json.dumps({"scores": tracks}))
            if source is not None:
                (self.tmp / SOURCE_FILE).write_text(json.dumps(source, sort_keys=True))
            self._stack.close()  # the swap
        except OSError as exc:
            self.abort()
            raise self._write_error(exc) from exc
        except BaseException:
            self.abort()
            raise
        return MaskWriteSummary(
            frames=len(self._written), tracks=len(scores),
            mean_area=self._area / self._present if self._present else 0.0,
            sixteen_bit=sixteen_bit,
        )

    def abort(self) -> None:
        """Drop the temp folder; `dest` keeps its previous masks."""
        _drain(self._pending)
        self._pending = []
        with contextlib.suppress(RuntimeError):  # already closed
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def _write_error(self, exc: OSError) -> OutputWriteError:
        if isinstance(exc, OutputWriteError):
            return exc
        return OutputWriteError(
            f"cannot write mask PNGs to {self.dest}: {exc}. Nothing was replaced: the folder "
            "holds its previous masks (if any). Free disk space (or fix permissions) and re-run "
            "mask_pngs for this video"
        )


def _drain(pending: list[Future]) -> None:
    """Cancel queued encodes and wait for running ones (their errors are not the first)."""
    for future in pending:
        future.cancel()
    for future in pending:
        if not future.cancelled():
            try:
                future.result()
            except Exception:  # noqa: BLE001,S110 - the error being raised is the one to report
                pass


def _check_id_map(
    dest: Path, name: str, id_map: np.ndarray, limit: int, shape: tuple | None
) -> None:
    """Refuse an id map that the PNG would not hold exactly (wrong rank, dtype or range)."""
    if id_map.ndim != 2 or id_map.size == 0:
        raise MaskFormatError(f"{dest}/{name}: id map must be a non-empty (H, W) array, "
                              f"got shape {id_map.shape}")
    if shape is not None and id_map.shape != shape:
        raise MaskFormatError(
            f"{dest}/{name}: id map is {id_map.shape[1]}x{id_map.shape[0]} but earlier frames are "
            f"{shape[1]}x{shape[0]}; every mask of a video must have the frames' size"
        )
    if id_map.dtype.kind not in "uib":
        raise MaskFormatError(f"{dest}/{name}: id map dtype {id_map.dtype} is not integer")
    lo, hi = int(id_map.min()), int(id_map.max())
    if lo < 0 or hi > limit:
        raise MaskFormatError(
            f"{dest}/{name}: ids {lo}..{hi} do not fit 0..{limit}; every id in the maps must be "
            "a key of `scores` (which sets the PNG bit depth)"
        )


def list_mask_files(folder: Path) -> list[Path]:
    files = [p for p in Path(folder).glob(f"{MASK_PREFIX}*.png") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def frame_stem(mask_file: Path) -> str:
    return mask_file.stem[len(MASK_PREFIX):]


def read_track_scores(folder: Path) -> dict[int, float]:
    """Scores from `tracks.json`; empty when the folder came from elsewhere (e.g. DAVIS PNGs)."""
    path = Path(folder) / TRACKS_FILE
    if not path.exists():
        return {}
    try:
        return {int(k): float(v) for k, v in json.loads(path.read_text())["scores"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MaskFormatError(
            f"{path} is malformed ({exc}); re-run mask_pngs for this video"
        ) from exc


def read_mask_source(folder: Path) -> dict | None:
    """`source.json` of an imported mask folder; None for predictor output (no such file)."""
    path = Path(folder) / SOURCE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MaskFormatError(
            f"{path} is malformed ({exc}); re-import the masks (wsovvis import-masks)"
        ) from exc
    if not isinstance(data, dict):
        raise MaskFormatError(f"{path} must hold a JSON object; re-import the masks")
    return data
