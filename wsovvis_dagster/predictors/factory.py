"""Build a predictor from plain settings (the Dagster resource translates its config here);
each backend's facts are its record in `backends`."""

from __future__ import annotations

import hashlib
import json

from wsovvis_dagster.predictors import VideoPredictor
from wsovvis_dagster.predictors.backends import backend, output_payload
from wsovvis_dagster.predictors.settings import PredictorSettings


def output_fingerprint(settings: PredictorSettings) -> str:
    """Short hash of what changes the masks (`backends.output_payload`: not device, roots or
    hold time). The weights file counts by path, size and mtime. cpu-slow is cpu output, held
    longer."""
    payload = output_payload(settings)
    blob = json.dumps(payload, sort_keys=True).encode()
    return f"{payload['backend']}-{hashlib.sha1(blob).hexdigest()[:10]}"


def build_predictor(settings: PredictorSettings) -> VideoPredictor:
    return backend(settings.backend).build(settings)
