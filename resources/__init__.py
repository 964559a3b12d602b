"""Dagster resources: thin, typed wrappers over the plain library `wsovvis_dagster`."""

from resources.paths import DatasetPaths
from resources.predictor import PredictorResource
from resources.sacred import SacredObserverResource

__all__ = ["DatasetPaths", "PredictorResource", "SacredObserverResource"]
