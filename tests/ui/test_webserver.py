"""The running webserver's GraphQL API: the asset graph a user sees, and launching from it."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from PIL import Image

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

SIX_ASSETS = {
    "patched_vnext", "deform_attn_ops", "video_partitions", "mask_pngs", "tube_json",
    "trained_model",
}
EDGES = {  # upstream -> downstream
    ("patched_vnext", "deform_attn_ops"),
    ("deform_attn_ops", "mask_pngs"),
    ("video_partitions", "mask_pngs"),
    ("mask_pngs", "tube_json"),
    ("tube_json", "trained_model"),
}
GRAPH = """{ assetNodes {
  assetKey { path } groupName description kinds isMaterializable pools
  owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  tags { key value }
  partitionDefinition { type name }
  dependencyKeys { path }
} }"""
LATEST_MATERIALIZATION = """
query($key: AssetKeyInput!, $partition: String!) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations(partitions: [$partition], limit: 1) {
    partition runId tags { key value }
    metadataEntries { __typename label
      ... on IntMetadataEntry { intValue }
      ... on MarkdownMetadataEntry { mdStr }
      ... on PathMetadataEntry { path }
      ... on TextMetadataEntry { text } }
  } } } }"""


def _nodes(dagster_ui) -> dict[str, dict]:
    return {"/".join(n["assetKey"]["path"]): n for n in dagster_ui.gql(GRAPH)["assetNodes"]}


def test_graph_has_the_six_assets_in_one_connected_lineage(dagster_ui):
    nodes = _nodes(dagster_ui)
    assert SIX_ASSETS <= set(nodes), f"missing: {SIX_ASSETS - set(nodes)}"
    edges = {(dep["path"][0], key) for key, n in nodes.items() for dep in n["dependencyKeys"]}
    assert EDGES <= edges, f"missing edges: {EDGES - edges}"

    # one weakly connected component holds all six
    component = {"mask_pngs"}
    grew = True
    while grew:
        reached = {b for a, b in edges if a in component} | {a for a, b in edges if b in component}
        grew = not reached <= component
        component |= reached
    assert SIX_ASSETS <= component

    for key in sorted(SIX_ASSETS):
        n = nodes[key]
        assert n["isMaterializable"], key
        assert (n["description"] or "").strip(), f"{key}: no description"
        assert n["groupName"] and n["groupName"] != "default", f"{key}: no group"
        assert n["kinds"], f"{key}: no kinds"
        assert {"__typename": "TeamAssetOwner", "team": "wsovvis"} in n["owners"], key


def test_mask_pngs_is_partitioned_per_video_and_marked_as_gpu_work(dagster_ui):
    masks = _nodes(dagster_ui)["mask_pngs"]
    assert masks["partitionDefinition"] == {"type": "DYNAMIC", "name": "videos"}
    assert {"key": "gpu", "value": "true"} in masks["tags"]
    assert masks["pools"] == ["gpu"]
    assert {"pytorch", "png"} <= set(masks["kinds"])


def test_single_partition_run_from_graphql_writes_masks_and_a_preview(dagster_ui, ui_runs):
    run = dagster_ui.run(ui_runs.single_run)
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": ui_runs.single_key} in run["tags"]
    assert run["assetSelection"] == [{"path": ["mask_pngs"]}]

    data = dagster_ui.gql(
        LATEST_MATERIALIZATION, {"key": {"path": ["mask_pngs"]}, "partition": ui_runs.single_key}
    )
    (event,) = data["assetOrError"]["assetMaterializations"]
    assert event["runId"] == ui_runs.single_run
    meta = {m["label"]: m for m in event["metadataEntries"]}
    assert meta["frames"]["intValue"] == 8  # synthetic_root: 8 frames per video

    folder = meta["path"]["path"]
    assert folder.startswith(str(dagster_ui.output_root))
    assert len(list(Path(folder).glob("*.png"))) == 8

    md = meta["preview"]
    assert md["__typename"] == "MarkdownMetadataEntry"
    found = re.fullmatch(
        r"!\[[^\]]*\]\(data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)\)", md["mdStr"]
    )
    assert found, md["mdStr"][:80]
    image = Image.open(io.BytesIO(base64.b64decode(found.group(2))))
    assert image.format == found.group(1).upper()
    assert image.width >= 100 and image.height >= 20

    # lineage recorded on the event: the code version that wrote it, the inputs' versions
    tags = {t["key"]: t["value"] for t in event["tags"]}
    assert tags["dagster/code_version"] == _code_version(dagster_ui, "mask_pngs")
    assert "dagster/input_data_version/video_partitions" in tags


def _code_version(dagster_ui, asset: str) -> str:
    data = dagster_ui.gql(
        "query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { ... on AssetNode {"
        " opVersion } } }", {"k": {"path": [asset]}},
    )
    return data["assetNodeOrError"]["opVersion"]


def test_fresh_partition_and_missing_downstream_in_staleness(dagster_ui, ui_runs):
    data = dagster_ui.gql(
        """query($p: String!) {
          m: assetNodeOrError(assetKey: {path: ["mask_pngs"]}) { ... on AssetNode {
            staleStatus(partition: $p) } }
          t: assetNodeOrError(assetKey: {path: ["tube_json"]}) { ... on AssetNode {
            staleStatus } } }""",
        {"p": ui_runs.single_key},
    )
    assert data["m"]["staleStatus"] == "FRESH"
    assert data["t"]["staleStatus"] == "MISSING"


def test_backfill_materialises_its_partitions_and_status_counts_add_up(dagster_ui, ui_runs):
    done = set(ui_runs.backfill_keys) | {ui_runs.single_key}

    def backfill_runs_finished():
        backfill = dagster_ui.gql(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                 ... on PartitionBackfill { status partitionNames runs { runId status } } } }""",
            {"id": ui_runs.backfill_id},
        )["partitionBackfillOrError"]
        runs = backfill["runs"]
        return backfill if runs and all(r["status"] in TERMINAL for r in runs) else None

    # the backfill daemon ticks every 30 s; then the queued run starts and runs (~10 s)
    backfill = dagster_ui.wait_for(backfill_runs_finished, 150, f"backfill {ui_runs.backfill_id}")
    for r in backfill["runs"]:
        assert r["status"] == "SUCCESS", dagster_ui.run_errors(r["runId"])
    assert set(backfill["partitionNames"]) == set(ui_runs.backfill_keys)
    assert backfill["status"] in ("REQUESTED", "COMPLETED_SUCCESS")  # next tick marks it done

    status = dagster_ui.partition_status("mask_pngs")
    parts = status["assetPartitionStatuses"]
    assert parts["failedPartitions"] == []
    assert set(parts["materializedPartitions"]) == done
    assert set(parts["unmaterializedPartitions"]) == set(ui_runs.keys) - done
    assert parts["materializingPartitions"] == []
    assert status["partitionStats"] == {
        "numMaterialized": 3, "numPartitions": 4, "numFailed": 0, "numMaterializing": 0,
    }
