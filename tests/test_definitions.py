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


def test_library_never_imports_dagster():
    """The plain library stays usable without Dagster: assets import it, never the reverse."""
    offenders = []
    for path in (REPO / "wsovvis_dagster").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in {
                "dagster", "assets", "resources", "wsovvis_instance"}]
            if bad:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {bad}")
    assert not offenders, offenders


def test_instance_plugins_never_import_the_code_location():
    """wsovvis_instance (named by dagster.yaml, loaded by every Dagster process) builds on the
    library and Dagster only: the code location is not importable from the daemon's cwd."""
    offenders = []
    for path in (REPO / "wsovvis_instance").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in {"assets", "resources", "definitions"}]
            if bad:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {bad}")
    assert not offenders, offenders
