"""Build a predictor from plain settings (the Dagster resource translates its config here)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from wsovvis_dagster.predictors import PredictorOutput, VideoPredictor
from wsovvis_dagster.predictors.settings import PredictorSettings

# "cpu-slow" is the cpu predictor plus a fixed hold per video: a stand-in for a GPU model in the
# orchestration tests and benchmark (it never touches CUDA, whatever device it is given).
BACKENDS = ("cpu", "videocutler", "cpu-slow")
# settings that say where or how fast a model runs, never what it outputs
NOT_OUTPUT = frozenset({"device", "hold_seconds", "vnext_root", "cutler_root", "warmup",
                        "cudnn_benchmark", "gpu_memory_gib"})


def output_fingerprint(settings: PredictorSettings) -> str:
    """Short hash of the settings that change the masks (not device, roots or hold time).

    The weights file counts by path, size and mtime. cpu-slow is cpu output, held longer.
    """
    if settings.backend in ("cpu", "cpu-slow"):
        from wsovvis_dagster.predictors.chunking import STREAM_CHUNK
        from wsovvis_dagster.predictors.cpu import VERSION as CPU_VERSION

        # the algorithm's version counts: a new cpu predictor marks old masks stale; so does
        # the chunking of long videos (masks.segment.segment_videos streams them in chunks)
        payload: dict = {"backend": "cpu", "max_tracks": settings.max_tracks,
                         "version": CPU_VERSION, "chunk": list(STREAM_CHUNK)}
    else:
        payload = {k: v for k, v in asdict(settings).items() if k not in NOT_OUTPUT}
        weights = Path(settings.weights) if settings.weights else None
        if weights and weights.is_file():
            st = weights.stat()
            payload["weights_file"] = [st.st_size, st.st_mtime_ns]
    blob = json.dumps(payload, sort_keys=True).encode()
    return f"{payload['backend']}-{hashlib.sha1(blob).hexdigest()[:10]}"


def build_predictor(settings: PredictorSettings) -> VideoPredictor:
    if settings.backend == "cpu":
        from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

        return CpuVideoPredictor(max_tracks=settings.max_tracks)
    if settings.backend == "cpu-slow":
        from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

        return HeldPredictor(CpuVideoPredictor(max_tracks=settings.max_tracks),
                             hold_seconds=settings.hold_seconds, device=settings.device)
    if settings.backend == "videocutler":
        from wsovvis_dagster.predictors.videocutler import build_videocutler_predictor

        return build_videocutler_predictor(settings)
    raise ValueError(f"unknown predictor backend {settings.backend!r}: choose one of {BACKENDS}")


class HeldPredictor:
    """Test backend: `inner`'s output unchanged, returned `hold_seconds` later.

    Lets orchestration tests hold a "GPU" for a known time per video. Output (and `version`)
    are the inner predictor's, so its PNGs are byte-identical to the plain cpu backend's.
    """

    def __init__(self, inner: VideoPredictor, *, hold_seconds: float, device: str) -> None:
        self.inner, self.hold_seconds, self.device = inner, hold_seconds, device
        self.name = f"{inner.name}+hold{hold_seconds:g}s"
        self.version = inner.version

    def predict(self, frames: np.ndarray) -> PredictorOutput:
        output = self.inner.predict(frames)
        time.sleep(self.hold_seconds)
        return output
