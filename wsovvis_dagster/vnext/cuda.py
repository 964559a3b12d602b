"""CUDA toolkit detection: which nvcc a build would use, and whether it matches torch's CUDA.

torch refuses to build extensions with a toolkit of another *major* CUDA version (the result
would not load); a different minor version only warns. We check before compiling, and the
error names the exact CUDA_HOME to use when a matching toolkit is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import CudaToolkitError

_RELEASE = re.compile(r"release (\d+)\.(\d+)")
_DEFAULT_ROOTS = (Path("/usr/local"), Path("/opt"))


@dataclass(frozen=True)
class CudaToolkit:
    """A CUDA toolkit folder: `home/bin/nvcc` reports `version` ("13.0")."""

    home: Path
    version: str

    @property
    def nvcc(self) -> Path:
        return self.home / "bin" / "nvcc"


@dataclass(frozen=True)
class CudaCheck:
    """severity: "ok", "warning" (minor version differs: builds, torch warns) or "error"."""

    severity: str
    message: str
    toolkit: CudaToolkit | None
    torch_cuda: str | None

    @property
    def ok(self) -> bool:
        return self.severity != "error"

    def raise_if_error(self) -> None:
        if self.severity == "error":
            raise CudaToolkitError(self.message)


def parse_nvcc_version(text: str) -> str | None:
    """'... Cuda compilation tools, release 13.0, V13.0.88' -> '13.0' (None if absent)."""
    m = _RELEASE.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def toolkit_at(home: Path) -> CudaToolkit | None:
    """The toolkit in `home` if `home/bin/nvcc --version` answers, else None."""
    nvcc = Path(home) / "bin" / "nvcc"
    if not nvcc.is_file():
        return None
    try:
        proc = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = parse_nvcc_version(proc.stdout)
    return CudaToolkit(Path(home), version) if version else None


def find_toolkits(roots: Iterable[Path] = _DEFAULT_ROOTS) -> list[CudaToolkit]:
    """Toolkits under `roots` (`cuda`, `cuda-*` folders), by resolved path, newest first."""
    seen: dict[Path, CudaToolkit] = {}
    for root in roots:
        if not Path(root).is_dir():
            continue
        for home in sorted(Path(root).glob("cuda*")):
            toolkit = toolkit_at(home)
            if toolkit and home.resolve() not in seen:
                seen[home.resolve()] = toolkit
    return sorted(seen.values(), key=lambda t: (_major_minor(t.version), str(t.home)),
                  reverse=True)


def build_toolkit(cuda_home: str | None, env: Mapping[str, str]) -> CudaToolkit | None:
    """The toolkit torch's extension builder would use, in its order: the explicit
    `cuda_home`, then CUDA_HOME / CUDA_PATH in `env`, then `nvcc` on PATH, then
    /usr/local/cuda."""
    for candidate in (cuda_home, env.get("CUDA_HOME"), env.get("CUDA_PATH")):
        if candidate:
            return toolkit_at(Path(candidate))
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        return toolkit_at(Path(nvcc).resolve().parent.parent)
    return toolkit_at(Path("/usr/local/cuda"))


def check_cuda_match(
    torch_cuda: str | None,
    torch_version: str,
    toolkit: CudaToolkit | None,
    available: Iterable[CudaToolkit] = (),
) -> CudaCheck:
    """Compare the build toolkit with torch's CUDA; the message says exactly what to do."""
    available = list(available)
    if torch_cuda is None:
        return CudaCheck(
            "error",
            f"torch {torch_version} is a CPU build (torch.version.cuda is None): the CUDA op "
            "cannot be built against it. Install a CUDA build of torch on the GPU machine; on "
            "CPU, deform_attn_ops uses the PyTorch path instead.",
            toolkit, None,
        )
    want = _major_minor(torch_cuda)
    exact = [t for t in available if _major_minor(t.version) == want]
    same_major = [t for t in available if _major_minor(t.version)[0] == want[0]]
    suggestion = exact[0] if exact else (same_major[0] if same_major else None)
    fix = (
        f"export CUDA_HOME={suggestion.home} (CUDA {suggestion.version} is installed there)"
        if suggestion
        else f"install the CUDA {torch_cuda} toolkit (e.g. to /usr/local/cuda-{torch_cuda}) and "
        f"export CUDA_HOME=/usr/local/cuda-{torch_cuda}, or install a torch build for the "
        "toolkit you have"
    )
    if toolkit is None:
        return CudaCheck(
            "error",
            f"no CUDA toolkit (nvcc) found, and torch {torch_version} was built with CUDA "
            f"{torch_cuda}. Fix: {fix}.",
            None, torch_cuda,
        )
    have = _major_minor(toolkit.version)
    if have[0] != want[0]:
        return CudaCheck(
            "error",
            f"CUDA mismatch: {toolkit.nvcc} is CUDA {toolkit.version} but torch {torch_version} "
            f"was built with CUDA {torch_cuda}; an op built this way does not load. Fix: {fix}.",
            toolkit, torch_cuda,
        )
    if have != want:
        return CudaCheck(
            "warning",
            f"{toolkit.nvcc} is CUDA {toolkit.version}, torch {torch_version} has CUDA "
            f"{torch_cuda}: same major version, so the build works (torch warns). For an exact "
            f"match: {fix}.",
            toolkit, torch_cuda,
        )
    return CudaCheck("ok", f"nvcc {toolkit.version} at {toolkit.nvcc} matches torch CUDA "
                     f"{torch_cuda}", toolkit, torch_cuda)
