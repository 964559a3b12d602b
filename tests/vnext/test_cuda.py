"""CUDA toolkit vs torch detection: versions, the messages and their exact fixes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wsovvis_dagster.errors import CudaToolkitError
from wsovvis_dagster.vnext import deform_attn
from wsovvis_dagster.vnext.cuda import (
    CudaToolkit,
    build_toolkit,
    check_cuda_match,
    find_toolkits,
    parse_nvcc_version,
    toolkit_at,
)
from wsovvis_dagster.vnext.install import TorchInfo

NVCC_13 = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Built on Wed_Aug_20_01:58:59_PM_PDT_2025
Cuda compilation tools, release 13.0, V13.0.88
Build cuda_13.0.r13.0/compiler.36424714_0
"""


def fake_toolkit(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {version}, V{version}.1'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return home


def test_parse_nvcc_version():
    assert parse_nvcc_version(NVCC_13) == "13.0"
    assert parse_nvcc_version("Cuda compilation tools, release 11.8, V11.8.89") == "11.8"
    assert parse_nvcc_version("command not found") is None


def test_find_toolkits_and_build_order(tmp_path):
    home12 = fake_toolkit(tmp_path, "cuda-12.1", "12.1")
    home13 = fake_toolkit(tmp_path, "cuda-13.0", "13.0")
    (tmp_path / "cuda-broken").mkdir()
    found = find_toolkits([tmp_path])
    assert [(t.home.name, t.version) for t in found] == [("cuda-13.0", "13.0"),
                                                          ("cuda-12.1", "12.1")]
    assert toolkit_at(tmp_path / "cuda-broken") is None
    # explicit > CUDA_HOME > CUDA_PATH > nvcc on PATH
    env = {"CUDA_HOME": str(home12), "PATH": str(home13 / "bin")}
    assert build_toolkit(str(home13), env).version == "13.0"
    assert build_toolkit(None, env).version == "12.1"
    assert build_toolkit(None, {"PATH": str(home13 / "bin")}).version == "13.0"


def test_major_mismatch_names_the_matching_cuda_home():
    have = CudaToolkit(Path("/usr/local/cuda-12.1"), "12.1")
    good = CudaToolkit(Path("/usr/local/cuda-13.0"), "13.0")
    check = check_cuda_match("13.0", "2.11.0+cu130", have, [have, good])
    assert check.severity == "error" and not check.ok
    assert "/usr/local/cuda-12.1/bin/nvcc is CUDA 12.1" in check.message
    assert "torch 2.11.0+cu130 was built with CUDA 13.0" in check.message
    assert "export CUDA_HOME=/usr/local/cuda-13.0" in check.message
    with pytest.raises(CudaToolkitError, match="export CUDA_HOME=/usr/local/cuda-13.0"):
        check.raise_if_error()


def test_major_mismatch_without_a_match_says_what_to_install():
    have = CudaToolkit(Path("/usr/local/cuda-11.8"), "11.8")
    check = check_cuda_match("12.4", "2.5.1+cu124", have, [have])
    assert check.severity == "error"
    assert "install the CUDA 12.4 toolkit" in check.message
    assert "export CUDA_HOME=/usr/local/cuda-12.4" in check.message


def test_minor_mismatch_warns_and_exact_match_is_ok():
    have = CudaToolkit(Path("/usr/local/cuda-13.1"), "13.1")
    exact = CudaToolkit(Path("/usr/local/cuda-13.0"), "13.0")
    warn = check_cuda_match("13.0", "2.11.0+cu130", have, [have, exact])
    assert warn.severity == "warning" and warn.ok
    assert "export CUDA_HOME=/usr/local/cuda-13.0" in warn.message
    ok = check_cuda_match("13.0", "2.11.0+cu130", exact, [exact])
    assert ok.severity == "ok" and "matches" in ok.message


def test_cpu_torch_and_missing_toolkit():
    cpu = check_cuda_match(None, "2.13.0+cpu", CudaToolkit(Path("/usr/local/cuda"), "13.0"))
    assert cpu.severity == "error" and "CPU build" in cpu.message
    none = check_cuda_match("13.0", "2.11.0+cu130", None, [])
    assert none.severity == "error" and "no CUDA toolkit (nvcc) found" in none.message


def test_op_build_checks_before_compiling(tmp_path, monkeypatch):
    home12 = fake_toolkit(tmp_path, "cuda-12.1", "12.1")
    monkeypatch.setattr(deform_attn, "torch_info",
                        lambda python: TorchInfo("2.11.0+cu130", "13.0", True, ("9.0",)))
    monkeypatch.setattr(deform_attn, "find_toolkits", lambda: [])
    compiled = []
    monkeypatch.setattr(deform_attn, "run_logged", lambda *a, **k: compiled.append(a))
    with pytest.raises(CudaToolkitError, match="CUDA mismatch.*12.1.*13.0"):
        deform_attn.build_deform_attn_op(
            tmp_path, deform_attn.OpBuildSettings(cuda_home=str(home12)))
    assert compiled == []


def test_op_build_without_cuda_records_the_slow_path(tmp_path, monkeypatch):
    monkeypatch.setattr(deform_attn, "torch_info",
                        lambda python: TorchInfo("2.13.0+cpu", None, False, ()))
    build = deform_attn.build_deform_attn_op(tmp_path)
    assert build.backend == "pytorch" and build.slow_path and build.library is None
    assert "slow path" in build.notes[0]


def test_force_cuda_without_gpu_needs_an_arch_list(tmp_path, monkeypatch):
    home13 = fake_toolkit(tmp_path, "cuda-13.0", "13.0")
    monkeypatch.setattr(deform_attn, "torch_info",
                        lambda python: TorchInfo("2.11.0+cu130", "13.0", False, ()))
    monkeypatch.setattr(deform_attn, "find_toolkits", lambda: [])
    with pytest.raises(CudaToolkitError, match="arch_list"):
        deform_attn.build_deform_attn_op(
            tmp_path, deform_attn.OpBuildSettings(cuda_home=str(home13), force_cuda=True))
