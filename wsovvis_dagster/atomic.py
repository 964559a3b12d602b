"""Atomic file and folder writes: a reader sees the old result or the new one, never a mix."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temp file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: object) -> None:
    with atomic_file(path) as fh:
        json.dump(obj, fh)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `target`; on success it replaces `target` whole.

    A crash inside the block leaves only a hidden `.tmp-*` folder (cleaned by
    `remove_stale_temp_dirs`), never a half-written `target`. Two writers of the same target
    swap in turn under a lock, so the result is one writer's complete folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:12]}"
        with _locked(target.parent / f".{target.name}.lock"):
            if target.exists():
                os.rename(target, old)
            os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp_dirs(parent: Path, min_age_s: float = 3600.0) -> list[Path]:
    """Delete `.tmp-*` / `.old-*` leftovers of killed writers in `parent`; return what went.

    Only folders untouched for `min_age_s` go, so a writer still running is left alone.
    """
    removed = []
    now = time.time()
    if Path(parent).is_dir():
        for p in Path(parent).iterdir():
            stale = now - p.stat().st_mtime >= min_age_s
            if p.is_dir() and p.name.startswith((".tmp-", ".old-")) and stale:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed
