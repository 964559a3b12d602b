"""`FencedPostgresRunStorage`: PostgreSQL run storage in which no run goes FAILURE -> SUCCESS.

The second fence of `wsovvis_instance.fencing`: a RUN_SUCCESS event written by an orphaned run
process (its node was lost and Dagster failed the run meanwhile) leaves a FAILURE or CANCELED
run as it is. One conditional UPDATE, so it holds whichever process writes first. The event
itself stays in the run's log; the run's status, which the UI, retries and backfills read,
does not move. Needs the `deploy` extra (dagster-postgres).
"""

from __future__ import annotations

import datetime as dt

from dagster import DagsterEventType, DagsterRunStatus, serialize_value
from dagster_postgres import PostgresRunStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from wsovvis_instance.dagster_private import RunsTable
from wsovvis_instance.fencing import FENCED


class FencedPostgresRunStorage(PostgresRunStorage):
    """`PostgresRunStorage` whose RUN_SUCCESS never overwrites FAILURE or CANCELED.

    Config as `PostgresRunStorage` (run_storage: module wsovvis_instance.fencing, class
    FencedPostgresRunStorage, config: postgres_url ...)."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # PostgresRunStorage's own builds a PostgresRunStorage whatever the class named
        return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   token_provider=get_token_provider_from_config(config_value))

    def handle_run_event(self, run_id, event, update_timestamp=None) -> None:
        if event.event_type != DagsterEventType.PIPELINE_SUCCESS:
            return super().handle_run_event(run_id, event, update_timestamp)
        run = self._get_run_by_id(run_id)
        if not run:
            return None
        when = update_timestamp or dt.datetime.now(dt.timezone.utc)
        extra = {"end_time": when.timestamp()} if self.has_run_stats_index_cols() else {}
        with self.connect() as conn:
            conn.execute(
                RunsTable.update()
                .where(RunsTable.c.run_id == run_id)
                .where(RunsTable.c.status.notin_([s.value for s in FENCED]))
                .values(run_body=serialize_value(run.with_status(DagsterRunStatus.SUCCESS)),
                        status=DagsterRunStatus.SUCCESS.value, update_timestamp=when, **extra)
            )
        return None
