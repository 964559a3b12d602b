"""The two toolchain steps the `patched_vnext` and `deform_attn_ops` assets run, end to end.

`prepare_vnext`: pinned checkouts -> our patch -> editable install. `prepare_deform_attn`:
CUDA op build (or the explicit PyTorch path) -> check in a fresh interpreter. Both return
small dataclasses whose `metadata()` is what the assets record.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from wsovvis_dagster.vnext.deform_attn import (
    OpBuild,
    OpBuildSettings,
    build_deform_attn_op,
    compare_with_pytorch,
)
from wsovvis_dagster.vnext.install import ImportReport, InstallResult, install_vnext, verify_imports
from wsovvis_dagster.vnext.patch import (
    PatchReport,
    apply_patch,
    output_version,
    patched_files,
)
from wsovvis_dagster.vnext.sources import (
    CUTLER,
    VNEXT,
    CheckoutResult,
    checkout_pinned,
    diff_stat,
    head_commit,
)


@dataclass(frozen=True)
class PatchedVNext:
    vnext: CheckoutResult
    cutler: CheckoutResult
    patch: PatchReport
    files: list[str]  # every file the patch owns, this run or earlier
    install: InstallResult

    def data_version(self) -> str:
        return output_version(self.vnext.commit, self.cutler.commit)

    def metadata(self) -> dict:
        return {
            "vnext_commit": self.vnext.commit,
            "cutler_commit": self.cutler.commit,
            "vnext_source": self.vnext.source,
            "cutler_source": self.cutler.source,
            "checkout": f"VNext {self.vnext.action}, CutLER {self.cutler.action}",
            "files_changed_this_run": len(self.patch.changes),
            "files_patched": len(self.files),
            "patched_files": "\n".join(self.files),
            "diff_summary": (f"VNext: {diff_stat(self.vnext.path) or 'clean'}\n"
                             f"CutLER: {diff_stat(self.cutler.path) or 'clean'}\n"
                             f"this run:\n{self.patch.summary()}"),
            "install": "skipped (already installed from these sources)"
            if self.install.skipped else f"editable install in {self.install.seconds:.0f}s",
            "python": self.install.python,
        }


def prepare_vnext(
    root: Path,
    *,
    vnext_source: str | None = None,
    cutler_source: str | None = None,
    vnext_commit: str = VNEXT.commit,
    cutler_commit: str = CUTLER.commit,
    python: str = sys.executable,
    max_jobs: int | None = None,
) -> PatchedVNext:
    """Check out both repositories at their pins under `root`, patch, install VNext."""
    root = Path(root)
    vnext = checkout_pinned(replace(VNEXT, commit=vnext_commit), root / "VNext", vnext_source)
    cutler = checkout_pinned(replace(CUTLER, commit=cutler_commit), root / "CutLER",
                             cutler_source)
    report = apply_patch(vnext.path, cutler.path)
    install = install_vnext(vnext.path, python=python, max_jobs=max_jobs,
                            log_path=root / "logs" / "install_vnext.log")
    return PatchedVNext(vnext, cutler, report, patched_files(vnext.path, cutler.path), install)


@dataclass(frozen=True)
class DeformAttn:
    build: OpBuild
    imports: ImportReport
    max_abs_err: float | None  # CUDA op vs float64 PyTorch reference (None without CUDA)
    sources: str  # output_version of the checkouts it was built from

    def data_version(self) -> str:
        return f"{self.sources}-{self.build.backend}"

    def metadata(self) -> dict:
        b = self.build
        return {
            "backend": b.backend,
            "slow_path_active": b.slow_path,
            "torch": b.torch_version,
            "torch_cuda": b.torch_cuda or "none (CPU build)",
            "toolkit": b.toolkit or "not used",
            "arch_list": b.arch_list or "not used",
            "library": b.library or "not built",
            "build_seconds": round(b.seconds, 1),
            "max_abs_err_vs_pytorch": self.max_abs_err if self.max_abs_err is not None else -1.0,
            "notes": "\n".join(b.notes),
        }


def prepare_deform_attn(root: Path, settings: OpBuildSettings | None = None) -> DeformAttn:
    """Build the op (or choose the PyTorch path on CPU); check it in a fresh interpreter."""
    root = Path(root)
    settings = settings or OpBuildSettings()
    python = settings.python
    build = build_deform_attn_op(root / "CutLER", settings,
                                 log_path=root / "logs" / "build_deform_attn.log")
    imports = verify_imports(root / "VNext", root / "CutLER", python=python)
    err = None
    if build.backend == "cuda":
        err = compare_with_pytorch(root / "CutLER", python=python)
    sources = output_version(head_commit(root / "VNext") or "none",
                             head_commit(root / "CutLER") or "none")
    return DeformAttn(build, imports, err, sources)
