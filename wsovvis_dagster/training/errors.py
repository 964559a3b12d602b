"""Typed errors of the training package; every message names the file involved and the fix."""

from wsovvis_dagster.errors import WsovvisError


class MissingWeightsError(WsovvisError, FileNotFoundError):
    """A frozen backbone's local weights file is missing (nothing is downloaded here)."""


class MissingDependencyError(WsovvisError, ImportError):
    """An optional package (e.g. open-clip-torch) that a chosen component needs is not installed."""


class TextBankError(WsovvisError, ValueError):
    """A category embedding bank that does not line up with the dataset's categories."""


class TrainingDataError(WsovvisError, ValueError):
    """Ground truth / tube JSON that cannot be turned into a training set."""


class TrainingFailedError(WsovvisError, RuntimeError):
    """A training process (one rank of a torchrun job) failed; the message holds its traceback."""
