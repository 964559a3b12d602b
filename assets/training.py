"""`trained_model`: any Sacred training script or module, launched under torchrun and tracked by
Sacred (default: the reference WS-OVVIS trainer). See docs/training.md."""

import os
import shlex
import time
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from resources import DatasetPaths, SacredObserverResource
from wsovvis_dagster.gpu.leases import LeaseRequest, parse_gpus, resolve_slot_dir
from wsovvis_dagster.paths import tube_json_path
from wsovvis_dagster.training.launch import (
    REFERENCE_ENTRYPOINT,
    launch_sacred,
    parse_entrypoint,
    plan_launch,
    sacred_command,
    sacred_updates,
    visible_devices,
)
from wsovvis_dagster.training.sacred_report import curve_markdown, last_values
from wsovvis_dagster.training.schema import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CONFIG_FILE = REPO / "configs" / "wsovvis_sacred.yaml"
# the reference trainer's keys offered as typed fields (defaults from its schema)
TRAINING_KEYS = ("epochs", "batch_videos", "lr", "seed", "pooling", "extractor",
                 "extractor_weights", "text_bank", "text_bank_names", "resume")


def _key(default: object, what: str) -> object:
    return Field(default=default, description=f"{what}; passed only when set at launch "
                 f"(else the config file's value; reference default {default!r})")


class TrainingConfig(Config):
    """How to launch the trainer. Layers: script defaults < config_file < keys set here."""

    entrypoint: str = Field(default=REFERENCE_ENTRYPOINT, description="Sacred script (path, "
                            "relative to the repository root) or '-m package.module'")
    config_file: str = Field(default="", description="Sacred config file passed after `with` "
                             "(default: configs/wsovvis_sacred.yaml for the reference trainer, "
                             "none for other entrypoints)")
    config_updates: list[str] = Field(default_factory=list, description="Sacred `key=value` "
                                      "updates after the config file (they win over it)")
    nproc: int = Field(default=0, description="processes, one per GPU when GPUs are used; "
                       "0: every GPU (of `devices`), or 2 CPU processes without GPUs")
    device: str = Field(default="auto", description="auto (GPUs when present) | cuda | cpu")
    devices: str = Field(default="", description="GPU indices the job may lease, e.g. '0,1' "
                         "(empty: every GPU); leased like mask_pngs' GPUs, exported as "
                         "CUDA_VISIBLE_DEVICES")
    gpu_lease_timeout_s: float = Field(default=3600.0, description="wait for free GPUs")
    data_root_key: str = Field(default="data_root", description="Sacred key that receives the "
                               "data root ('' = not passed)")
    tube_json_train_key: str = Field(default="tube_json_train", description="Sacred key that "
                                     "receives train's tube JSON path ('' = not passed)")
    tube_json_val_key: str = Field(default="tube_json_val", description="Sacred key that "
                                   "receives val's tube JSON path ('' = not passed)")
    output_root_key: str = Field(default="auto", description="Sacred key that receives the "
                                 "output root (auto: output_root for the reference trainer, "
                                 "not passed otherwise)")
    device_key: str = Field(default="auto", description="Sacred key that receives cpu/cuda "
                            "(auto: device for the reference trainer, not passed otherwise)")
    observe: bool = Field(default=True, description="attach Sacred's FileStorageObserver at "
                          "the sacred resource's runs_dir (`-F`) on rank 0")
    epochs: int = _key(DEFAULT_CONFIG["epochs"], "training epochs")
    batch_videos: int = _key(DEFAULT_CONFIG["batch_videos"], "videos per step and process")
    lr: float = _key(DEFAULT_CONFIG["lr"], "learning rate")
    seed: int = _key(DEFAULT_CONFIG["seed"], "Sacred seed")
    pooling: str = _key(DEFAULT_CONFIG["pooling"], "max | lse")
    extractor: str = _key(DEFAULT_CONFIG["extractor"], "handcrafted or open_clip:<arch>")
    extractor_weights: str = _key(DEFAULT_CONFIG["extractor_weights"], "open_clip weights")
    text_bank: str = _key(DEFAULT_CONFIG["text_bank"], "attributes or a (C, D) .npy bank")
    text_bank_names: str = _key(DEFAULT_CONFIG["text_bank_names"], "names of the .npy rows")
    resume: bool = _key(DEFAULT_CONFIG["resume"], "continue from the last checkpoint")


def launched_keys(context: AssetExecutionContext) -> set[str]:
    """The Config keys this run's launch config names. Not `model_dump(exclude_unset=True)`:
    Dagster 1.13 drops launch values equal to the default before building the Config."""
    ops = (context.run.run_config or {}).get("ops") or {}
    return set(((ops.get(context.op_def.name) or {}).get("config")) or {})


def launch_values(config: TrainingConfig, paths: DatasetPaths, device: str,
                  launched: set[str]) -> dict[str, dict]:
    """Sacred keys the asset passes, each with its value and layer (after the config file)."""
    reference = parse_entrypoint(config.entrypoint) == parse_entrypoint(REFERENCE_ENTRYPOINT)

    def key(name: str, reference_key: str) -> str:
        return (reference_key if reference else "") if name == "auto" else name

    out: dict[str, dict] = {}
    for name, value in (
        (config.data_root_key, str(paths.data)),
        (config.tube_json_train_key, str(tube_json_path(paths.outputs, "train"))),
        (config.tube_json_val_key, str(tube_json_path(paths.outputs, "val"))),
        (key(config.output_root_key, "output_root"), str(paths.outputs)),
        (key(config.device_key, "device"), device),
    ):
        if name:
            out[name] = {"value": value, "source": "resources (paths) / launch plan"}
    for name in sorted(launched & set(TRAINING_KEYS)):
        out[name] = {"value": getattr(config, name), "source": "launch"}
    return out


@asset(
    deps=["tube_json"],
    group_name="training",
    kinds={"pytorch"},
    owners=["team:wsovvis"],
    # asset tag: runs selecting trained_model count as GPU runs (see docs/training.md); the
    # GPUs themselves are leased from the same lock files as mask_pngs'
    tags={"gpu": "true"},
    code_version="2",
)
def trained_model(
    context: AssetExecutionContext,
    config: TrainingConfig,
    paths: DatasetPaths,
    sacred: SacredObserverResource,
) -> MaterializeResult:
    """A Sacred training run under torchrun: its run folder, config and last metric values."""
    entry = parse_entrypoint(config.entrypoint)
    gpus = len(parse_gpus(config.devices)) if config.devices else None
    plan = plan_launch(config.nproc, config.device, gpus=gpus)
    values = launch_values(config, paths, plan.device, launched_keys(context))
    reference = entry == parse_entrypoint(REFERENCE_ENTRYPOINT)
    config_file = config.config_file or (str(REFERENCE_CONFIG_FILE) if reference else "")
    run_id = f"{context.run_id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = sacred_command(
        entry, nproc=plan.nproc, config_file=config_file,
        updates=sacred_updates({k: v["value"] for k, v in values.items()})
        + list(config.config_updates),
        runs_dir=sacred.path if config.observe else None, run_id=run_id)
    # observe false: the script's own FileStorageObserver, expected at the sacred resource's
    # runs_dir (rank_entry still passes it the run id)
    env, leases = {}, []
    if plan.uses_gpu:
        # the lease folder and lease API of mask_pngs' runs (devices '' = every GPU)
        request = LeaseRequest(config.devices or "auto",
                               resolve_slot_dir(home=context.instance.root_directory),
                               timeout_s=config.gpu_lease_timeout_s)
        leases = request.acquire_many(context.run_id, plan.nproc)
        env["CUDA_VISIBLE_DEVICES"] = visible_devices(
            [lease.index for lease in leases], os.environ.get("CUDA_VISIBLE_DEVICES"))
    context.log.info(f"torchrun: {plan.nproc} {plan.device} processes ({plan.backend})"
                     f"{', CUDA_VISIBLE_DEVICES=' + env['CUDA_VISIBLE_DEVICES'] if env else ''}"
                     f": {shlex.join(command)}")
    started = time.perf_counter()
    try:
        run = launch_sacred(
            command, run_dir=sacred.run_dir(run_id),
            errors_dir=paths.outputs / "training" / "launches" / run_id / "errors",
            on_line=context.log.info, env=env, cwd=REPO,
            on_metric=lambda n, s, v: context.log.info(f"metric {n} step {s}: {v:.6g}"))
    finally:
        for lease in leases:
            lease.release()
    sources = {k: "config file / script default" for k in run.config} | {
        k: v["source"] for k, v in values.items()} | {
        u.split("=", 1)[0]: "launch (config_updates)" for u in config.config_updates}
    metadata = {
        "sacred_run_id": run.run_id,
        "sacred_run_dir": MetadataValue.path(str(run.run_dir)),
        "sacred_status": run.status,
        "command": MetadataValue.text(shlex.join(command)),
        "config": MetadataValue.json(run.config),
        "config_sources": MetadataValue.json(sources),
        **last_values(run.metrics),
        "nproc": plan.nproc,
        "device": plan.device,
        "launch_wall_time_s": round(time.perf_counter() - started, 1),
    }
    if curve := curve_markdown(run.metrics):
        metadata["loss_curve"] = MetadataValue.md(curve)
    if run.result is not None:
        metadata["sacred_result"] = MetadataValue.json(run.result)
    for name in ("checkpoint", "results_json"):  # the reference trainer's files
        if isinstance(run.info.get(name), str):
            metadata[name] = MetadataValue.path(run.info[name])
    return MaterializeResult(metadata=metadata)
