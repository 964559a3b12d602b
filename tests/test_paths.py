"""`wsovvis_dagster.paths.check_video_id`: which video ids are safe."""

from __future__ import annotations

import pytest

from wsovvis_dagster.errors import (
    UnsafeNameError,
)
from wsovvis_dagster.paths import check_video_id


@pytest.mark.parametrize("video_id", ["..", "a/b", "a b", "-x", "a\n", "\u202e", "x" * 201,
                                      "日" * 67, ".x", "a\x00b", "a,b"])
def test_check_video_id_refuses(video_id):
    with pytest.raises(UnsafeNameError, match="unsafe video id|empty video id"):
        check_video_id(video_id)


@pytest.mark.parametrize("video_id", ["日" * 66, "Ωmega_1", "0043f083b5", "a-b.c_d"])
def test_check_video_id_accepts(video_id):
    assert check_video_id(video_id) == video_id
