"""GPU runs placed across hosts by Ray, on a real local Ray cluster (marker `multihost`).

One cluster per module (wsovvis_ops.ray_cluster.local_ray_deployment): a Ray head and two
worker nodes with 2 fake GPUs each, a throw-away PostgreSQL shared by every process, a
dagster-daemon whose run launcher is `WsovvisRayRunLauncher`. The predictor is the `cpu-slow`
test backend (the cpu predictor's output after a fixed hold per video, never touching CUDA),
so each run holds its Ray GPU for a known time and its PNGs equal the cpu backend's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from mask_maps import assert_identical_to_reference
from wsovvis_dagster.gpu.leases import process_alive
from wsovvis_dagster.paths import VideoRef, masks_dir
from wsovvis_instance.dagster_private import PARENT_RUN_ID_TAG
from wsovvis_ops.backfill import launch_backfill
from wsovvis_ops.instance import start_daemon, stop_daemon, wait_for
from wsovvis_ops.ray_cluster import run_holding_a_gpu

pytestmark = pytest.mark.multihost

REPO = Path(__file__).resolve().parents[2]
MASKS = AssetKey("mask_pngs")
HOLD, NODES, GPUS_PER_NODE = 2.0, ("node1", "node2"), 2
ACTIVE = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)


@pytest.fixture(scope="module")
def ray_site(tmp_path_factory):
    """(deployment, instance, data root, output root, next free video index)."""
    from wsovvis_dagster.video.synthetic import generate_dataset
    from wsovvis_ops.ray_cluster import local_ray_deployment

    root = tmp_path_factory.mktemp("multihost")
    data, out = root / "data", root / "out"
    generate_dataset(data, seed=3, num_frames=4, videos_per_split={"train": 21})
    # monitoring every 2 s (production template: 10 s) keeps the lost-node case short
    with local_ray_deployment(root, nodes=len(NODES), gpus_per_node=GPUS_PER_NODE,
                              monitor_seconds=2) as site:
        env = {**os.environ, "DAGSTER_HOME": str(site.home), "WSOVVIS_DATA_ROOT": str(data),
               "WSOVVIS_OUTPUT_ROOT": str(out), "WSOVVIS_PREDICTOR": "cpu-slow",
               "WSOVVIS_HOLD_SECONDS": str(HOLD), "WSOVVIS_VIDEOS_PER_RUN": "2",
               "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with DagsterInstance.from_config(str(site.home)) as instance:
            instance.add_dynamic_partitions("videos", [f"train__train{i:04d}" for i in range(21)])
            daemon = start_daemon(env, root / "daemon.log")
            try:
                yield {"site": site, "instance": instance, "data": data, "out": out}
            finally:
                stop_daemon(daemon)


def _mask_runs(instance, backfill_id: str):
    return [r for r in instance.get_runs() if r.tags.get("dagster/backfill") == backfill_id]


def _finish(instance, backfill_id: str, keys: list[str], *, sample=None, timeout=300.0):
    """Wait until every video of the backfill is materialised and all its runs ended."""
    deadline = time.monotonic() + timeout
    while True:
        runs = _mask_runs(instance, backfill_id)
        if sample is not None:
            sample(runs)
        done = set(keys) <= instance.get_materialized_partitions(MASKS)
        if done and runs and all(r.is_finished for r in runs):
            return runs
        assert time.monotonic() < deadline, [(r.run_id[:8], r.status.value) for r in runs]
        time.sleep(0.5)


def _placement(instance, keys: list[str]) -> dict[str, list[tuple[str, str]]]:
    """video -> [(node, physical GPU)] of every materialisation recorded for it."""
    placed: dict[str, list] = {k: [] for k in keys}
    for record in instance.fetch_materializations(MASKS, limit=1000).records:
        mat = record.asset_materialization
        if mat.partition in placed:
            placed[mat.partition].append((mat.metadata["node"].value,
                                          mat.metadata["physical_gpu"].value))
    return placed


def _assert_identical_to_one_host(data: Path, out: Path, ref_root: Path, keys) -> None:
    assert_identical_to_reference(data, out, ref_root, keys)
    for key in keys:  # and no half-published or replaced folder left beside them
        parent = masks_dir(out, VideoRef.from_partition_key(key)).parent
        leftovers = [p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]
        assert not leftovers, leftovers


def _never_failure_then_success(instance, runs) -> None:
    for run in runs:
        kinds = [r.event_log_entry.dagster_event.event_type for r in instance.get_records_for_run(
            run.run_id, of_type={DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS}
        ).records]
        if DagsterEventType.RUN_FAILURE in kinds:
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE, kinds


def test_backfill_fills_the_cluster_gpu_slots_and_uses_both_nodes(ray_site):
    instance, site = ray_site["instance"], ray_site["site"]
    assert site.gpu_slots == len(NODES) * GPUS_PER_NODE == 4
    keys = [f"train__train{i:04d}" for i in range(12)]  # 6 runs of 2 videos, 4 at a time
    backfill_id = launch_backfill(instance, keys, assets=["mask_pngs"])
    samples: list[tuple[int, int]] = []

    def sample(runs):
        samples.append((sum(r.status in ACTIVE for r in runs),
                        sum(r.status == DagsterRunStatus.QUEUED for r in runs)))

    runs = _finish(instance, backfill_id, keys, sample=sample)
    assert len(runs) == 6 and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    assert all(r.tags.get("gpu") == "true" for r in runs)
    # GPU runs at once never above the cluster's GPU slots; the slots were filled, the
    # surplus waited QUEUED in Dagster
    assert max(a for a, _ in samples) == site.gpu_slots, samples
    assert any(a == site.gpu_slots and q >= 1 for a, q in samples), samples
    placed = _placement(instance, keys)
    assert all(len(p) == 1 for p in placed.values()), placed  # each video written once
    assert {node for p in placed.values() for node, _ in p} == set(NODES), placed
    assert {gpu for p in placed.values() for _, gpu in p} == {"0", "1"}
    _assert_identical_to_one_host(ray_site["data"], ray_site["out"],
                                  ray_site["out"].parent / "ref_a", keys[:2])


def test_killed_raylet_fails_the_run_and_its_retry_finishes_elsewhere(ray_site):
    instance, site = ray_site["instance"], ray_site["site"]
    keys = [f"train__train{i:04d}" for i in range(12, 16)]  # 2 runs of 2 videos
    backfill_id = launch_backfill(instance, keys, assets=["mask_pngs"])
    # a run inside its first video (most of its work still ahead), on some node
    node, holder = wait_for(
        lambda: run_holding_a_gpu(site.home / "gpu_slots", NODES, "0,1", min_age_s=0.25 * HOLD),
        timeout=180, poll=0.2, what="a run holding a Ray GPU")
    run_id = holder["run_id"]
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
    site.cluster.nodes[node].kill_raylet()
    killed_at = time.time()
    wait_for(lambda: instance.get_run_by_id(run_id).is_finished, timeout=90, poll=0.5,
             what="the run on the lost node to end")
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE, [
        (r.event_log_entry.user_message or "")[:300]
        for r in instance.get_records_for_run(run_id).records][-8:]
    failed_after = time.time() - killed_at
    assert failed_after <= 60, failed_after
    # the orphaned run process is gone (Ray's driver watcher, or the fence's own check)
    wait_for(lambda: not process_alive(holder["pid"]), timeout=30, what="the orphan to exit")
    # its pool slot is freed by run monitoring
    wait_for(lambda: not any(s.run_id == run_id for s in instance.event_log_storage
                             .get_concurrency_info("gpu").claimed_slots),
             timeout=30, what="the lost run's pool slot")

    runs = _finish(instance, backfill_id, keys)
    [retry] = [r for r in runs if r.tags.get(PARENT_RUN_ID_TAG) == run_id]
    assert retry.status == DagsterRunStatus.SUCCESS and retry.tags["gpu"] == "true"
    _never_failure_then_success(instance, runs)
    assert not instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    placed = _placement(instance, keys)
    assert all(len(p) == 1 for p in placed.values()), placed  # written once each
    retried = [k for k in keys if k in (retry.tags["dagster/asset_partition_range_start"],
                                         retry.tags["dagster/asset_partition_range_end"])]
    assert retried and all(placed[k][0][0] != node for k in retried), (node, placed)
    _assert_identical_to_one_host(ray_site["data"], ray_site["out"],
                                  ray_site["out"].parent / "ref_b", keys)


def test_backfill_finishes_on_the_remaining_node(ray_site):
    instance, cluster = ray_site["instance"], ray_site["site"].cluster
    alive = [n["name"] for n in cluster.alive_nodes() if n["name"] in NODES]
    keep, removed = alive[-1], [n for n in NODES if n != alive[-1]]
    for name in removed:
        cluster.nodes[name].stop()
    wait_for(lambda: {n["name"] for n in cluster.alive_nodes()} == {"head", keep},
             timeout=60, what=f"only {keep} left")
    keys = [f"train__train{i:04d}" for i in range(16, 20)]
    backfill_id = launch_backfill(instance, keys, assets=["mask_pngs"])
    runs = _finish(instance, backfill_id, keys)
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    placed = _placement(instance, keys)
    assert {node for p in placed.values() for node, _ in p} == {keep}, placed


def test_gpu_run_on_a_cluster_without_gpus_fails_saying_so(ray_site):
    """Last: the remaining GPU node goes too. Ray would keep the run PENDING forever; the
    launcher fails it at launch, naming the cause and the fix."""
    instance, cluster = ray_site["instance"], ray_site["site"].cluster
    for node in cluster.nodes.values():
        node.stop()
    wait_for(lambda: {n["name"] for n in cluster.alive_nodes()} == {"head"}, timeout=60,
             what="only the head left")
    time.sleep(11)  # the launcher's view of the cluster is at most 10 s old
    keys = ["train__train0020"]
    backfill_id = launch_backfill(instance, keys, assets=["mask_pngs"])
    [run] = wait_for(lambda: [r for r in _mask_runs(instance, backfill_id) if r.is_finished],
                     timeout=60, what="the GPU run to be refused")
    assert run.status == DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.RUN_FAILURE).records[0].event_log_entry
    message = failure.dagster_event.message or ""
    assert "no node with a free GPU share" in message and "ray start" in message, message
