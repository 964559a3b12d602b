"""The code location loads, has the six assets with the designed edges, and keeps layering."""

import ast
from pathlib import Path

from dagster import AssetKey

REPO = Path(__file__).resolve().parents[1]


def test_six_assets_with_designed_edges():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"patched_vnext", "deform_attn_ops", "video_partitions", "mask_pngs", "tube_json",
            "trained_model"} <= keys
    parents = {k: {p.to_user_string() for p in graph.get(AssetKey(k)).parent_keys} for k in keys}
    assert "patched_vnext" in parents["deform_attn_ops"]
    assert {"video_partitions", "deform_attn_ops"} <= parents["mask_pngs"]
    assert "mask_pngs" in parents["tube_json"]
    assert "tube_json" in parents["trained_model"]
    assert graph.get(AssetKey("mask_pngs")).partitions_def.name == "videos"


def test_every_resource_and_job_resolves():
    from definitions import defs

    defs.resolve_implicit_global_asset_job_def()
    assert defs.resolve_job_def("mask_pngs_job").tags.get("gpu") == "true"


# what the library must never import: Dagster, and every layer built on top of the library
ABOVE_LIBRARY = {"dagster", "assets", "resources", "definitions", "wsovvis_ops", "scripts",
                 "benchmarks", "tests", "wsovvis_instance"}


def imported_names(path: Path) -> list[tuple[int, str]]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append((node.lineno, node.module))
    return names


def test_library_never_imports_dagster():
    """The plain library stays usable without Dagster: the layers above (code location, scripts,
    benchmarks, tests) import it, never the reverse."""
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in (REPO / "wsovvis_dagster").rglob("*.py")
        for line, name in imported_names(path)
        if name.split(".")[0] in ABOVE_LIBRARY
        or name.startswith("dagster_")  # dagster_webserver, dagster_graphql, ...
    ]
    assert not offenders, offenders


def test_instance_plugins_never_import_the_code_location():
    """wsovvis_instance (named by dagster.yaml, loaded by every Dagster process) builds on the
    library and Dagster only: the code location is not importable from the daemon's cwd."""
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in (REPO / "wsovvis_instance").rglob("*.py")
        for line, name in imported_names(path)
        if name.split(".")[0] in {"assets", "resources", "definitions"}
    ]
    assert not offenders, offenders


def library_import_graph() -> dict[str, set[str]]:
    """`wsovvis_dagster` module -> the `wsovvis_dagster` modules it imports, anywhere in it.

    `from pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`.
    """
    root = REPO / "wsovvis_dagster"
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in names else base
                           for a in node.names)
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def test_library_has_no_import_cycle():
    """No `wsovvis_dagster` module imports one that (through others) imports it back, not even
    from inside a function: code two modules share gets its own module (as
    `predictors.settings` did for `factory` <-> `videocutler`)."""
    import graphlib

    graph = library_import_graph()
    assert "wsovvis_dagster.ytvis.tubes" in graph["wsovvis_dagster.ytvis.split"]  # sanity
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


# The library's folders in pipeline order (README "Layout"): a module imports its own folder,
# earlier folders and the base modules (`paths`, `atomic`, `errors`, `results_file`: the one
# writer of measurement files), never a later folder.
# `gpu` is the runtime of the mask and training runs (it starts `masks` loops in the predictor
# worker; `training` leases through it); `cli` and `doctor` are entry points over everything.
BASE_MODULES = ("paths", "atomic", "errors", "results_file")
STAGE_ORDER = ("vnext", "video", "predictors", "masks", "gpu", "ytvis", "evaluation", "training")
ENTRY_MODULES = ("cli", "doctor")


def _stage_rank(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    if part in BASE_MODULES or not part:
        return -1
    if part in ENTRY_MODULES:
        return len(STAGE_ORDER)
    return STAGE_ORDER.index(part)


def test_library_folders_only_import_earlier_stages():
    """The folders read as the pipeline (frames in, predictors, masks, tubes, scores, training):
    no module imports a later stage, so a stage can be read and tested without those after it."""
    graph = library_import_graph()
    top = {p.stem if p.is_file() else p.name for p in (REPO / "wsovvis_dagster").iterdir()
           if p.name != "__pycache__" and p.name != "__init__.py"
           and (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert top == set(BASE_MODULES) | set(STAGE_ORDER) | set(ENTRY_MODULES), (
        "a new top-level module or folder: place it in BASE_MODULES, STAGE_ORDER or "
        f"ENTRY_MODULES ({sorted(top)})")
    upward = [f"{src} imports {dst}" for src, targets in graph.items() for dst in targets
              if _stage_rank(dst) > _stage_rank(src)]
    assert not upward, upward


# support layers that build on the library, the code location and `wsovvis_ops/`, never on
# each other
SUPPORT_LAYERS = ("benchmarks", "scripts", "tests")


def test_support_layers_never_import_each_other():
    """benchmarks/, scripts/ and tests/ share helpers through `wsovvis_ops/` (tests may *run* a
    script in a subprocess); `wsovvis_ops/` itself imports none of them. Bare sibling names
    count too (a benchmark run as a script imports `gpu_common`, so a test importing
    `orchestration` would)."""
    modules = {layer: {layer} | {p.stem for p in (REPO / layer).rglob("*.py")}
               for layer in SUPPORT_LAYERS}
    offenders = []
    for layer in (*SUPPORT_LAYERS, "wsovvis_ops"):
        banned = set().union(*(m for other, m in modules.items() if other != layer))
        banned -= {"conftest", "__init__"}
        for path in (REPO / layer).rglob("*.py"):
            for lineno, name in imported_names(path):
                if name.split(".")[0] in banned:
                    offenders.append(f"{path.relative_to(REPO)}:{lineno} imports {name}")
    assert not offenders, offenders


def test_private_dagster_names_only_through_the_wrapper():
    """`dagster._...` is imported in wsovvis_instance/dagster_private.py alone (outside tests,
    which may probe Dagster internals): a Dagster upgrade that moves one breaks one module."""
    wrapper = REPO / "wsovvis_instance" / "dagster_private.py"
    assert any(n.startswith("dagster._") for _, n in imported_names(wrapper))  # sanity
    offenders = []
    for layer in ("assets", "resources", "wsovvis_instance", "wsovvis_ops", "scripts",
                  "benchmarks"):
        for path in (REPO / layer).rglob("*.py"):
            if path == wrapper:
                continue
            offenders += [f"{path.relative_to(REPO)}:{lineno} imports {name}"
                          for lineno, name in imported_names(path) if name.startswith("dagster._")]
    offenders += [f"definitions.py:{n} imports {m}"
                  for n, m in imported_names(REPO / "definitions.py") if m.startswith("dagster._")]
    assert not offenders, offenders


def test_loading_the_code_location_imports_no_model_or_solver_packages():
    """Every run worker (and step process) imports definitions.py before its first step: the
    libraries only a prediction or a stitch needs stay out of that start-up."""
    import subprocess
    import sys

    heavy = ("torch", "scipy", "skimage", "detectron2")
    probe = ("import sys, definitions; "
             f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"imported at load: {out.stdout.strip()}"
