"""The video predictor resource: one model per run, on the device the run was given."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from wsovvis_dagster.gpu_slots import GpuLease, acquire_gpu_slot
from wsovvis_dagster.predictors import VideoPredictor
from wsovvis_dagster.predictors.factory import BACKENDS, PredictorSettings, build_predictor


class PredictorResource(ConfigurableResource):
    """Builds the configured backend once per run (`setup_for_execution`), not per video.

    With `gpus` set, the run first leases one free device (`wsovvis_dagster.gpu_slots`: an
    exclusive flock under `<DAGSTER_HOME>/gpu_slots`) and builds the model there; the lease is
    released at teardown, or by the kernel if the process dies.
    """

    backend: str = Field(default="cpu", description=f"one of {', '.join(BACKENDS)}")
    gpus: str = Field(
        default="",
        description="GPU indices this machine offers runs, e.g. '0,1,2,3' (env WSOVVIS_GPUS). "
        "Empty: CPU. Each run leases one free index for its whole duration.",
    )
    slot_dir: str = Field(
        default="", description="Lease files folder, local disk (default: <DAGSTER_HOME>/gpu_slots)"
    )
    lease_timeout_s: float = Field(
        default=3600.0, description="How long a run waits for a free GPU before failing"
    )
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
    fast_path: bool = Field(
        default=True,
        description="VideoCutLER: resize/normalise and compose masks on the GPU (False: "
        "upstream VideoPredictor's steps exactly; fp32 output is identical)",
    )
    precision: str = Field(
        default="fp32", pattern="^(fp32|bf16|fp16)$",
        description="VideoCutLER fast path: fp32, or bf16/fp16 autocast (faster, see README)",
    )
    deform_attn: str = Field(
        default="auto", pattern="^(auto|cuda|pytorch)$",
        description="MultiScaleDeformableAttention: the CUDA op, the PyTorch path, or auto",
    )
    hold_seconds: float = Field(
        default=0.0, description="TESTING ONLY (backend cpu-slow): seconds held per video"
    )

    _predictor: VideoPredictor | None = PrivateAttr(default=None)
    _lease: GpuLease | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run_id = context.run.run_id if context.run else "local"
        slot_dir = self.slot_dir or (
            str(Path(context.instance.root_directory) / "gpu_slots") if context.instance else None
        )
        self._lease = acquire_gpu_slot(
            self.gpus, run_id=run_id, slot_dir=slot_dir, timeout_s=self.lease_timeout_s
        )
        device = self._lease.device if self._lease else "cpu"
        if context.log:
            if self._lease:  # parsed by tests/test_gpu_coordination.py: keep the wording
                context.log.info(f"gpu lease acquired: {device} ({self._lease.path})")
            context.log.info(f"building predictor backend={self.backend} on {device}")
        try:
            self._predictor = build_predictor(self.settings(device))
        except BaseException:
            self.teardown_after_execution(context)
            raise

    def settings(self, device: str = "cpu") -> PredictorSettings:
        """The library settings this resource stands for, on `device`."""
        return PredictorSettings(
            backend=self.backend, device=device, max_tracks=self.max_tracks,
            vnext_root=self.vnext_root, cutler_root=self.cutler_root,
            config_file=self.config_file, weights=self.weights, confidence=self.confidence,
            chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap,
            allow_random_weights=self.allow_random_weights, fast_path=self.fast_path,
            precision=self.precision, deform_attn=self.deform_attn,
            hold_seconds=self.hold_seconds,
        )

    def output_fingerprint(self) -> str:
        """Short hash of the settings that change the masks (not device, GPUs or hold time).

        Becomes part of `mask_pngs`' code version, so changing backend, weights or thresholds
        marks every video stale. The weights file counts by path, size and mtime.
        """
        if self.backend in ("cpu", "cpu-slow"):  # cpu-slow = cpu output, held longer
            from wsovvis_dagster.predictors.cpu import VERSION as CPU_VERSION

            # the algorithm's version counts: a new cpu predictor marks old masks stale
            fields: dict = {"backend": "cpu", "max_tracks": self.max_tracks,
                            "version": CPU_VERSION}
        else:
            # every setting counts unless it only says where or how fast the model runs
            fields = asdict(self.settings())
            for where in ("device", "hold_seconds", "vnext_root", "cutler_root"):
                fields.pop(where)
            weights = Path(self.weights) if self.weights else None
            if weights and weights.is_file():
                st = weights.stat()
                fields["weights_file"] = [st.st_size, st.st_mtime_ns]
        blob = json.dumps(fields, sort_keys=True).encode()
        return f"{fields['backend']}-{hashlib.sha1(blob).hexdigest()[:10]}"

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._predictor = None
        if self._lease is not None:
            device = self._lease.device
            self._lease.release()
            self._lease = None
            if context.log:
                context.log.info(f"gpu lease released: {device}")

    @property
    def predictor(self) -> VideoPredictor:
        if self._predictor is None:
            raise RuntimeError("PredictorResource used outside a run (setup_for_execution)")
        return self._predictor

    @property
    def device(self) -> str:
        """'cuda:N' leased for this run, or 'cpu'."""
        return self._lease.device if self._lease else "cpu"
