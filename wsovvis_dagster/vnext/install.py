"""Editable install of the patched VNext, and the import check in a fresh interpreter.

Both run `python` (default: this interpreter) in a subprocess, so the project's environment
is the one that gets VNext and the check sees a clean import state, not ours.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import OpBuildError, ThirdPartyError

VIDEOCUTLER_DIR = "videocutler"


@dataclass(frozen=True)
class TorchInfo:
    """torch as seen by `python`: version, CUDA version (None: CPU build), visible devices."""

    version: str
    cuda: str | None
    cuda_available: bool
    capabilities: tuple[str, ...]  # e.g. ("9.0",) for one H200


def torch_info(python: str = sys.executable) -> TorchInfo:
    code = (
        "import json, torch\n"
        "caps = []\n"
        "if torch.cuda.is_available():\n"
        "    for i in range(torch.cuda.device_count()):\n"
        "        caps.append('%d.%d' % torch.cuda.get_device_capability(i))\n"
        "print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda,\n"
        "                  'available': torch.cuda.is_available(), 'caps': caps}))\n"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ThirdPartyError(f"{python} cannot import torch: {proc.stderr.strip()[-500:]}; "
                              "install the project with `pip install -e .[videocutler]`")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return TorchInfo(data["version"], data["cuda"], bool(data["available"]),
                     tuple(sorted(set(data["caps"]))))


@dataclass(frozen=True)
class InstallResult:
    """skipped: the same sources were already installed into the same environment."""

    python: str
    seconds: float
    log_path: Path | None
    skipped: bool = False


STAMP = ".wsovvis_build.json"


def tree_fingerprint(root: Path, patterns: tuple[str, ...], extra: dict) -> str:
    """sha256 over the files matching `patterns` under `root` (paths and bytes) and `extra`."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    files = sorted({p for pat in patterns for p in Path(root).glob(pat) if p.is_file()})
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def read_stamp(folder: Path) -> str | None:
    path = Path(folder) / STAMP
    try:
        return json.loads(path.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def write_stamp(folder: Path, fingerprint: str, **info) -> None:
    (Path(folder) / STAMP).write_text(json.dumps({"fingerprint": fingerprint, **info}, indent=1))


_VNEXT_SOURCES = ("setup.py", "detectron2/**/*.py", "detectron2/layers/csrc/**/*",
                  "projects/**/*.py")


def run_logged(cmd: list[str], *, cwd: Path | None, env: Mapping[str, str],
               log_path: Path | None, what: str) -> float:
    """Run `cmd`, teeing output into `log_path`; OpBuildError with the log tail on failure."""
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=dict(env), capture_output=True, text=True,
                          check=False)
    output = f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(output)
    if proc.returncode != 0:
        where = f" (full log: {log_path})" if log_path else ""
        raise OpBuildError(f"{what} failed with exit code {proc.returncode}{where}:\n"
                           f"{output[-3000:]}")
    return time.monotonic() - start


def install_vnext(vnext_root: Path, *, python: str = sys.executable,
                  env: Mapping[str, str] | None = None, log_path: Path | None = None,
                  max_jobs: int | None = None) -> InstallResult:
    """`pip install --no-build-isolation --no-deps -e <vnext_root>` into `python`'s environment.

    No build isolation, so the build sees the environment's torch (detectron2's setup.py
    imports it). No deps: the `videocutler` extra of this project pins what VNext needs;
    VNext's own list (black==21.4b2, ...) would downgrade the environment. Compiles
    detectron2's C++ ops (with CUDA kernels when a GPU is visible or FORCE_CUDA=1 is in env).
    """
    env = dict(os.environ if env is None else env)
    info = torch_info(python)
    fingerprint = tree_fingerprint(
        Path(vnext_root), _VNEXT_SOURCES,
        {"python": python, "torch": info.version, "cuda": info.cuda_available,
         "force_cuda": env.get("FORCE_CUDA", "")},
    )
    if read_stamp(vnext_root) == fingerprint and _imports_from(python, Path(vnext_root)):
        return InstallResult(python, 0.0, log_path, skipped=True)
    if max_jobs:
        env["MAX_JOBS"] = str(max_jobs)
    cmd = [python, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
           "--disable-pip-version-check", "--use-pep517", "--no-index", "-e",
           str(Path(vnext_root).resolve())]
    seconds = run_logged(cmd, cwd=None, env=env, log_path=log_path,
                         what=f"editable install of {vnext_root}")
    write_stamp(vnext_root, fingerprint, python=python, torch=info.version)
    return InstallResult(python, seconds, log_path)


def _imports_from(python: str, root: Path) -> bool:
    """Whether `python` imports detectron2 (with its compiled ops) from `root`."""
    code = "import detectron2, detectron2._C; print(detectron2.__file__)"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False,
                          cwd=str(root.resolve().parent))
    if proc.returncode != 0:
        return False
    return Path(proc.stdout.strip().splitlines()[-1]).resolve().is_relative_to(root.resolve())


@dataclass(frozen=True)
class ImportReport:
    """What a fresh interpreter imported from the patched checkouts."""

    detectron2: str
    detectron2_version: str
    mask2former: str
    msda_backend: str | None  # "cuda" when the compiled op imports, else None
    msda_library: str | None  # path of the compiled op's .so
    seconds: float


_VERIFY = """
import json, sys, time
t0 = time.monotonic()
sys.path.insert(0, {videocutler!r})
import PIL.Image
import detectron2
import detectron2.data.transforms  # Image.LINEAR at import time (Pillow >= 10)
from detectron2.projects.deeplab import add_deeplab_config, build_lr_scheduler
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness, point_sample)
import mask2former, mask2former_video
from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_func as f
print(json.dumps({{
    "detectron2": detectron2.__file__, "version": detectron2.__version__,
    "mask2former": mask2former.__file__, "backend": f.BACKEND,
    "so": getattr(f.MSDA, "__file__", None), "seconds": time.monotonic() - t0}}))
"""


def verify_imports(vnext_root: Path, cutler_root: Path, *,
                   python: str = sys.executable) -> ImportReport:
    """Import detectron2, our projects and VideoCutLER's packages in a fresh subprocess.

    Raises ThirdPartyError with the traceback tail when an import fails, or when detectron2
    comes from somewhere other than `vnext_root` (another detectron2 installed first).
    """
    videocutler = str((Path(cutler_root) / VIDEOCUTLER_DIR).resolve())
    code = _VERIFY.format(videocutler=videocutler)
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False,
                          cwd=str(Path(vnext_root).resolve().parent))
    if proc.returncode != 0:
        raise ThirdPartyError(
            "importing the patched VNext / VideoCutLER failed in a fresh interpreter "
            f"({python}):\n{proc.stderr.strip()[-2500:]}\nRe-materialise patched_vnext; "
            "`wsovvis doctor` lists the usual causes with their fixes"
        )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = Path(vnext_root).resolve()
    if not Path(data["detectron2"]).resolve().is_relative_to(expected):
        raise ThirdPartyError(
            f"detectron2 is imported from {data['detectron2']}, not the patched checkout "
            f"{expected}: `pip uninstall detectron2` and re-materialise patched_vnext"
        )
    return ImportReport(data["detectron2"], data["version"], data["mask2former"],
                        data["backend"], data["so"], float(data["seconds"]))
