"""deploy/k8s: the Kubernetes instance config and GPU run tags pass Dagster's own validation.

The core schema (storage: postgres, concurrency, run_queue, run_monitoring, run_retries) is
always checked. The K8sRunLauncher's own config and the `dagster-k8s/config` tag are checked
against dagster-k8s's schemas when it is importable: dagster-k8s/dagster-postgres for dagster
1.13.28 are not on PyPI yet (0.29.27 pins dagster==1.13.27), so they are not in the dev extra.
"""

import json
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config

from assets.sensors import load_gpu_run_tags

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_k8s_instance_config_passes_dagster_validation():
    config, custom_class = dagster_instance_config(str(K8S), "dagster.yaml")
    assert custom_class is None
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert set(config["storage"]) == {"postgres"}  # runs, events and schedules in Postgres


def test_k8s_limits_match_the_local_template():
    local = yaml.safe_load(
        (REPO / "dagster_home" / "dagster.yaml").read_text().replace("@GPU_LIMIT@", "4"))
    k8s = _load(K8S / "dagster.yaml")
    assert k8s["concurrency"]["pools"] == local["concurrency"]["pools"]
    assert (k8s["concurrency"]["runs"]["tag_concurrency_limits"]
            == local["concurrency"]["runs"]["tag_concurrency_limits"])
    assert k8s["run_retries"] == local["run_retries"]
    assert k8s["run_monitoring"]["enabled"]


def test_gpu_run_tags_request_one_gpu_per_run():
    tags = load_gpu_run_tags(str(K8S / "gpu_run_tags.yaml"))
    assert tags["gpu"] == "true"
    assert all(isinstance(v, str) for v in tags.values())  # run tags are strings
    k8s = json.loads(tags["dagster-k8s/config"])
    resources = k8s["container_config"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert load_gpu_run_tags("") == {"gpu": "true"}


def test_k8s_sections_pass_dagster_k8s_validation():
    dagster_k8s = pytest.importorskip("dagster_k8s")
    from dagster_k8s.job import get_user_defined_k8s_config

    launcher = _load(K8S / "dagster.yaml")["run_launcher"]["config"]
    result = validate_config(dagster_k8s.K8sRunLauncher.config_type(), launcher)
    assert result.success, result.errors
    user = get_user_defined_k8s_config(load_gpu_run_tags(str(K8S / "gpu_run_tags.yaml")))
    assert user.container_config["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert user.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}


def test_postgres_storage_section_passes_dagster_postgres_validation():
    dagster_postgres = pytest.importorskip("dagster_postgres")

    pg = _load(K8S / "dagster.yaml")["storage"]["postgres"]
    for storage in (dagster_postgres.PostgresRunStorage, dagster_postgres.PostgresEventLogStorage):
        result = validate_config(storage.config_type(), pg)
        assert result.success, (storage.__name__, result.errors)
