"""Build a predictor from plain settings (the Dagster resource translates its config here)."""

from __future__ import annotations

from dataclasses import dataclass

from wsovvis_dagster.predictors import VideoPredictor

BACKENDS = ("cpu", "videocutler")


@dataclass(frozen=True)
class PredictorSettings:
    """Everything any backend needs; each backend reads only its own fields."""

    backend: str = "cpu"
    device: str = "cpu"  # "cpu" or "cuda:N" (the GPU slot the run holds)
    max_tracks: int = 10
    # videocutler backend
    vnext_root: str = "third_party/VNext"
    cutler_root: str = "third_party/CutLER"
    config_file: str = ""  # default: CutLER's video_mask2former_R50_cls_agnostic.yaml
    weights: str = ""  # local path to videocutler_m2f_rn50.pth
    confidence: float = 0.6
    chunk_size: int = 64
    chunk_overlap: int = 8
    allow_random_weights: bool = False  # testing only: loudly logged


def build_predictor(settings: PredictorSettings) -> VideoPredictor:
    if settings.backend == "cpu":
        from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

        return CpuVideoPredictor(max_tracks=settings.max_tracks)
    if settings.backend == "videocutler":
        from wsovvis_dagster.predictors.videocutler import build_videocutler_predictor

        return build_videocutler_predictor(settings)
    raise ValueError(f"unknown predictor backend {settings.backend!r}: choose one of {BACKENDS}")
