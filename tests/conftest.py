"""Shared fixtures and the one place where optional tests are skipped, by marker."""

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _postgres_bin_dir() -> Path | None:
    from wsovvis_ops.pg_cluster import bin_dir

    return bin_dir()


def _ray() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("ray", "dagster_ray", "dagster_postgres"))


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


SKIP_REASONS = {
    "shared": (
        lambda: not SHARED_DATA.is_dir(),
        f"needs the real fixtures in {SHARED_DATA} (../shared beside the checkout)",
    ),
    "thirdparty": (
        lambda: not all((REPO / "third_party" / d).is_dir() for d in ("VNext", "CutLER")),
        "needs VNext and CutLER checkouts in third_party/ (materialise patched_vnext first)",
    ),
    "gpu": (lambda: not _cuda(), "needs a CUDA device"),
    "postgres": (
        lambda: _postgres_bin_dir() is None,
        "needs PostgreSQL's server binaries (initdb, pg_ctl): scripts/test.sh installs Debian's "
        "postgresql when it runs as root with apt",
    ),
    "multihost": (
        lambda: not _ray() or _postgres_bin_dir() is None,
        "needs the `ray` and `deploy` extras (bash scripts/setup.sh dev,train,deploy,ray) and "
        "PostgreSQL's server binaries",
    ),
    "browser": (
        lambda: _chromium() is None, "needs Debian's chromium (scripts/install_browser.sh)"
    ),
    "root": (lambda: os.geteuid() != 0, "needs root to act as another local user (nobody)"),
}


def pytest_collection_modifyitems(config, items):
    decided = {}
    for item in items:
        for marker, (should_skip, reason) in SKIP_REASONS.items():
            # a marker, not a keyword: keywords also hold folder names (tests/gpu/)
            if item.get_closest_marker(marker) is not None:
                if marker not in decided:
                    decided[marker] = should_skip()
                if decided[marker]:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="module")
def real_jpegs(tmp_path_factory) -> list[bytes]:
    """Bytes of real JPEG frames in order: DAVIS (854x480) if ../shared exists, else synthetic."""
    davis = SHARED_DATA / "davis" / "JPEGImages" / "horsejump-high"
    if davis.is_dir():
        return [(davis / f"{i:05d}.jpg").read_bytes() for i in range(8)]
    from wsovvis_dagster.video.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("frames")
    generate_dataset(root, seed=3, num_frames=8, videos_per_split={"val": 1})
    return [p.read_bytes() for p in sorted((root / "val" / "JPEGImages" / "val0000").iterdir())]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic dataset (2 videos per split, 8 frames), generated once per session."""
    from wsovvis_dagster.video.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, seed=1, num_frames=8, videos_per_split={"train": 2, "val": 2})
    return root


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A fresh DAGSTER_HOME with the project's instance config rendered in."""
    from wsovvis_ops.instance import render_instance

    home = tmp_path / "dagster_home"
    render_instance(home, gpu_limit=4)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def instance(dagster_home):
    from dagster import DagsterInstance

    with DagsterInstance.get() as inst:
        yield inst


@pytest.fixture
def resources_for(tmp_path):
    """Build the code location's resources for a given data root (outputs under tmp_path)."""

    def build(data_root: Path, **predictor_settings) -> dict:
        from resources import DatasetPaths, PredictorResource, SacredObserverResource

        return {
            "paths": DatasetPaths(data_root=str(data_root), output_root=str(tmp_path / "outputs")),
            "predictor": PredictorResource(**predictor_settings),
            "sacred": SacredObserverResource(runs_dir=str(tmp_path / "runs")),
        }

    return build


@pytest.fixture
def subprocess_env(dagster_home) -> dict:
    """Environment for running the project's CLIs in a subprocess from the repo root."""
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home)
    env["DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME"] = "definitions"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def materialize_graph(instance, resources, *, keys=None, run_config=None, raise_on_error=True):
    """video_partitions -> mask_pngs (one multi-partition run) -> tube_json, like the demo.

    Returns the three `ExecuteInProcessResult`s. `keys` limits mask_pngs to those partitions
    (default: all registered, which must be contiguous in the instance's order).
    """
    from dagster import materialize

    from definitions import defs
    from wsovvis_instance.dagster_private import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    assets = list(defs.assets)
    first = materialize(assets, selection=["video_partitions"], instance=instance,
                        resources=resources, raise_on_error=raise_on_error)
    keys = keys or instance.get_dynamic_partitions("videos")
    masks = materialize(
        assets, selection=["mask_pngs"], instance=instance, resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=raise_on_error,
    )
    tubes = materialize(assets, selection=["tube_json"], instance=instance, resources=resources,
                        run_config=run_config, raise_on_error=raise_on_error)
    return first, masks, tubes


@pytest.fixture
def run_graph(instance):
    def run(resources, **kwargs):
        return materialize_graph(instance, resources, **kwargs)

    return run
