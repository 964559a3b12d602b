"""The video predictor resource: one model per run, on the device the run was given."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from wsovvis_dagster.gpu_slots import GpuLease, acquire_gpu_slot
from wsovvis_dagster.predictors import VideoPredictor
from wsovvis_dagster.predictors.factory import BACKENDS, PredictorSettings, build_predictor


class PredictorResource(ConfigurableResource):
    """Builds the configured backend once per run (`setup_for_execution`), not per video."""

    backend: str = Field(default="cpu", description=f"one of {', '.join(BACKENDS)}")
    gpus: str = Field(
        default="",
        description="GPU indices this machine offers runs, e.g. '0,1,2,3' (env WSOVVIS_GPUS). "
        "Empty: CPU. Each run leases one free index for its whole duration.",
    )
    slot_dir: str = Field(default="", description="Lease files folder (default: DAGSTER_HOME)")
    max_tracks: int = 10
    vnext_root: str = "third_party/VNext"
    cutler_root: str = "third_party/CutLER"
    config_file: str = ""
    weights: str = Field(default="", description="local path to videocutler_m2f_rn50.pth")
    confidence: float = 0.6
    chunk_size: int = 64
    chunk_overlap: int = 8
    allow_random_weights: bool = Field(
        default=False, description="TESTING ONLY: build VideoCutLER with random weights"
    )

    _predictor: VideoPredictor | None = PrivateAttr(default=None)
    _lease: GpuLease | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run_id = context.run_id or "local"
        self._lease = acquire_gpu_slot(self.gpus, run_id=run_id, slot_dir=self.slot_dir or None)
        device = self._lease.device if self._lease else "cpu"
        settings = PredictorSettings(
            backend=self.backend, device=device, max_tracks=self.max_tracks,
            vnext_root=self.vnext_root, cutler_root=self.cutler_root,
            config_file=self.config_file, weights=self.weights, confidence=self.confidence,
            chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap,
            allow_random_weights=self.allow_random_weights,
        )
        if context.log:
            context.log.info(f"building predictor backend={self.backend} on {device}")
        self._predictor = build_predictor(settings)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    @property
    def predictor(self) -> VideoPredictor:
        if self._predictor is None:
            raise RuntimeError("PredictorResource used outside a run (setup_for_execution)")
        return self._predictor

    @property
    def device(self) -> str:
        return self._lease.device if self._lease else "cpu"
