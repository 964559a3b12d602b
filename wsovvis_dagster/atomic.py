"""Atomic file and folder writes: a reader sees the old result or the new one, never a mix.

Crash safety: everything is written under a hidden temp name beside the target and renamed
into place only once complete (and fsynced), so a killed writer leaves at most a hidden
`.tmp-*` folder or `.<name>.*.tmp` file, which `remove_stale_temp_dirs` deletes later.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

TEMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
_MAX_NAME_BYTES = 120  # of the target's name inside temp names; NAME_MAX is 255 bytes


def _short(name: str) -> str:
    """`name`, or a prefix + hash of it when long, so temp names stay under NAME_MAX."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= _MAX_NAME_BYTES:
        return name
    head = raw[:60].decode("utf-8", "ignore")
    return f"{head}~{hashlib.sha1(raw).hexdigest()[:12]}"


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temp file beside `path`; rename it over `path` only if the block succeeds.

    The file gets the mode a plain `open()` would give it (0666 less the umask), not
    mkstemp's private 0600, so JSON, Parquet and checkpoints read like the PNGs beside them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{_short(path.name)}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
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


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux); False where unsupported."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # file system without RENAME_EXCHANGE (some network file systems)
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a freshly written folder, then the folder itself."""
    for p in folder.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_dir(target: Path, *, before_swap: Callable[[], None] | None = None
               ) -> Iterator[Path]:
    """Yield an empty temp folder beside `target`; on success it replaces `target` whole.

    A crash inside the block leaves only a hidden `.tmp-*` folder (cleaned by
    `remove_stale_temp_dirs`), never a half-written `target`. The swap is one atomic
    `renameat2(RENAME_EXCHANGE)` on Linux, so readers never see `target` missing; elsewhere it
    is two renames. Two writers of the same target swap in turn under a lock, so the result is
    one writer's complete folder. `before_swap` is called under that lock right before the
    swap; if it raises, nothing is published (a fenced run, `wsovvis_instance.fencing`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    name = _short(target.name)
    tmp = target.parent / f"{TEMP_PREFIX}{name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        with _locked(target.parent / f".{name}.lock"):
            if before_swap is not None:
                before_swap()
            if target.exists() and _exchange(tmp, target):
                old = tmp  # now holds the previous folder
            else:
                old = target.parent / f"{OLD_PREFIX}{name}-{uuid.uuid4().hex[:12]}"
                if target.exists():
                    os.rename(target, old)
                os.rename(tmp, target)
            _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _is_temp(p: Path) -> bool:
    if p.name.startswith((TEMP_PREFIX, OLD_PREFIX)):
        return True
    return p.name.startswith(".") and p.name.endswith(".tmp")  # from `atomic_file`


def remove_stale_temp_dirs(parent: Path, min_age_s: float = 3600.0) -> list[Path]:
    """Delete temp leftovers of killed writers in `parent`; return what went.

    That is `.tmp-*` / `.old-*` folders of `atomic_dir` and `.<name>.*.tmp` files of
    `atomic_file`. Only those untouched for `min_age_s` go, so a writer still running (it
    touches its temp folder with every file) is left alone.
    """
    removed = []
    now = time.time()
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        if not _is_temp(p):
            continue
        try:
            stale = now - p.lstat().st_mtime >= min_age_s
        except FileNotFoundError:  # another cleaner or its writer got there first
            continue
        if not stale:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    return removed
