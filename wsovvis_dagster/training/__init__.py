"""The reference WS-OVVIS trainer: tube features + category text embeddings + MIL on video tags.

Plain library (no Dagster). Entry point: `python -m wsovvis_dagster.training with
configs/wsovvis_sacred.yaml` (Sacred), under `torchrun` for DDP; `launch.launch_sacred` runs
it (or any other Sacred script) as a subprocess for the `trained_model` asset. Heavy modules
(torch, sacred) are imported by the submodules that need them, not here.
"""
