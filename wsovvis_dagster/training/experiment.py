"""The Sacred experiment around `fit_and_evaluate`: config schema, seeding, rank-0 observer.

Every rank builds the same experiment and runs the same config; rank 0 alone attaches a
`FileStorageObserver` at the config's `runs_dir`, so `runs/<id>/{config,metrics,run}.json` and
`cout.txt` are written once per job (launched by `trained_model`, `-F`/`-u` do the same for any
script: see launch.py). Rank 0 also writes `<work_dir>/summary.json`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from sacred import Experiment
from sacred.observers import FileStorageObserver

from wsovvis_dagster.atomic import write_json_atomic
from wsovvis_dagster.paths import gt_json_path, tube_json_path
from wsovvis_dagster.training.fit import fit_and_evaluate
from wsovvis_dagster.training.loop import init_distributed, shutdown_distributed
from wsovvis_dagster.training.schema import DEFAULT_CONFIG, TrainingJob

EXPERIMENT_NAME = "wsovvis_train"

# The config schema (wsovvis_dagster/training/schema.py): configs/wsovvis_sacred.yaml and
# `key=value` updates override these; an unknown key is refused by Sacred.
__all__ = ["DEFAULT_CONFIG", "EXPERIMENT_NAME", "build_experiment", "job_from_config"]


def job_from_config(config: dict) -> TrainingJob:
    """Translate the Sacred config (the only place that knows its keys) into a `TrainingJob`."""
    data_root = Path(config["data_root"]).resolve()
    output_root = Path(config["output_root"]).resolve()

    def gt(key: str, split: str) -> Path:
        return Path(config[key]) if config[key] else gt_json_path(data_root, split)

    def tubes(key: str, split: str) -> Path:
        return Path(config[key]).resolve() if config[key] else tube_json_path(output_root, split)

    fields = set(TrainingJob.__dataclass_fields__) - {
        "data_root", "output_root", "work_dir", "feature_cache", "train_gt", "eval_gt",
        "train_tubes", "eval_tubes"}
    return TrainingJob(
        data_root=data_root,
        output_root=output_root,
        work_dir=Path(config["work_dir"] or output_root / "training").resolve(),
        feature_cache=Path(config["feature_cache"] or output_root / "features").resolve(),
        train_gt=gt("train_gt", config["train_split"]),
        eval_gt=gt("eval_gt", config["eval_split"]),
        train_tubes=tubes("tube_json_train", config["train_split"]),
        eval_tubes=tubes("tube_json_val", config["eval_split"]),
        **{k: config[k] for k in fields},
    )


def _use_cuda(device: str) -> bool:
    if device == "auto":
        return torch.cuda.is_available()
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no CUDA device")
    return device == "cuda"


class RankZeroObservedExperiment(Experiment):
    """An `Experiment` whose main command is observed by rank 0 only, at config `runs_dir`."""

    def __init__(self, name: str, *, rank: int) -> None:
        super().__init__(name)
        self.rank = rank

    def _create_run(self, command_name=None, *args, **kwargs):
        # The observer folder is part of the config, which Sacred resolves only here.
        run = super()._create_run(command_name, *args, **kwargs)
        is_main_command = (command_name or self.default_command) == self.default_command
        if self.rank != 0 or not is_main_command:
            run.observers = []
            run.unobserved = True  # on purpose: no "no observers" warning per rank
        elif run.config.get("runs_dir") and not any(
            isinstance(o, FileStorageObserver) for o in run.observers
        ):
            run.observers.append(FileStorageObserver(run.config["runs_dir"]))
        return run


def build_experiment(*, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> Experiment:
    """The training experiment for one process of a `world_size` job."""
    ex = RankZeroObservedExperiment(EXPERIMENT_NAME, rank=rank)
    ex.add_config(dict(DEFAULT_CONFIG))

    @ex.main
    def run(_run, _config, _log) -> dict:
        job = job_from_config(_config)
        if _config["threads"]:
            torch.set_num_threads(_config["threads"])
        try:
            ctx = init_distributed(rank=rank, world_size=world_size, local_rank=local_rank,
                                   use_cuda=_use_cuda(_config["device"]))
            _log.info(f"rank {rank}/{world_size} on {ctx.device} ({ctx.backend}), "
                      f"work_dir {job.work_dir}")
            summary = fit_and_evaluate(job, ctx, log=_log, log_scalar=_run.log_scalar)
        finally:
            shutdown_distributed()
        if summary is None:
            return {}
        observer = next((o for o in _run.observers if isinstance(o, FileStorageObserver)), None)
        summary["sacred"] = {
            "run_id": str(_run._id) if _run._id is not None else None,
            "run_dir": str(Path(observer.basedir, str(_run._id)).resolve()) if observer else None,
            "config": dict(_config),
        }
        for who, values in summary["metrics"].items():
            for name, value in values.items():
                _run.log_scalar(f"{job.eval_split}.{who}.{name}", value, summary["epochs_done"])
        _run.info["metrics"] = summary["metrics"]
        _run.info["checkpoint"] = summary["checkpoint"]
        _run.info["results_json"] = summary["results"]
        _run.info["resumed_from_epoch"] = summary["resumed_from_epoch"]
        write_json_atomic(job.summary_path, summary)
        return {"final_loss": summary["final_loss"], **{
            f"{who}_{k}": v for who, values in summary["metrics"].items() for k, v in values.items()
        }}

    return ex
