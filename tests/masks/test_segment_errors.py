"""`wsovvis_dagster.ytvis.split`: a predictor's wrong-size output and an unmounted data root."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from video_files import make_video
from wsovvis_dagster.errors import (
    MaskFormatError,
    WsovvisError,
)
from wsovvis_dagster.masks.segment import segment_video
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors import PredictorOutput
from wsovvis_dagster.ytvis.split import build_split_tubes


class _ShapeShiftingPredictor:
    """A backend bug: returns masks at half resolution."""

    name, version = "half-res", "test"

    def predict(self, frames):
        t, h, w = frames.shape[:3]
        return PredictorOutput(np.ones((t, h // 2, w // 2), np.uint16), {1: 0.9})


def test_predictor_output_of_wrong_size_is_never_written(real_jpegs, tmp_path):
    make_video(tmp_path / "data", "val", "v", real_jpegs[:2])
    with pytest.raises(MaskFormatError, match="would not line up"):
        segment_video(tmp_path / "data", tmp_path / "out", VideoRef("val", "v"),
                      _ShapeShiftingPredictor())
    assert not (tmp_path / "out" / "val" / "masks" / "v").exists()


def test_unmounted_data_root_is_not_taken_for_deleted_videos(real_jpegs, tmp_path):
    """No frames folder for the whole split: that is a mount problem, not N deletions."""
    make_video(tmp_path / "data", "val", "v", real_jpegs[:1])
    refs = [VideoRef("val", "v")]
    shutil.rmtree(tmp_path / "data" / "val")
    with pytest.raises(WsovvisError, match="have no mask PNGs yet"):
        build_split_tubes(tmp_path / "data", tmp_path / "out", "val", refs)
