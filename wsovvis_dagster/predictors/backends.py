"""Every predictor backend in one record: what it is, how it runs, what counts
for its masks' version, and how to build it.

The factory (`build_predictor`, `output_fingerprint`), the predictor worker's idle default, the
`mask_pngs` videos per run and the resource's description all read these records, so a new
backend is one entry here (plus its module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsovvis_dagster.predictors.settings import SETTINGS_FIELDS, PredictorSettings

if TYPE_CHECKING:
    from wsovvis_dagster.predictors import VideoPredictor

# settings that say where or how fast a model runs, never what it outputs
RUNTIME_SETTINGS = frozenset({"device", "hold_seconds", "vnext_root", "cutler_root", "warmup",
                              "cudnn_benchmark", "gpu_memory_gib"})


@dataclass(frozen=True)
class Backend:
    name: str  # the `backend` setting (WSOVVIS_PREDICTOR)
    description: str
    uses_gpu: bool  # computes on the CUDA device it is given (cpu-slow only holds a GPU slot)
    # seconds a predictor worker keeps its model after a run, by default; 0: built in each run.
    # VideoCutLER costs 17-24 s to start on an H200, the CPU backends about a second
    worker_idle_seconds: float
    # mask_pngs videos per backfill run, by default: each run pays a Dagster process start (3-5 s
    # on an H200 host with the model kept in the worker); LV-VIS-sized videos (~30 frames,
    # ~0.25 s each) need ~48 per run to keep that under a third (docs/gpu.md)
    videos_per_run: int
    masks_as: str  # the backend whose masks it writes: its code version names that one
    output_settings: tuple[str, ...]  # the PredictorSettings fields that change its masks
    code_facts: Callable[[PredictorSettings], dict]  # what else changes them (code, files)
    build: Callable[[PredictorSettings], VideoPredictor]

    @property
    def uses_worker(self) -> bool:
        """Whether its model lives in a predictor worker by default (docs/gpu.md)."""
        return self.worker_idle_seconds > 0


def _cpu_facts(settings: PredictorSettings) -> dict:
    from wsovvis_dagster.predictors.chunking import STREAM_CHUNK
    from wsovvis_dagster.predictors.cpu import VERSION

    # the algorithm's version counts: a new cpu predictor marks old masks stale; so does the
    # chunking of long videos (masks.segment streams them in chunks)
    return {"version": VERSION, "chunk": list(STREAM_CHUNK)}


def _weights_file(settings: PredictorSettings) -> dict:
    """The weights file counts by path (a setting), size and mtime."""
    weights = Path(settings.weights) if settings.weights else None
    if weights and weights.is_file():
        st = weights.stat()
        return {"weights_file": [st.st_size, st.st_mtime_ns]}
    return {}


def _build_cpu(settings: PredictorSettings) -> VideoPredictor:
    from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

    return CpuVideoPredictor(max_tracks=settings.max_tracks)


def _build_cpu_slow(settings: PredictorSettings) -> VideoPredictor:
    from wsovvis_dagster.predictors.cpu import HeldPredictor

    return HeldPredictor(_build_cpu(settings), hold_seconds=settings.hold_seconds,
                         device=settings.device)


def _build_videocutler(settings: PredictorSettings) -> VideoPredictor:
    from wsovvis_dagster.predictors.videocutler import build_videocutler_predictor

    return build_videocutler_predictor(settings)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("cpu", "the embedded CPU predictor (no weights)", uses_gpu=False,
            worker_idle_seconds=0.0, videos_per_run=4, masks_as="cpu",
            output_settings=("max_tracks",), code_facts=_cpu_facts, build=_build_cpu),
    Backend("videocutler", "VideoCutLER (VNext + CutLER)", uses_gpu=True,
            # 128: a run start costs ~4 s (docs/gpu.md); 48 LV-VIS clips were ~8 s of work
            worker_idle_seconds=600.0, videos_per_run=128, masks_as="videocutler",
            # every setting but the runtime ones, so a new setting counts until declared not to
            output_settings=tuple(k for k in SETTINGS_FIELDS
                                  if k not in RUNTIME_SETTINGS and k != "backend"),
            code_facts=_weights_file, build=_build_videocutler),
    # a stand-in for a GPU model in the orchestration tests and benchmarks: the cpu predictor
    # plus a fixed hold per video; it never touches CUDA, whatever device it is given
    Backend("cpu-slow", "test backend: cpu's masks, held `hold_seconds` per video",
            uses_gpu=False, worker_idle_seconds=0.0, videos_per_run=4,
            masks_as="cpu", output_settings=("max_tracks",), code_facts=_cpu_facts,
            build=_build_cpu_slow),
)}
# every setting that changes some backend's masks (the rest only place or pace a run)
OUTPUT_SETTINGS = frozenset({"backend"}.union(*(b.output_settings for b in BACKENDS.values())))


def backend(name: str) -> Backend:
    """The record of backend `name`; a `ValueError` naming the choices for any other."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown predictor backend {name!r}: choose one of "
                         f"{tuple(BACKENDS)}") from None


def output_payload(settings: PredictorSettings) -> dict:
    """What the masks of `settings` depend on: the backend they are made as, its output
    settings and its code facts (`factory.output_fingerprint` hashes this)."""
    record = backend(settings.backend)
    return {"backend": record.masks_as,
            **{k: getattr(settings, k) for k in record.output_settings},
            **record.code_facts(settings)}


def output_changes(before: PredictorSettings, after: PredictorSettings) -> list[str]:
    """The settings whose change from `before` to `after` changes the masks (none when the
    masks stay the same, e.g. the cpu backend's `confidence`)."""
    if output_payload(before) == output_payload(after):
        return []
    return [k for k in SETTINGS_FIELDS
            if k in OUTPUT_SETTINGS and getattr(before, k) != getattr(after, k)]


def by_backend(value: Callable[[Backend], float]) -> str:
    """'0 for cpu and cpu-slow, 600 for videocutler': a default per backend, for descriptions."""
    groups: dict[float, list[str]] = {}
    for record in BACKENDS.values():
        groups.setdefault(value(record), []).append(record.name)
    return ", ".join(f"{v:g} for {' and '.join(names)}" for v, names in groups.items())
