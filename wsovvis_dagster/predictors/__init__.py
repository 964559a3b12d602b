"""Class-agnostic video instance segmenters behind one interface.

A predictor takes a whole clip and returns per-frame id maps; the `mask_pngs` asset writes
them unchanged. Backends: `cpu` (embedded, no weights), `videocutler` (VNext + CutLER) and the
`cpu-slow` test backend, each one record in `backends`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PredictorOutput:
    """Tracks of one clip.

    id_maps: `(T, H, W)` uint16, 0 = background, track ids 1..N ordered by descending score
        (id 1 is the most confident); where tracks overlap, the higher-scoring one owns the pixel.
    scores: track id -> confidence in [0, 1], one entry per id 1..N.
    """

    id_maps: np.ndarray
    scores: dict[int, float]


class VideoPredictor(Protocol):
    """What every backend provides. `name`/`version` go into asset metadata and code versions."""

    name: str
    version: str

    def predict(self, frames: np.ndarray) -> PredictorOutput:
        """Segment `(T, H, W, 3) uint8` RGB frames of one video into tracks."""
        ...


def compose_id_maps(masks: np.ndarray, scores: np.ndarray) -> PredictorOutput:
    """Per-track boolean masks `(N, T, H, W)` + scores `(N,)` -> `PredictorOutput`.

    Tracks are renumbered 1..N by descending score; overlaps go to the higher score. Tracks
    with an empty mask over the whole clip are dropped.
    """
    n, t, h, w = masks.shape
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    id_maps = np.zeros((t, h, w), dtype=np.uint16)
    out_scores: dict[int, float] = {}
    # paint lowest score first so higher scores overwrite it
    kept = [i for i in order if masks[i].any()]
    ids = {i: k + 1 for k, i in enumerate(kept)}
    for i in reversed(kept):
        id_maps[masks[i]] = ids[i]
    for i in kept:
        out_scores[ids[i]] = float(scores[i])
    # a track fully covered by higher-scoring ones vanishes: renumber to stay contiguous
    return _drop_vanished(PredictorOutput(id_maps, out_scores))


def _drop_vanished(out: PredictorOutput) -> PredictorOutput:
    present = set(np.unique(out.id_maps).tolist()) - {0}
    if present == set(out.scores):
        return out
    keep = sorted(present)
    lut = np.zeros(max(out.scores, default=0) + 1, dtype=np.uint16)
    for new, old in enumerate(keep, start=1):
        lut[old] = new
    scores = {new: out.scores[old] for new, old in enumerate(keep, start=1)}
    return PredictorOutput(lut[out.id_maps], scores)
