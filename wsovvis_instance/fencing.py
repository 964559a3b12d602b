"""Fencing: a run that Dagster has failed never publishes masks or records success afterwards.

On several hosts the process of a run can outlive Dagster's verdict on it: a node's Ray agent
dies, run monitoring fails the run (and `run_retries` starts a retry elsewhere), but the run's
process on that node may go on working. Two fences, both keyed on the run's status in the
shared instance, which only moves forward:

- `RunFence` (in the run's process): checked right before each video's mask folder is swapped
  into place and before the step returns; once the run is no longer STARTED it raises
  `RunFencedError` (not a `WsovvisError`, so the video loop stops instead of going on to the
  next video), and nothing more is published.
- `wsovvis_instance.fenced_storage.FencedPostgresRunStorage` (the instance's run storage): a
  RUN_SUCCESS written for a run that is already FAILURE or CANCELED leaves it so, in one
  conditional UPDATE (atomic in the database). No run goes FAILURE -> SUCCESS.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from dagster import DagsterInstance, DagsterRunStatus

from wsovvis_dagster.gpu.leases import proc_stat, process_alive

# seconds between the background checks of a run's status (0/unset: none); the Ray launcher
# sets it in every run's environment
WATCH_ENV = "WSOVVIS_FENCE_WATCH_SECONDS"
# statuses after which a run's own process may no longer publish
FENCED = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED, DagsterRunStatus.CANCELING)


class RunFencedError(RuntimeError):
    """This run was failed or cancelled by Dagster while its process still ran."""


def ancestor_named(name: str, pid: int | None = None) -> int | None:
    """The nearest ancestor process of `pid` (default: this one) called `name` (Linux)."""
    pid = pid or os.getpid()
    while pid > 1:
        stat = proc_stat(pid)
        if stat is None:
            return None
        comm, fields = stat
        if comm == name and pid != os.getpid():
            return pid
        pid = int(fields[1])
    return None


class RunFence:
    """`fence()` raises `RunFencedError` once run `run_id` is not STARTED any more.

    Callable, so the library (which never imports Dagster) takes it as a plain
    `before_publish` hook. `watch(interval_s)` also checks in the background and SIGKILLs this
    process group when fenced, or when the node's Ray agent (the `raylet` this process descends
    from) has died: Ray fails such a job, and its process, orphaned, must not go on and record
    success (Ray does not stop it: its driver watcher waits for the job's supervisor, which can
    outlive its raylet for many seconds). An orphan thus frees its GPU lease within
    `interval_s`, not at its next video.
    """

    def __init__(self, instance: DagsterInstance, run_id: str) -> None:
        self.instance, self.run_id = instance, run_id
        self._stop = threading.Event()

    def status(self) -> DagsterRunStatus | None:
        run = self.instance.get_run_by_id(self.run_id)
        return run.status if run else None

    def __call__(self) -> None:
        status = self.status()
        if status in FENCED:
            raise RunFencedError(
                f"run {self.run_id} is {status.value} in the instance (failed or cancelled by "
                "Dagster, e.g. its node was lost): this process publishes nothing more; the "
                "run's retry writes these videos")

    def watch(self, interval_s: float) -> None:
        agent = ancestor_named("raylet")
        started = time.time()

        def loop():
            while not self._stop.wait(interval_s):
                try:
                    if agent is not None and not process_alive(agent, started_by=started):
                        raise RunFencedError(f"the node's Ray agent (raylet pid {agent}) died")
                    self()
                except RunFencedError:
                    os.killpg(os.getpgid(0), signal.SIGKILL)
                except Exception:  # storage hiccup: judge again next time
                    continue

        threading.Thread(target=loop, name=f"fence-{self.run_id[:8]}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
