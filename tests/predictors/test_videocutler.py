"""The real path on the CPU: patch the checkouts, install VNext, import, run VideoCutLER.

Needs `third_party/VNext` and `third_party/CutLER` at the pinned commits (materialise
`patched_vnext`, or clone them there) and a torch/torchvision pair whose torchvision ops load
(the CPU torch 2.13 wheel has none on PyPI: see third_party/README.md). The first run
compiles detectron2's C++ ops (about 10 minutes on 2 cores); later runs skip the install.
Random weights (the testing flag), confidence 0: the test checks the plumbing and the PNG
format, not the masks' quality.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
VNEXT = REPO / "third_party" / "VNext"
CUTLER = REPO / "third_party" / "CutLER"

pytestmark = [pytest.mark.thirdparty, pytest.mark.slow, pytest.mark.timeout(3600)]


def _torchvision_ops_load() -> str | None:
    code = "import torch, torchvision; from torchvision.ops import nms"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="module")
def patched_install():
    from wsovvis_dagster.vnext.install import install_vnext, verify_imports
    from wsovvis_dagster.vnext.patch import apply_patch
    from wsovvis_dagster.vnext.sources import CUTLER as CUTLER_PIN
    from wsovvis_dagster.vnext.sources import VNEXT as VNEXT_PIN
    from wsovvis_dagster.vnext.sources import head_commit

    problem = _torchvision_ops_load()
    if problem:
        pytest.skip(f"torchvision ops do not load in this environment ({problem}); "
                    "see third_party/README.md for a CPU torch + torchvision pair")
    for root, pin in ((VNEXT, VNEXT_PIN), (CUTLER, CUTLER_PIN)):
        if head_commit(root) != pin.commit:
            pytest.skip(f"{root} is not at the pinned commit {pin.commit[:7]}")
    apply_patch(VNEXT, CUTLER)
    assert not apply_patch(VNEXT, CUTLER).changed, "second patch run changed files"
    install_vnext(VNEXT, log_path=REPO / "test-artifacts" / "install_vnext.log")
    return verify_imports(VNEXT, CUTLER)


def test_imports_after_patch(patched_install):
    report = patched_install
    assert Path(report.detectron2).resolve().is_relative_to(VNEXT.resolve())
    assert report.msda_backend in (None, "cuda")  # None: op not built, explicit choice needed


def test_videocutler_cpu_random_weights_writes_pngs(patched_install, tmp_path):
    from wsovvis_dagster.masks.png_io import list_mask_files, load_id_map, write_mask_pngs
    from wsovvis_dagster.predictors.factory import build_predictor
    from wsovvis_dagster.predictors.settings import PredictorSettings

    rng = np.random.default_rng(0)
    frames = np.zeros((8, 48, 64, 3), np.uint8)
    for t in range(8):  # a bright square moving over a noisy background
        frames[t] = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        frames[t, 10:30, 5 + 3 * t:25 + 3 * t] = (220, 40, 40)
    settings = PredictorSettings(
        backend="videocutler", device="cpu", vnext_root=str(VNEXT), cutler_root=str(CUTLER),
        allow_random_weights=True, confidence=0.0, chunk_size=6, chunk_overlap=2,
    )
    predictor = build_predictor(settings)
    assert predictor.deform_attn == "pytorch"  # CPU: the slow path, chosen explicitly
    out = predictor.predict(frames)
    assert out.id_maps.shape == (8, 48, 64) and out.id_maps.dtype == np.uint16
    ids = sorted(set(np.unique(out.id_maps).tolist()) - {0})
    assert ids == list(range(1, len(out.scores) + 1))
    assert list(out.scores.values()) == sorted(out.scores.values(), reverse=True)

    dest = tmp_path / "masks"
    summary = write_mask_pngs(dest, [f"{t:05d}" for t in range(8)], iter(out.id_maps), out.scores)
    files = list_mask_files(dest)
    assert summary.frames == len(files) == 8
    for t, path in enumerate(files):
        assert np.array_equal(load_id_map(path), out.id_maps[t])


def test_missing_weights_fail_with_the_source(patched_install):
    from wsovvis_dagster.errors import WeightsError
    from wsovvis_dagster.predictors.factory import build_predictor
    from wsovvis_dagster.predictors.settings import PredictorSettings

    with pytest.raises(WeightsError, match="videocutler_m2f_rn50.pth"):
        build_predictor(PredictorSettings(backend="videocutler", cutler_root=str(CUTLER)))


def test_mask_pngs_asset_runs_with_the_videocutler_backend(patched_install, synthetic_root,
                                                           instance, resources_for, run_graph,
                                                           tmp_path):
    """The whole graph (video_partitions -> mask_pngs -> tube_json) with backend=videocutler."""
    from dagster import AssetKey, AssetRecordsFilter

    from wsovvis_dagster.gpu.worker import stop_workers
    from wsovvis_dagster.ytvis.tubes import load_tube_json

    resources = resources_for(
        synthetic_root, backend="videocutler", vnext_root=str(VNEXT), cutler_root=str(CUTLER),
        allow_random_weights=True, confidence=0.0, chunk_size=6, chunk_overlap=2,
    )
    try:
        run_graph(resources)
    finally:  # the mask run started a predictor worker (videocutler keeps one): not left behind
        stop_workers(Path(instance.root_directory) / "gpu_slots")
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("mask_pngs"), asset_partitions=["val__val0000"]),
        limit=1,
    ).records
    md = record.asset_materialization.metadata
    assert md["predictor"].value.startswith("videocutler") and md["frames"].value == 8
    assert md["tracks"].value >= 1
    data = load_tube_json(tmp_path / "outputs" / "val" / "tubes_val.json")
    assert [v["length"] for v in data["videos"]] == [8, 8] and data["annotations"]
