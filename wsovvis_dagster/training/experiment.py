"""The Sacred experiment around `fit_and_evaluate`: config schema, seeding, rank-0 observer.

Every rank builds the same experiment and runs the same config; rank 0 alone attaches a
`FileStorageObserver` at the config's `runs_dir`, so `runs/<id>/{config,metrics,run}.json` and
`cout.txt` are written once per job. Rank 0 also writes `<work_dir>/summary.json` (what the
Dagster asset reports). A rank that fails writes its traceback to
`<work_dir>/errors/rank<k>.json` before exiting, so the launcher can name the failing rank.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import torch
from sacred import Experiment
from sacred.observers import FileStorageObserver

from wsovvis_dagster.atomic import write_json_atomic
from wsovvis_dagster.paths import gt_json_path
from wsovvis_dagster.training.fit import TrainingJob, fit_and_evaluate
from wsovvis_dagster.training.loop import init_distributed, shutdown_distributed

EXPERIMENT_NAME = "wsovvis_train"

# The config schema: every key a run accepts, with its default. configs/wsovvis_sacred.yaml
# and `key=value` updates override these; an unknown key is refused by Sacred.
DEFAULT_CONFIG = {
    "data_root": "data/demo",  # LV-VIS layout: <data_root>/<split>/JPEGImages/<video>/
    "output_root": "outputs",  # where tube_json wrote <split>/tubes_<split>.json
    "runs_dir": "runs",  # Sacred FileStorageObserver folder (rank 0 only); "" = unobserved
    "work_dir": "",  # checkpoints, results, summary; "" = <output_root>/training
    "feature_cache": "",  # "" = <output_root>/features
    "train_split": "train",
    "eval_split": "val",
    "train_gt": "",  # "" = <data_root>/annotations/<train_split>_instances.json
    "eval_gt": "",  # "" = <data_root>/annotations/<eval_split>_instances.json
    "extractor": "handcrafted",  # or open_clip:<arch> (needs extractor_weights)
    "extractor_weights": "",
    "text_bank": "attributes",  # or a (C, D) .npy aligned with the categories sorted by id
    "text_bank_names": "",  # optional: the category names the .npy rows follow
    "text_dim": 64,  # attribute bank dimension (a .npy bank brings its own)
    "hidden_dim": 256,
    "dropout": 0.1,
    "init_temperature": 0.07,
    "epochs": 40,
    "batch_videos": 4,  # videos per step and rank
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "pooling": "lse",  # max | lse (smooth max over tubes)
    "lse_r": 5.0,
    "checkpoint_every": 1,  # epochs
    "resume": True,  # continue from <work_dir>/checkpoints/last.pt if its settings match
    "topk": 10,  # categories per tube in the results JSON
    # Novel objects in training videos are never tagged, so training learns them as background;
    # keeping the background column at test time suppresses exactly those tubes (APn -3 on the
    # synthetic set), so by default only the categories compete.
    "inference_background": False,
    "device": "auto",  # auto | cpu | cuda
    "threads": 0,  # torch CPU threads per rank; 0 = torch's default (torchrun sets 1)
}


def job_from_config(config: dict) -> TrainingJob:
    """Translate the Sacred config (the only place that knows its keys) into a `TrainingJob`."""
    data_root = Path(config["data_root"]).resolve()
    output_root = Path(config["output_root"]).resolve()

    def gt(key: str, split: str) -> Path:
        return Path(config[key]) if config[key] else gt_json_path(data_root, split)

    fields = set(TrainingJob.__dataclass_fields__) - {
        "data_root", "output_root", "work_dir", "feature_cache", "train_gt", "eval_gt"}
    return TrainingJob(
        data_root=data_root,
        output_root=output_root,
        work_dir=Path(config["work_dir"] or output_root / "training").resolve(),
        feature_cache=Path(config["feature_cache"] or output_root / "features").resolve(),
        train_gt=gt("train_gt", config["train_split"]),
        eval_gt=gt("eval_gt", config["eval_split"]),
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


def write_rank_error(work_dir: Path, rank: int) -> None:
    """Record the exception being handled as `<work_dir>/errors/rank<k>.json`."""
    write_json_atomic(Path(work_dir) / "errors" / f"rank{rank}.json",
                      {"rank": rank, "time": time.time(), "traceback": traceback.format_exc()})


def build_experiment(*, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> Experiment:
    """The training experiment for one process of a `world_size` job."""
    ex = RankZeroObservedExperiment(EXPERIMENT_NAME, rank=rank)
    ex.add_config({**DEFAULT_CONFIG, "seed": 0})

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
        except BaseException:
            write_rank_error(job.work_dir, rank)
            raise
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
        _run.info["resumed_from_epoch"] = summary["resumed_from_epoch"]
        write_json_atomic(job.summary_path, summary)
        return {"final_loss": summary["final_loss"], **{
            f"{who}_{k}": v for who, values in summary["metrics"].items() for k, v in values.items()
        }}

    return ex
