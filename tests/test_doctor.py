"""`wsovvis doctor`: each check, from a hand-built probe, says the problem and its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsovvis_dagster import doctor
from wsovvis_dagster.doctor import Probe, run_doctor
from wsovvis_dagster.vnext.cuda import CudaToolkit
from wsovvis_dagster.vnext.patch import apply_patch
from wsovvis_dagster.vnext.testing import make_fake_checkouts

OK_IMPORTS = {m: "" for m in ("numpy", "PIL.Image", "shapely", "pycocotools._mask", "torch",
                              "torchvision.ops", "setuptools", "wheel", "fvcore", "iopath",
                              "omegaconf", "timm", "detectron2")}


def healthy(**changes) -> Probe:
    base = dict(python="python", imports=dict(OK_IMPORTS),
                versions={"torch": "2.11.0+cu130", "PIL": "12.0"}, pil_has_linear=False,
                torch_cuda="13.0", cuda_available=True,
                toolkit=CudaToolkit(Path("/usr/local/cuda-13.0"), "13.0"), toolkits=[],
                op_error=None, patched_import_error=None)
    base.update(changes)
    return Probe(**base)


@pytest.fixture
def trees(tmp_path):
    vnext, cutler, _, _ = make_fake_checkouts(tmp_path)
    weights = tmp_path / "videocutler_m2f_rn50.pth"
    weights.write_bytes(b"\0" * 2_000_000)
    return vnext, cutler, str(weights)


def checks(problems):
    return {p.check for p in problems}


def test_healthy_patched_environment_has_no_problems(trees):
    vnext, cutler, weights = trees
    apply_patch(vnext, cutler)
    assert run_doctor(vnext, cutler, weights, probed=healthy()) == []


def test_unpatched_tree_reports_pillow_and_numpy_with_fix(trees):
    vnext, cutler, weights = trees
    problems = run_doctor(vnext, cutler, weights, probed=healthy())
    by = {p.check: p for p in problems}
    assert "Image.LINEAR" in by["Pillow LINEAR"].message
    assert "patched_vnext" in by["Pillow LINEAR"].fix
    assert "np.bool" in by["NumPy aliases"].message
    # Pillow < 10 still has LINEAR: not a problem there
    assert "Pillow LINEAR" not in checks(run_doctor(vnext, cutler, weights,
                                                    probed=healthy(pil_has_linear=True)))


def test_geos_and_pycocotools_numpy_order(trees):
    vnext, cutler, weights = trees
    apply_patch(vnext, cutler)
    imports = dict(OK_IMPORTS, shapely="OSError: Could not find lib geos_c or load any of "
                   "its variants", **{"pycocotools._mask": "ValueError: numpy.dtype size "
                                      "changed, may indicate binary incompatibility"})
    problems = run_doctor(vnext, cutler, weights, probed=healthy(imports=imports))
    by = {p.check: p for p in problems}
    assert "GEOS" in by["shapely/GEOS"].fix
    assert "install NumPy first" in by["NumPy before pycocotools"].fix
    # shapely simply absent is fine (optional)
    imports = dict(OK_IMPORTS, shapely="ModuleNotFoundError: No module named 'shapely'")
    assert run_doctor(vnext, cutler, weights, probed=healthy(imports=imports)) == []


def test_torch_invisible_to_builds_and_torchvision_flavour(trees):
    vnext, cutler, weights = trees
    apply_patch(vnext, cutler)
    imports = dict(OK_IMPORTS, torch="ModuleNotFoundError: No module named 'torch'",
                   wheel="ModuleNotFoundError: No module named 'wheel'")
    by = {p.message: p for p in run_doctor(vnext, cutler, weights,
                                           probed=healthy(imports=imports))}
    assert any("detectron2's setup.py imports torch" in p.fix for p in by.values())
    assert any("--no-build-isolation" in p.fix for p in by.values())
    imports = dict(OK_IMPORTS, **{"torchvision.ops": "RuntimeError: operator torchvision::nms "
                                  "does not exist"})
    problems = run_doctor(vnext, cutler, weights, probed=healthy(imports=imports))
    assert [p.check for p in problems] == ["torchvision"]
    assert "same CUDA/CPU flavour" in problems[0].fix


def test_cuda_mismatch_weights_imports_and_op(trees):
    vnext, cutler, weights = trees
    apply_patch(vnext, cutler)
    good = CudaToolkit(Path("/usr/local/cuda-13.0"), "13.0")
    probe = healthy(toolkit=CudaToolkit(Path("/usr/local/cuda-12.1"), "12.1"), toolkits=[good],
                    op_error="ModuleNotFoundError: No module named 'MultiScaleDeformableAttention'",
                    patched_import_error="importing failed:\nTraceback\nImportError: cannot "
                    "import name 'point_sample'\nRe-materialise patched_vnext")
    by = {p.check: p for p in run_doctor(vnext, cutler, None, probed=probe)}
    assert "export CUDA_HOME=/usr/local/cuda-13.0" in by["CUDA toolkit vs torch"].message
    assert "videocutler_m2f_rn50.pth" in by["weights"].fix
    assert "point_sample" in by["patched imports"].message
    assert by["MultiScaleDeformableAttention"].severity == "error"
    assert "deform_attn_ops" in by["MultiScaleDeformableAttention"].fix


def test_cpu_machine_only_warns_about_the_slow_path(trees, tmp_path):
    vnext, cutler, weights = trees
    apply_patch(vnext, cutler)
    probe = healthy(torch_cuda=None, cuda_available=False, toolkit=None,
                    op_error="ModuleNotFoundError: MultiScaleDeformableAttention")
    problems = run_doctor(vnext, cutler, weights, probed=probe)
    assert [(p.check, p.severity) for p in problems] == [("MultiScaleDeformableAttention",
                                                          "warning")]
    tiny = tmp_path / "tiny.pth"
    tiny.write_text("<html>")
    assert "not a checkpoint" in run_doctor(vnext, cutler, str(tiny), probed=probe)[0].message


def test_cli_prints_problems_with_fixes(trees, monkeypatch, capsys):
    vnext, cutler, _ = trees
    monkeypatch.setattr(doctor, "probe", lambda *a, **k: healthy())
    code = doctor.cli_doctor(["--vnext-root", str(vnext), "--cutler-root", str(cutler)])
    out = capsys.readouterr().out
    assert code == 1
    assert "[error] weights" in out and "fix:" in out and "error(s)" in out
