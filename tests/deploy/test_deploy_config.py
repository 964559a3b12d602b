"""deploy/: the Kubernetes instance, the GPU run tags, the Helm values and the Dockerfile.

Checked with the integrations' own code (the `deploy` extra: dagster-k8s, dagster-postgres,
the release matching dagster 1.13.27): the instance config against Dagster's schema and the
K8sRunLauncher / Postgres storage config classes, and the Job that K8sRunLauncher would create
for a GPU run rendered by dagster-k8s itself. The Helm values and the Dockerfile cannot be
rendered or built here (no helm, docker or cluster): they are parsed and their Dagster parts
validated with the same classes.
"""

import json
from pathlib import Path

import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config

from wsovvis_dagster.gpu.run_tags import load_gpu_run_tags

REPO = Path(__file__).resolve().parents[2]
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
    import dagster_k8s
    from dagster_k8s.job import get_user_defined_k8s_config

    launcher = _load(K8S / "dagster.yaml")["run_launcher"]["config"]
    result = validate_config(dagster_k8s.K8sRunLauncher.config_type(), launcher)
    assert result.success, result.errors
    user = get_user_defined_k8s_config(load_gpu_run_tags(str(K8S / "gpu_run_tags.yaml")))
    assert user.container_config["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert user.pod_spec_config["node_selector"] == {"nvidia.com/gpu.present": "true"}


def test_postgres_storage_section_passes_dagster_postgres_validation():
    import dagster_postgres

    pg = _load(K8S / "dagster.yaml")["storage"]["postgres"]
    for storage in (dagster_postgres.PostgresRunStorage, dagster_postgres.PostgresEventLogStorage):
        result = validate_config(storage.config_type(), pg)
        assert result.success, (storage.__name__, result.errors)


def test_postgres_storage_names_the_psycopg2_driver(monkeypatch):
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which dagster-postgres does not
    install: the URL it builds from our config must name psycopg2."""
    from dagster._config import process_config
    from dagster_postgres import PostgresRunStorage
    from dagster_postgres.utils import pg_url_from_config

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "pw")
    pg = process_config(PostgresRunStorage.config_type(),
                        _load(K8S / "dagster.yaml")["storage"]["postgres"])
    assert pg.success, pg.errors
    assert pg_url_from_config(pg.value).startswith("postgresql+psycopg2://dagster:pw@")
    assert _load(K8S / "values.yaml")["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


class _RecordingBatchApi:
    """Stands in for the cluster: keeps the Job that K8sRunLauncher submits."""

    def __init__(self):
        self.jobs = []

    def create_namespaced_job(self, body, namespace, **_):
        self.jobs.append((namespace, body))


def _render_run_job(tmp_path, tags: dict, image: str):
    """The Kubernetes Job that K8sRunLauncher (our deploy/k8s config) creates for a run."""
    from dagster import instance_for_test
    from dagster._config import process_config
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path / "kubeconfig"  # never contacted: the batch API is recorded
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    config = _load(K8S / "dagster.yaml")["run_launcher"]["config"]
    processed = process_config(K8sRunLauncher.config_type(), {
        **config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})
    assert processed.success, processed.errors
    batch = _RecordingBatchApi()
    launcher = K8sRunLauncher(**processed.value, k8s_client_batch_api=batch)
    origin = JobPythonOrigin("__ASSET_JOB", RepositoryPythonOrigin(
        executable_path="/opt/venv/bin/python", container_image=image,
        code_pointer=ModuleCodePointer("definitions", "defs", "/opt/wsovvis")))
    with instance_for_test() as instance:
        launcher.register_instance(instance)
        run = create_run_for_test(instance, job_name="__ASSET_JOB", tags=tags,
                                  job_code_origin=origin)
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    [(namespace, job)] = batch.jobs
    return namespace, job


def test_gpu_run_pod_rendered_by_dagster_k8s(tmp_path):
    """The run pod of a GPU run (tags from gpu_run_tags.yaml, as our coordinator adds them):
    one GPU requested and limited, on GPU nodes, tolerating their taint, with our image; a run
    without the tags gets no GPU."""
    values = _load(K8S / "values.yaml")
    image_cfg = values["dagster-user-deployments"]["deployments"][0]["image"]
    image = f"{image_cfg['repository']}:{image_cfg['tag']}"
    tags = load_gpu_run_tags(str(K8S / "gpu_run_tags.yaml"))
    namespace, job = _render_run_job(tmp_path, tags, image)
    assert namespace == "wsovvis"
    pod = job.spec.template.spec
    [container] = pod.containers
    assert container.image == image
    # quantities are strings in the pod spec, as Kubernetes takes them
    assert str(container.resources.limits["nvidia.com/gpu"]) == "1"
    assert str(container.resources.requests["nvidia.com/gpu"]) == "1"
    assert container.resources.requests["memory"] == "24Gi"  # the tag's, over the CPU default
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")]
    env = {e.name: e.value for e in container.env}
    assert env["WSOVVIS_GPUS"] == "0" and env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert [m.mount_path for m in container.volume_mounts if m.name == "datasets"] == ["/data"]
    assert container.args[:5] == ["/opt/venv/bin/python", "-m", "dagster", "api", "execute_run"]

    _, cpu_job = _render_run_job(tmp_path, {}, image)
    [cpu] = cpu_job.spec.template.spec.containers
    assert "nvidia.com/gpu" not in (cpu.resources.limits or {})
    assert not cpu_job.spec.template.spec.tolerations


def test_coordinator_config_is_the_same_in_the_instance_and_the_helm_values():
    from dagster._config import process_config

    from wsovvis_instance.coordinator import GpuRunCoordinator

    instance = _load(K8S / "dagster.yaml")["run_coordinator"]
    helm = _load(K8S / "values.yaml")["dagsterDaemon"]["runCoordinator"]
    assert helm["type"] == "CustomRunCoordinator"
    custom = helm["config"]["customRunCoordinator"]
    for section in (instance, custom):
        assert (section["module"], section["class"]) == (
            GpuRunCoordinator.__module__, GpuRunCoordinator.__name__)
        result = process_config(GpuRunCoordinator.config_type(), section["config"])
        assert result.success, result.errors
        assert section["config"]["gpu_run_tags_file"] == "/opt/wsovvis/deploy/k8s/gpu_run_tags.yaml"
    assert custom["config"] == instance["config"]


def test_helm_values_match_the_instance():
    """values.yaml (official chart) states the same limits, launcher and storage as
    deploy/k8s/dagster.yaml, in the chart's camelCase."""
    values, inst = _load(K8S / "values.yaml"), _load(K8S / "dagster.yaml")
    runs = values["concurrency"]["runs"]
    assert values["concurrency"]["enabled"]
    assert values["concurrency"]["pools"]["defaultLimit"] == inst["concurrency"]["pools"][
        "default_limit"]
    assert runs["maxConcurrentRuns"] == inst["concurrency"]["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == inst["concurrency"]["runs"]["tag_concurrency_limits"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = inst["run_launcher"]["config"]
    assert k8s["jobNamespace"] == launcher["job_namespace"]
    assert k8s["resources"] == launcher["resources"]
    assert [m["mountPath"] for m in k8s["volumeMounts"]] == [
        m["mount_path"] for m in launcher["volume_mounts"]]
    monitoring, retries = values["dagsterDaemon"]["runMonitoring"], inst["run_monitoring"]
    assert monitoring["enabled"] and monitoring["pollIntervalSeconds"] == retries[
        "poll_interval_seconds"]
    assert monitoring["freeSlotsAfterRunEndSeconds"] == retries[
        "free_slots_after_run_end_seconds"]
    assert values["dagsterDaemon"]["runRetries"] == {
        "enabled": True, "maxRetries": 1, "retryOnAssetOrOpFailure": False}
    assert values["postgresql"]["postgresqlDatabase"] == inst["storage"]["postgres"][
        "postgres_db"]["db_name"]
    # one image for code, webserver and daemon (they import wsovvis_instance)
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert values["dagsterWebserver"]["image"] == values["dagsterDaemon"]["image"] == deployment[
        "image"]
    assert deployment["dagsterApiGrpcArgs"][:2] == ["-m", "definitions"]
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"  # no public UI


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per Dockerfile instruction, continuation lines joined."""
    text = (REPO / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_builds_the_real_path_through_the_asset_graph():
    steps = _dockerfile()
    [base] = [a for i, a in steps if i == "FROM"]
    assert base.startswith("nvidia/cuda:") and "-devel-" in base  # nvcc for the ops
    runs = [a for i, a in steps if i == "RUN"]
    assert any("pip install" in r and ".[videocutler,deploy]" in r for r in runs)
    [build] = [r for r in runs if "dagster asset materialize" in r]
    assert "patched_vnext,deform_attn_ops" in build and "FORCE_CUDA=1" in build
    assert "deploy/build_ops.yaml" in build
    copied = " ".join(a for i, a in steps if i == "COPY")
    for path in ("wsovvis_dagster/", "wsovvis_instance/", "definitions.py", "assets/",
                 "resources/", "deploy/"):
        assert path in copied, path
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in env
    assert "WSOVVIS_GPU_RUN_TAGS_FILE=/opt/wsovvis/deploy/k8s/gpu_run_tags.yaml" in env
    [cmd] = [a for i, a in steps if i == "CMD"]
    assert json.loads(cmd)[:5] == ["dagster", "api", "grpc", "-m", "definitions"]
    # the torch pin the CUDA base must match (deform_attn_ops checks nvcc against it)
    assert "torch==2.14.1" in (REPO / "pyproject.toml").read_text()


def test_image_build_run_config_is_valid_for_the_assets():
    """deploy/build_ops.yaml, as the Dockerfile fills it in, is valid run config for the
    patched_vnext + deform_attn_ops run (checked with Dagster against the assets' schema)."""
    from dagster import AssetKey, validate_run_config

    from definitions import defs

    text = (REPO / "deploy" / "build_ops.yaml").read_text()
    for arg, value in {"ARCH_LIST": "8.0;9.0", "VNEXT_SOURCE": "https://x/VNext.git",
                       "CUTLER_SOURCE": "https://x/CutLER.git", "MAX_JOBS": "0"}.items():
        text = text.replace(f"@{arg}@", value)
    config = yaml.safe_load(text)
    assert config["ops"]["deform_attn_ops"]["config"]["force_cuda"] is True
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={AssetKey("patched_vnext"), AssetKey("deform_attn_ops")})
    validate_run_config(job, config)
