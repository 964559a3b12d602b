"""`wsovvis_dagster.atomic`: what a finished atomic write leaves on disk."""

import os
import stat
import time

import pytest

from wsovvis_dagster import atomic
from wsovvis_dagster.atomic import atomic_file, write_json_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_file_mode_follows_umask_like_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        with atomic_file(tmp_path / "b.bin", "wb") as fh:
            fh.write(b"\0")
        with open(tmp_path / "plain.txt", "w") as fh:  # what a PNG writer gets
            fh.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.json", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_stale_temp_leftovers_are_cleaned_but_live_ones_kept(tmp_path):
    old_dir = tmp_path / ".tmp-v-0123456789ab"
    old_dir.mkdir()
    old_file = tmp_path / ".tubes_val.json.abc123.tmp"
    old_file.write_text("{")
    live = tmp_path / ".tmp-w-0123456789ab"
    live.mkdir()
    past = time.time() - 7200
    os.utime(old_dir, (past, past))
    os.utime(old_file, (past, past))
    keep = tmp_path / "v"
    keep.mkdir()
    os.utime(keep, (past, past))
    assert set(atomic.remove_stale_temp_dirs(tmp_path)) == {old_dir, old_file}
    assert live.exists() and keep.exists()
