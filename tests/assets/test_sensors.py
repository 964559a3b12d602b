"""new_video_folders, ticked by Dagster's own sensor-daemon code against a real instance."""

import logging
import shutil
import textwrap
import time
from pathlib import Path

import pytest
from dagster import DefaultSensorStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.sensor import execute_sensor_iteration

from assets.sensors import build_new_video_folders_sensor, contiguous_chunks
from assets.videos import recorded_frame_versions

REPO = Path(__file__).resolve().parents[2]
LOCATION = "sensor_test"


def test_contiguous_chunks():
    order = list("abcdefgh")
    assert contiguous_chunks(order, set("abcdeg"), 2) == [["a", "b"], ["c", "d"], ["e"], ["g"]]
    assert contiguous_chunks(order, set(), 4) == []
    assert contiguous_chunks(order, set("h"), 4) == [["h"]]


def test_sensor_is_stopped_by_default():
    from definitions import defs

    sensor = defs.resolve_sensor_def("new_video_folders")
    assert sensor.default_status == DefaultSensorStatus.STOPPED


@pytest.fixture
def location(tmp_path, synthetic_root):
    """A code location with the real assets and the sensor (batch 2, 1 s interval)."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    module = tmp_path / "sensor_defs.py"
    module.write_text(textwrap.dedent(f"""
        from dagster import Definitions
        from assets import masks, videos
        from assets.sensors import build_new_video_folders_sensor
        from resources import DatasetPaths, PredictorResource

        defs = Definitions(
            assets=[videos.video_frames, videos.video_partitions, masks.mask_pngs],
            sensors=[build_new_video_folders_sensor(
                request_runs=True, batch_size=2, minimum_interval_seconds=1)],
            resources={{
                "paths": DatasetPaths(data_root={str(data)!r}, output_root={str(tmp_path)!r}),
                "predictor": PredictorResource(),
            }},
        )
    """))
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=str(module), attribute="defs",
                             working_directory=str(REPO)),
        location_name=LOCATION,
    )
    return data, InProcessWorkspaceLoadTarget(origin)


def test_new_folder_registered_exactly_once(instance, location):
    data, target = location
    with create_test_daemon_workspace_context(target, instance) as context:
        repo = next(iter(
            context.create_request_context().get_code_location(LOCATION).get_repositories()
            .values()))
        sensor = repo.get_sensor("new_video_folders")
        instance.start_sensor(sensor)
        logger = logging.getLogger("test_sensor")

        def tick():
            time.sleep(1.1)  # the sensor's minimum interval
            list(execute_sensor_iteration(context, logger, None, None))
            ticks = instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id)
            latest = ticks[0]
            assert latest.status in (TickStatus.SUCCESS, TickStatus.SKIPPED), latest.error
            added = [k for r in latest.dynamic_partitions_request_results
                     for k in r.added_partitions or []]
            return latest, added

        # 4 videos on disk, batches of 2: two ticks register them, the third has nothing to do
        t1, added1 = tick()
        t2, added2 = tick()
        t3, added3 = tick()
        assert added1 == ["train__train0000", "train__train0001"]
        assert added2 == ["val__val0000", "val__val0001"]
        assert added3 == [] and t3.status == TickStatus.SKIPPED
        keys = instance.get_dynamic_partitions("videos")
        assert keys == added1 + added2
        assert set(recorded_frame_versions(instance)) == set(keys)  # frames versioned on arrival
        assert len(t1.run_ids) == len(t2.run_ids) == 1

        # a new folder appears: registered once, on the next tick only
        shutil.copytree(data / "train/JPEGImages/train0001", data / "train/JPEGImages/new_clip")
        t4, added4 = tick()
        t5, added5 = tick()
        assert added4 == ["train__new_clip"] and added5 == []
        assert instance.get_dynamic_partitions("videos").count("train__new_clip") == 1
        [run] = [instance.get_run_by_id(r) for r in t4.run_ids]
        assert run.status == DagsterRunStatus.QUEUED  # through the queue, like any GPU run
        assert run.tags["gpu"] == "true"
        assert run.tags[ASSET_PARTITION_RANGE_START_TAG] == "train__new_clip"
        assert run.tags[ASSET_PARTITION_RANGE_END_TAG] == "train__new_clip"

        # changed frames of a registered video: a new observation and a run for it alone
        frame = sorted((data / "val/JPEGImages/val0000").iterdir())[0]
        frame.write_bytes(frame.read_bytes() + b"\0")
        before = recorded_frame_versions(instance)["val__val0000"]
        t6, added6 = tick()
        assert added6 == []
        assert recorded_frame_versions(instance)["val__val0000"] != before
        [run] = [instance.get_run_by_id(r) for r in t6.run_ids]
        assert run.tags[ASSET_PARTITION_RANGE_START_TAG] == "val__val0000"
        assert run.tags[ASSET_PARTITION_RANGE_END_TAG] == "val__val0000"
        t7, _ = tick()
        assert t7.status == TickStatus.SKIPPED
        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.tags.get("gpu") == "true" for r in runs)


def test_sensor_factory_without_runs():
    sensor = build_new_video_folders_sensor()
    assert sensor.name == "new_video_folders"
    assert sensor.minimum_interval_seconds == 60
