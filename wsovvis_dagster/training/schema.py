"""The reference trainer's config schema, defined once and importable without torch.

`TrainingJob` holds every training setting with its default; `DEFAULT_CONFIG` (the Sacred
defaults) is derived from it plus the path and process keys, the `trained_model` asset's
`Config` takes its defaults from `DEFAULT_CONFIG`, and a test checks configs/wsovvis_sacred.yaml
against it.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class TrainingJob:
    """Everything one run needs, as explicit values (the Sacred config translated once)."""

    data_root: Path
    output_root: Path  # where tube_json wrote <split>/tubes_<split>.json
    work_dir: Path  # checkpoints, results JSON, summary
    feature_cache: Path
    train_gt: Path
    eval_gt: Path
    train_tubes: Path
    eval_tubes: Path
    train_split: str = "train"
    eval_split: str = "val"
    extractor: str = "handcrafted"
    extractor_weights: str = ""
    text_bank: str = "attributes"
    text_bank_names: str = ""
    text_dim: int = 64
    hidden_dim: int = 256
    dropout: float = 0.1
    init_temperature: float = 0.07
    epochs: int = 40
    batch_videos: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pooling: str = "lse"
    lse_r: float = 5.0
    checkpoint_every: int = 1
    resume: bool = True
    topk: int = 10
    inference_background: bool = False
    seed: int = 0

    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoints" / "last.pt"

    @property
    def results_path(self) -> Path:
        return self.work_dir / f"results_{self.eval_split}.json"

    @property
    def summary_path(self) -> Path:
        return self.work_dir / "summary.json"


# Sacred keys that become the Path fields above ("" = derived from the roots, see
# experiment.job_from_config), and keys of the process rather than of the model.
PATH_DEFAULTS = {
    "data_root": "data/demo",
    "output_root": "outputs",
    "runs_dir": "runs",
    "work_dir": "",
    "feature_cache": "",
    "train_gt": "",
    "eval_gt": "",
    "tube_json_train": "",
    "tube_json_val": "",
}
PROCESS_DEFAULTS = {"device": "auto", "threads": 0}

# Every key a run accepts, with its default; an unknown key is refused by Sacred.
DEFAULT_CONFIG = {
    **PATH_DEFAULTS,
    **{f.name: f.default for f in fields(TrainingJob) if f.default is not MISSING},
    **PROCESS_DEFAULTS,
}
