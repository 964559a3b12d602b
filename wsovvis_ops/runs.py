"""Runs as an instance recorded them: start/end of each run and step, and its GPU leases."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dagster import DagsterEventType, DagsterInstance


@dataclass(frozen=True)
class RunSpan:
    """One run as the instance recorded it, with its GPU lease(s) read from its logs."""

    run_id: str
    status: str
    start: float | None
    end: float | None
    step_start: float | None
    step_end: float | None
    leases: tuple[tuple[str, float, float | None], ...]  # (device, acquired, released)
    tags: dict


def run_spans(instance: DagsterInstance, run_ids: Iterable[str]) -> list[RunSpan]:
    """Start/end of each run and of its step, and its GPU leases (from the resource's logs)."""
    spans = []
    for record in instance.get_run_records():
        run = record.dagster_run
        if run.run_id not in set(run_ids):
            continue
        step_start = step_end = None
        leases: list[list] = []
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            kind = event.event_type if event else None
            if kind == DagsterEventType.STEP_START and step_start is None:
                step_start = entry.timestamp
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                step_end = entry.timestamp
            msg = entry.user_message or ""
            if msg.startswith("gpu lease acquired: "):
                leases.append([msg.split()[3], entry.timestamp, None])
            elif msg.startswith("gpu lease released: ") and leases:
                leases[-1][2] = entry.timestamp
        spans.append(RunSpan(
            run.run_id, run.status.value, record.start_time, record.end_time, step_start,
            step_end, tuple((d, a, r) for d, a, r in leases), dict(run.tags),
        ))
    return spans


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an interval ending when another starts: no overlap)."""
    spans = list(intervals)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    open_now = most = 0
    for _, delta in events:
        open_now += delta
        most = max(most, open_now)
    return most
