"""`wsovvis doctor`: what stands between this environment and a working VideoCutLER.

Each check probes the target interpreter in a subprocess (so the doctor itself stays fast and
torch-free), turns what it sees into `Problem`s, and every Problem carries the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wsovvis_dagster.vnext.cuda import CudaToolkit, build_toolkit, check_cuda_match, find_toolkits

# Checks are pure functions of a `Probe`, so tests build Probes by hand.

_HELP = """Check what stands between this environment and a working VideoCutLER backend.

Probes the interpreter (--python) in a subprocess: torch and its CUDA build, the CUDA toolkit
that would compile the MultiScaleDeformableAttention op (CUDA_HOME / nvcc), the patched VNext
and CutLER checkouts, and the weights file. Prints each problem with its fix; exits 1 when any
problem is an error (the real path would fail), 0 otherwise.
"""


@dataclass(frozen=True)
class Problem:
    """severity: "error" (the real path will fail) or "warning" (works, slower or fragile)."""

    check: str
    severity: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.check}: {self.message}\n    fix: {self.fix}"


@dataclass
class Probe:
    """What the target interpreter reported: `imports` maps module -> error text ('' = ok)."""

    python: str
    imports: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    pil_has_linear: bool = True
    torch_cuda: str | None = None
    cuda_available: bool = False
    toolkit: CudaToolkit | None = None
    toolkits: list[CudaToolkit] = field(default_factory=list)
    op_error: str | None = None  # import error of MultiScaleDeformableAttention, None = ok
    patched_import_error: str | None = None  # from verify_imports, None = ok / not run


_PROBE = r"""
import importlib, json
out = {"imports": {}, "versions": {}}
for name in ("numpy", "PIL.Image", "shapely", "pycocotools._mask", "torch", "torchvision.ops",
             "setuptools", "wheel", "fvcore", "iopath", "omegaconf", "timm", "detectron2"):
    try:
        mod = importlib.import_module(name)
        out["imports"][name] = ""
        base = importlib.import_module(name.split(".")[0])
        out["versions"][name.split(".")[0]] = str(getattr(base, "__version__", "?"))
    except Exception as exc:  # the doctor reports any failure, whatever its type
        out["imports"][name] = f"{type(exc).__name__}: {exc}"
try:
    from PIL import Image
    out["pil_has_linear"] = hasattr(Image, "LINEAR")
except Exception:
    out["pil_has_linear"] = True
try:
    import torch
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
except Exception:
    out["torch_cuda"] = None
    out["cuda_available"] = False
try:
    import torch, MultiScaleDeformableAttention  # noqa
    out["op_error"] = None
except Exception as exc:
    out["op_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def probe(python: str = sys.executable, vnext_root: Path | None = None,
          cutler_root: Path | None = None, cuda_home: str | None = None,
          env: dict | None = None) -> Probe:
    """Probe `python` (subprocess), the CUDA toolkits and, if given, the patched imports."""
    import os

    proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return Probe(python, imports={"python": proc.stderr.strip()[-500:] or "does not run"})
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    env = dict(os.environ if env is None else env)
    p = Probe(python, data["imports"], data["versions"], data["pil_has_linear"],
              data["torch_cuda"], data["cuda_available"], build_toolkit(cuda_home, env),
              find_toolkits(), data["op_error"])
    if vnext_root and cutler_root and Path(vnext_root).is_dir() and Path(cutler_root).is_dir():
        from wsovvis_dagster.errors import ThirdPartyError
        from wsovvis_dagster.vnext.install import verify_imports

        try:
            verify_imports(Path(vnext_root), Path(cutler_root), python=python)
        except ThirdPartyError as exc:
            p.patched_import_error = str(exc)
    return p


# ---------------------------------------------------------------- checks


def check_shapely(p: Probe) -> list[Problem]:
    err = p.imports.get("shapely", "")
    if not err or err.startswith("ModuleNotFoundError"):
        return []  # optional (detectron2 polygons); absent is fine
    return [Problem("shapely/GEOS", "error", f"shapely does not load: {err}",
                    "pip install --force-reinstall --no-cache-dir shapely (its wheels bundle "
                    "GEOS); with a source build, apt-get install libgeos-dev first")]


_NUMPY_ABI = re.compile(r"numpy\.dtype size changed|compiled using NumPy|_ARRAY_API|"
                        r"numpy.core.multiarray failed", re.I)


def check_pycocotools(p: Probe) -> list[Problem]:
    err = p.imports.get("pycocotools._mask", "")
    if not err:
        return []
    if _NUMPY_ABI.search(err):
        return [Problem("NumPy before pycocotools", "error",
                        f"pycocotools was built against another NumPy: {err}",
                        "install NumPy first, then pip install --force-reinstall --no-cache-dir "
                        "--no-binary pycocotools pycocotools (or a wheel built for this NumPy)")]
    return [Problem("pycocotools", "error", f"pycocotools does not import: {err}",
                    "pip install -e .[videocutler]")]


def check_build_env(p: Probe) -> list[Problem]:
    out = []
    if p.imports.get("torch"):
        out.append(Problem("torch for editable builds", "error",
                           f"torch does not import in {p.python}: {p.imports['torch']}",
                           "pip install -e .[videocutler] in this environment: detectron2's "
                           "setup.py imports torch while it builds"))
    missing = [m for m in ("setuptools", "wheel") if p.imports.get(m)]
    if missing:
        out.append(Problem("torch for editable builds", "error",
                           f"{', '.join(missing)} missing: builds without isolation need them",
                           f"pip install {' '.join(missing)}; then build VNext with "
                           "--no-build-isolation (patched_vnext does), never with isolation: "
                           "an isolated build cannot see torch"))
    if not p.imports.get("torch") and p.imports.get("torchvision.ops"):
        out.append(Problem("torchvision", "error",
                           f"torchvision ops do not load: {p.imports['torchvision.ops']}",
                           "install the torchvision built for this torch (same release line, "
                           "same CUDA/CPU flavour); PyPI's torchvision is a CUDA build and "
                           "fails beside a +cpu torch"))
    for mod in ("fvcore", "iopath", "omegaconf", "timm"):
        if p.imports.get(mod):
            out.append(Problem("dependencies", "error", f"{mod} does not import: {p.imports[mod]}",
                               "pip install -e .[videocutler]"))
    return out


def check_vnext_sources(p: Probe, vnext_root: Path | None) -> list[Problem]:
    """Unpatched upstream text that breaks with this environment's Pillow / NumPy."""
    if vnext_root is None or not Path(vnext_root).is_dir():
        return [Problem("VNext checkout", "error", f"no VNext checkout at {vnext_root}",
                        "materialise patched_vnext (dagster asset materialize --select "
                        "patched_vnext)")]
    out = []
    transform = Path(vnext_root) / "detectron2/data/transforms/transform.py"
    if not p.pil_has_linear and transform.exists() and "Image.LINEAR" in transform.read_text():
        out.append(Problem("Pillow LINEAR", "error",
                           f"{transform} uses Image.LINEAR, removed in Pillow 10 (installed: "
                           f"{p.versions.get('PIL', '?')})",
                           "materialise patched_vnext (the patch uses Image.BILINEAR)"))
    alias = re.compile(r"\bnp\.(bool|int|float|object|str)\b(?![\w.])")
    hits = [f for f in sorted((Path(vnext_root) / "detectron2").glob("**/*.py"))
            if alias.search(f.read_text(encoding="utf-8", errors="replace"))]
    if hits:
        out.append(Problem("NumPy aliases", "error",
                           f"{len(hits)} files use np.bool/np.int/... removed in NumPy 1.24 "
                           f"(first: {hits[0]})", "materialise patched_vnext"))
    return out


def check_cuda(p: Probe) -> list[Problem]:
    if not p.cuda_available and p.toolkit is None:
        return []  # a CPU machine: the PyTorch path, nothing to build
    check = check_cuda_match(p.torch_cuda, p.versions.get("torch", "?"), p.toolkit, p.toolkits)
    if check.severity == "ok":
        return []
    if p.torch_cuda is None and not p.cuda_available:
        return []  # CPU torch beside an unused toolkit
    return [Problem("CUDA toolkit vs torch", check.severity, check.message,
                    "set CUDA_HOME as above (or the deform_attn_ops config's cuda_home) and "
                    "materialise deform_attn_ops again")]


def check_weights(weights: str | None) -> list[Problem]:
    from wsovvis_dagster.predictors.videocutler import WEIGHTS_HELP

    if not weights:
        return [Problem("weights", "error", "no VideoCutLER weights configured", WEIGHTS_HELP)]
    path = Path(weights)
    if not path.is_file():
        return [Problem("weights", "error", f"{path} does not exist", WEIGHTS_HELP)]
    if path.stat().st_size < 1_000_000:
        return [Problem("weights", "error", f"{path} is only {path.stat().st_size} bytes: not a "
                        "checkpoint (an HTML error page?)", WEIGHTS_HELP)]
    return []


def check_patched_imports(p: Probe) -> list[Problem]:
    if not p.patched_import_error:
        return []
    lines = p.patched_import_error.splitlines()
    cause = next((ln for ln in reversed(lines) if re.match(r"^[\w.]+(Error|Exception)\b", ln)),
                 lines[0])
    return [Problem("patched imports", "error", f"import fails in a fresh interpreter: {cause}",
                    "materialise patched_vnext; the asset check shows the full traceback")]


def check_op(p: Probe) -> list[Problem]:
    if p.op_error is None:
        return []
    if p.cuda_available:
        return [Problem("MultiScaleDeformableAttention", "error",
                        f"the CUDA op does not import ({p.op_error}) on a GPU machine",
                        "materialise deform_attn_ops (or set deform_attn='pytorch' to run the "
                        "slow path on purpose)")]
    return [Problem("MultiScaleDeformableAttention", "warning",
                    "no compiled op: VideoCutLER runs the PyTorch implementation (slow path)",
                    "fine on CPU; on a GPU machine materialise deform_attn_ops")]


def run_doctor(vnext_root: Path | None = Path("third_party/VNext"),
               cutler_root: Path | None = Path("third_party/CutLER"),
               weights: str | None = None, *, python: str = sys.executable,
               cuda_home: str | None = None, probed: Probe | None = None) -> list[Problem]:
    """Every problem found, errors first. `probed` replaces the subprocess probe (tests)."""
    p = probed or probe(python, vnext_root, cutler_root, cuda_home)
    if "python" in p.imports:
        return [Problem("python", "error", f"{python} does not run: {p.imports['python']}",
                        "point --python at the project's interpreter")]
    problems = (check_shapely(p) + check_pycocotools(p) + check_build_env(p)
                + check_vnext_sources(p, vnext_root) + check_cuda(p) + check_weights(weights)
                + check_patched_imports(p) + check_op(p))
    return sorted(problems, key=lambda x: x.severity != "error")


def add_doctor_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`wsovvis doctor`'s arguments (also usable on a subcommand parser)."""
    ap.description = _HELP
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.add_argument("--vnext-root", default="third_party/VNext", help="VNext checkout")
    ap.add_argument("--cutler-root", default="third_party/CutLER", help="CutLER checkout")
    ap.add_argument("--weights", default=os.environ.get("WSOVVIS_VIDEOCUTLER_WEIGHTS"),
                    help="videocutler_m2f_rn50.pth to check (env WSOVVIS_VIDEOCUTLER_WEIGHTS)")
    ap.add_argument("--python", default=sys.executable, help="interpreter to check")
    ap.add_argument("--cuda-home", default=None,
                    help="CUDA toolkit to check against torch's CUDA (default: CUDA_HOME, nvcc)")
    return ap


def run_doctor_cli(args: argparse.Namespace) -> int:
    """Print every problem with its fix; exit status 1 when any is an error."""
    problems = run_doctor(Path(args.vnext_root), Path(args.cutler_root), args.weights,
                          python=args.python, cuda_home=args.cuda_home)
    errors = sum(p.severity == "error" for p in problems)
    lines = [str(p) for p in problems]
    lines.append(f"{errors} error(s), {len(problems) - errors} warning(s)" if problems
                 else "no problems found")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if errors else 0


def cli_doctor(argv: list[str] | None = None) -> int:
    """`wsovvis doctor [--vnext-root ...] [--cutler-root ...] [--weights ...]`: 1 on errors."""
    parser = add_doctor_arguments(argparse.ArgumentParser(prog="wsovvis doctor"))
    return run_doctor_cli(parser.parse_args(argv))
