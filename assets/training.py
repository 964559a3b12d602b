"""`trained_model`: the WS-OVVIS reference model, trained by a torchrun job tracked by Sacred."""

import time
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from resources import DatasetPaths, SacredObserverResource
from wsovvis_dagster.training.launch import launch_training, plan_launch, write_launch_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_FILE = REPO / "configs" / "wsovvis_sacred.yaml"


class TrainingConfig(Config):
    """Launch settings, and the training keys most often changed (the rest: `config_file`)."""

    nproc: int = Field(default=0, description="processes, one per GPU when GPUs are used; "
                       "0: every GPU, or 2 CPU processes without GPUs")
    device: str = Field(default="auto", description="auto (GPUs when present) | cuda | cpu")
    epochs: int = 40
    batch_videos: int = Field(default=4, description="videos per step and process")
    lr: float = 3e-3
    seed: int = 0
    pooling: str = Field(default="lse", description="max | lse")
    extractor: str = Field(default="handcrafted", description="or open_clip:<arch>")
    extractor_weights: str = Field(default="", description="local weights of open_clip")
    text_bank: str = Field(default="attributes", description="or a (C, D) .npy bank")
    text_bank_names: str = Field(default="", description="category names of the .npy rows")
    resume: bool = Field(default=True, description="continue from the last checkpoint")
    config_file: str = Field(default="", description="base Sacred YAML (default: "
                             "configs/wsovvis_sacred.yaml)")


def _metadata(summary: dict, nproc: int) -> dict:
    metrics = summary["metrics"]
    out = {
        "sacred_run_id": summary["sacred"]["run_id"],
        "sacred_run_dir": MetadataValue.path(summary["sacred"]["run_dir"] or ""),
        "final_loss": summary["final_loss"],
        "loss_per_epoch": MetadataValue.json(summary["losses"]),
        "epochs": summary["epochs_done"],
        "resumed_from_epoch": summary["resumed_from_epoch"],
        "checkpoint": MetadataValue.path(summary["checkpoint"]),
        "results_json": MetadataValue.path(summary["results"]),
        "wall_time_s": round(summary["wall_time_s"], 1),  # features + training + evaluation
        "nproc": nproc,
        "device": summary["device"],
    }
    for who, keys in (("val", ("AP", "AP50", "AP75", "APb", "APn")),
                      ("random", ("AP", "AP50", "APb", "APn")),
                      ("oracle", ("AP", "AP50", "APb", "APn"))):
        values = metrics["model" if who == "val" else who]
        out.update({f"{who}_{k}": round(values[k], 4) for k in keys if k in values})
    return out


@asset(
    deps=["tube_json"],
    group_name="training",
    kinds={"pytorch"},
    owners=["team:wsovvis"],
    code_version="1",
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainingConfig,
    paths: DatasetPaths,
    sacred: SacredObserverResource,
) -> MaterializeResult:
    """Tube->text projection trained on video-level base tags (MIL), evaluated on val with
    the full vocabulary; `<output_root>/training/` holds its checkpoint and results JSON."""
    plan = plan_launch(config.nproc, config.device)
    if plan.uses_gpu:
        context.instance.add_run_tags(context.run_id, {"gpu": "true"})
    work_dir = paths.outputs / "training"
    overrides = config.model_dump(exclude={"nproc", "config_file"}) | {
        "data_root": str(paths.data), "output_root": str(paths.outputs),
        "runs_dir": str(sacred.path), "work_dir": str(work_dir), "device": plan.device,
    }
    config_path = write_launch_config(
        Path(config.config_file or DEFAULT_CONFIG_FILE), overrides, work_dir / "launch_config.yaml"
    )
    context.log.info(f"torchrun: {plan.nproc} {plan.device} processes ({plan.backend})")
    started = time.perf_counter()
    summary = launch_training(config_path, nproc=plan.nproc, work_dir=work_dir,
                              on_line=context.log.info, cwd=REPO)
    metadata = _metadata(summary, plan.nproc)
    metadata["launch_wall_time_s"] = round(time.perf_counter() - started, 1)  # with startup
    return MaterializeResult(metadata=metadata)
