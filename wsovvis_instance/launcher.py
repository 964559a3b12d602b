"""`LocalRunLauncher`: Dagster's default launcher, plus a run-worker health check by pid.

Dagster's run monitoring asks the instance's run launcher whether each STARTED run's worker is
alive; the default launcher cannot answer, so a run whose process was SIGKILLed outside a code
server (`dagster asset materialize` in a shell, a crashed machine) stayed STARTED forever with
its `gpu` pool slot claimed. This launcher answers from the processes the run recorded (the
process that started it, and each step process): when none is alive any more, monitoring marks
the run failed, and `free_slots_after_run_end_seconds` later gives its slots back. Any run is
checked, whatever launched it. A run is only judged on the machine that ran it (see
`wsovvis_instance.liveness`); elsewhere it is reported healthy and left alone.
"""

from __future__ import annotations

from dagster import Bool, DagsterRun, DefaultRunLauncher, Field

from wsovvis_instance.dagster_private import CheckRunHealthResult, WorkerStatus
from wsovvis_instance.liveness import run_liveness


class LocalRunLauncher(DefaultRunLauncher):
    """Config: `check_run_pids` (default true). Set it false when runs of this instance execute
    on several machines (shared Postgres): a pid means nothing on another host, and runs
    started from a shell there carry no host for this check to tell them apart."""

    def __init__(self, inst_data=None, check_run_pids: bool = True):
        super().__init__(inst_data=inst_data)
        self._check_run_pids = check_run_pids

    @classmethod
    def config_type(cls):
        return {"check_run_pids": Field(Bool, is_required=False, default_value=True)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, check_run_pids=config_value.get("check_run_pids", True))

    @property
    def check_run_pids(self) -> bool:
        return self._check_run_pids

    @property
    def supports_check_run_worker_health(self) -> bool:
        return self._check_run_pids

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        verdict = run_liveness(self._instance, run)
        if verdict.state == "dead":
            return CheckRunHealthResult(WorkerStatus.FAILED, verdict.reason)
        # alive, or not ours to judge: monitoring treats anything but RUNNING/SUCCESS as dead
        return CheckRunHealthResult(WorkerStatus.RUNNING, verdict.reason)
