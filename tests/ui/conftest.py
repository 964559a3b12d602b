"""A real Dagster UI for the tests of this folder: `dagster-webserver` + `dagster-daemon`.

That is what `dagster dev` starts, here on a temporary instance (the project's
dagster_home/dagster.yaml, so the queued run coordinator and the `gpu` pool are the real ones)
and on the session's synthetic dataset. The daemon is needed: runs launched from the UI or
GraphQL are queued, and backfills are only ever turned into runs by the daemon.

One server serves the whole session (startup ~5 s); `ui_runs` launches, through GraphQL, what
a user would click: scan the videos, materialise one `mask_pngs` partition (a single run, as
the UI launches one partition) and backfill two more (as the UI launches several).
Logs and screenshots go to test-artifacts/ui/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsovvis_ops.instance import render_instance, wait_for
from wsovvis_ops.pg_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
LOCATION = "definitions"  # workspace.yaml: python_module definitions
REPOSITORY = "__repository__"  # the single Definitions object of the location
ASSET_JOB = "__ASSET_JOB"  # the implicit job that the UI's "Materialize" buttons launch
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 150

LAUNCH_RUN = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message }
  ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on UnauthorizedError { message }
} }"""

LAUNCH_BACKFILL = """
mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename
  ... on LaunchBackfillSuccess { backfillId }
  ... on PythonError { message }
  ... on PartitionSetNotFoundError { message }
  ... on UnauthorizedError { message }
} }"""

PARTITION_STATUS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  partitionKeys
  partitionStats { numMaterialized numPartitions numFailed numMaterializing }
  assetPartitionStatuses { ... on DefaultPartitionStatuses {
    materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions
  } }
} } }"""


@dataclass
class DagsterUI:
    """A running webserver + daemon, with the few GraphQL calls the tests need."""

    url: str
    home: Path
    data_root: Path
    output_root: Path
    logs: dict[str, Path]

    def gql(self, query: str, variables: dict | None = None) -> dict:
        """POST to /graphql; the `data` member, or an AssertionError naming the errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as e:  # GraphQL validation errors come back as 400
            payload = json.loads(e.read() or b"{}")
        if payload.get("errors"):
            messages = [e.get("message") for e in payload["errors"]]
            raise AssertionError(f"GraphQL errors: {messages}")
        return payload["data"]

    def launch_run(self, asset: str, *, partition: str | None = None) -> str:
        """Launch the implicit asset job for `asset` (one partition, as the UI does); run id."""
        params: dict = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "jobName": ASSET_JOB,
                "assetSelection": [{"path": [asset]}],
            },
            "runConfigData": {},
        }
        if partition is not None:
            params["executionMetadata"] = {
                "tags": [{"key": "dagster/partition", "value": partition}]
            }
        result = self.gql(LAUNCH_RUN, {"p": params})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def launch_backfill(self, asset: str, partitions: list[str]) -> str:
        """A partition backfill of `asset` (what the UI launches for several partitions)."""
        params = {"partitionNames": partitions, "assetSelection": [{"path": [asset]}]}
        result = self.gql(LAUNCH_BACKFILL, {"p": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def run(self, run_id: str) -> dict:
        return self.gql(
            """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
                 runId status tags { key value } assetSelection { path } } } }""",
            {"id": run_id},
        )["runOrError"]

    def run_errors(self, run_id: str) -> list[str]:
        """Error messages of a run's failed steps, for assertion messages."""
        data = self.gql(
            """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
                 __typename ... on ExecutionStepFailureEvent { stepKey error { message } }
                 ... on RunFailureEvent { message } } } } }""",
            {"id": run_id},
        )
        events = data["logsForRun"].get("events", [])
        return [
            (e.get("error") or {}).get("message") or e.get("message", "")
            for e in events
            if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
        ]

    def wait_run(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> str:
        """Wait until the run is SUCCESS, FAILURE or CANCELED; its status."""
        def finished() -> str | None:
            status = self.run(run_id)["status"]
            return status if status in TERMINAL else None

        return self.wait_for(finished, timeout, f"run {run_id} to finish")

    def partition_status(self, asset: str) -> dict:
        return self.gql(PARTITION_STATUS, {"key": {"path": [asset]}})["assetNodeOrError"]

    def wait_for(self, probe: Callable[[], object], timeout: float, what: str):
        """Poll `probe` until it returns something truthy; that value."""
        return wait_for(probe, timeout=timeout, what=what)


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Start `cmd` in the repo root, in its own process group (so that it can be ended whole)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    """End `proc` and its process group (code servers, run workers): TERM, then KILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    try:  # children the leader left behind
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the project's .venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@pytest.fixture(scope="session")
def dagster_ui(tmp_path_factory, synthetic_root) -> DagsterUI:
    from dagster import DagsterInstance

    from wsovvis_instance.dagster_private import InstanceRef

    base = tmp_path_factory.mktemp("ui")
    home = base / "dagster_home"
    render_instance(home, gpu_limit=4)
    # the "Join the Dagster community" dialog shows once per instance on localhost
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    # Create the SQLite storages before three processes race to (alembic: "more than one head")
    DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()

    output_root = base / "outputs"
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("WSOVVIS_", "DAGSTER_"))  # the CPU demo settings, nothing inherited
    }
    env.update(
        DAGSTER_HOME=str(home),
        WSOVVIS_DATA_ROOT=str(synthetic_root),
        WSOVVIS_OUTPUT_ROOT=str(output_root),
        WSOVVIS_RUNS_DIR=str(base / "runs"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    logs = {"webserver": ARTIFACTS / "webserver.log", "daemon": ARTIFACTS / "daemon.log"}
    port = free_port()
    procs = [
        _start([_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                "-w", "workspace.yaml"], env, logs["webserver"]),
        _start([_bin("dagster-daemon"), "run", "-w", "workspace.yaml"], env, logs["daemon"]),
    ]
    ui = DagsterUI(f"http://127.0.0.1:{port}", home, synthetic_root, output_root, logs)
    try:
        def location_loaded():
            for name, proc in zip(logs, procs, strict=True):
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited:\n{_tail(logs[name])}")
            try:
                data = ui.gql("""{ workspaceOrError { ... on Workspace { locationEntries {
                    name loadStatus locationOrLoadError { __typename
                    ... on PythonError { message } } } } } }""")
            except (urllib.error.URLError, ConnectionError):
                return None  # not listening yet
            entries = data["workspaceOrError"]["locationEntries"]
            if not entries or entries[0]["loadStatus"] != "LOADED":
                return None
            loaded = entries[0]["locationOrLoadError"]
            assert loaded["__typename"] == "RepositoryLocation", f"code location: {loaded}"
            return True

        ui.wait_for(location_loaded, STARTUP_TIMEOUT_S, "the webserver to load `definitions`")
        yield ui
    finally:
        for proc in procs:
            _stop(proc)


@dataclass
class UiRuns:
    """What `ui_runs` launched: ids and the partition keys involved."""

    keys: list[str]  # every registered partition, in the instance's order
    single_key: str  # materialised by a single run
    single_run: str
    backfill_keys: list[str]  # materialised by a backfill (finishes later)
    backfill_id: str


@pytest.fixture(scope="session")
def ui_runs(dagster_ui) -> UiRuns:
    """Scan the videos, then one single-partition run and one backfill of `mask_pngs`.

    Waits for the scan and the single run only; the backfill needs the daemon's next backfill
    tick (up to 30 s) and is awaited by the test that checks it.
    """
    scan = dagster_ui.launch_run("video_partitions")
    status = dagster_ui.wait_run(scan)
    assert status == "SUCCESS", dagster_ui.run_errors(scan)
    keys = dagster_ui.partition_status("mask_pngs")["partitionKeys"]
    assert len(keys) == 4, keys  # synthetic_root: 2 videos per split
    # launch the backfill first: it waits for a daemon tick while the single run goes ahead
    backfill = dagster_ui.launch_backfill("mask_pngs", keys[2:])
    single = dagster_ui.launch_run("mask_pngs", partition=keys[0])
    status = dagster_ui.wait_run(single)
    assert status == "SUCCESS", dagster_ui.run_errors(single)
    return UiRuns(keys, keys[0], single, keys[2:], backfill)
