"""The event store of an incremental data set: its events period by period, and which periods the data gate accepted.

One folder per data set (its key made filesystem-safe) under ``Settings.resolved_events_uri``, one folder per period::

    <events_uri>/<data set>/period=000003/events.parquet   canonical interactions, user ids pseudonymised
                                         /partition.json   PeriodPartition: label, counts, fingerprint, accepted
                                         /_SUCCESS

Ingest appends a period, the validate stage accepts it when it passes the gate, and a run's history is the events of
every accepted period. A period folder is published in one step (``RunDir.writing_folder``): a killed ingest leaves
no half period, and readers list complete period folders only. Appending is idempotent by label: the same label with
the same fingerprint adds nothing; another fingerprint replaces a period the gate has not accepted (a fixed source)
and is refused for an accepted one (the source rewrote a period the models already learnt from). One ingest per data
set runs at a time (the DAG allows one active run).
"""

from __future__ import annotations

import posixpath
import re
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from recsys_tasks.constants import ITEM_COL, TIME_COL, USER_COL
from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA
from recsys_tasks.errors import ConfigError, InputDataError
from recsys_tasks.storage import RunDir, run_key

EVENTS_FILE = "events.parquet"
PARTITION_FILE = "partition.json"
_PERIOD_FOLDER = re.compile(r"period=(\d{6})")


def _folder(period: int) -> str:
    return f"period={period:06d}"


class PeriodPartition(BaseModel):
    """One period of a data set as the store holds it."""

    period: int = Field(ge=0, description="Index in the store: 0 for the first period appended, then 1, 2, ...")
    label: str = Field(description="The period's name in its source: a file name or an ISO data interval.")
    rows: int
    users: int
    items: int
    first_timestamp: int | None
    last_timestamp: int | None
    fingerprint: str = Field(description="Digest of the period's source content: a changed source changes it.")
    ingested_at: datetime
    accepted: bool = Field(False, description="Whether the data gate passed it: only accepted periods are history.")
    accepted_at: datetime | None = None


class EventStore:
    """The periods of one data set under ``root_uri``."""

    def __init__(self, root_uri: str, dataset_key: str):
        self.dataset_key = dataset_key
        self.folder = RunDir(f"{root_uri.rstrip('/')}/{run_key(dataset_key)}")

    def partitions(self) -> list[PeriodPartition]:
        """The complete periods, in period order (folders of killed writes are not listed)."""
        names = [posixpath.basename(path) for path in self.folder.fs.glob(self.folder.path("period=*"))]
        complete = sorted(
            name for name in names if _PERIOD_FOLDER.fullmatch(name) and self.folder.folder_is_complete(name)
        )
        return [
            PeriodPartition.model_validate_json(self.folder.fs.read_text(self.folder.path(f"{name}/{PARTITION_FILE}")))
            for name in complete
        ]

    def next_period(self) -> int:
        return max((partition.period for partition in self.partitions()), default=-1) + 1

    def append(self, label: str, events: pa.Table, fingerprint: str) -> tuple[PeriodPartition, bool]:
        """Publish ``events`` as the period ``label``; return it and whether anything was added."""
        present = next((partition for partition in self.partitions() if partition.label == label), None)
        if present is not None and present.fingerprint == fingerprint:
            return present, False
        if present is not None and present.accepted:
            raise ConfigError(
                f"{label} of {self.dataset_key} changed since it was ingested and accepted as period {present.period}:"
                " the source rewrote a period already ingested; restore it, or ingest the changed source as another"
                " data set"
            )
        if events.num_rows == 0:
            raise ValueError(f"{label}: an empty period is not appended")
        partition = PeriodPartition(
            period=present.period if present is not None else self.next_period(),
            label=label,
            rows=events.num_rows,
            users=pc.count_distinct(events[USER_COL]).as_py(),
            items=pc.count_distinct(events[ITEM_COL]).as_py(),
            first_timestamp=pc.min(events[TIME_COL]).as_py(),
            last_timestamp=pc.max(events[TIME_COL]).as_py(),
            fingerprint=fingerprint,
            ingested_at=datetime.now(UTC),
        )
        with self.folder.writing_folder(_folder(partition.period)) as staging:
            canonical = events.select(INTERACTIONS_SCHEMA.names).cast(INTERACTIONS_SCHEMA)
            pq.write_table(canonical, staging / EVENTS_FILE, compression="zstd")
            (staging / PARTITION_FILE).write_text(partition.model_dump_json(indent=2))
        return partition, True

    def accept(self, period: int) -> PeriodPartition:
        """Mark ``period`` accepted by the data gate (once: accepting it again changes nothing)."""
        partition = self._partition(period)
        if partition.accepted:
            return partition
        accepted = partition.model_copy(update={"accepted": True, "accepted_at": datetime.now(UTC)})
        # One small file replaced in one step: the period's events stay as they were published.
        self.folder.write_bytes(f"{_folder(period)}/{PARTITION_FILE}", accepted.model_dump_json(indent=2).encode())
        return accepted

    def events(self, period: int) -> pa.Table:
        """The events of one period."""
        if not self.folder.folder_is_complete(_folder(period)):
            raise InputDataError(f"period {period} of {self.dataset_key} is not in the event store {self.folder.uri}")
        with self.folder.fs.open(self.folder.path(f"{_folder(period)}/{EVENTS_FILE}"), "rb") as fh:
            return pq.read_table(fh)

    def read(self, accepted_only: bool = True, include: int | None = None) -> pa.Table:
        """The events of every accepted period (every period, without ``accepted_only``) plus ``include``, in order."""
        periods = [
            partition.period
            for partition in self.partitions()
            if partition.accepted or not accepted_only or partition.period == include
        ]
        if include is not None and include not in periods:
            raise InputDataError(f"period {include} of {self.dataset_key} is not in the event store {self.folder.uri}")
        return pa.concat_tables([self.events(period) for period in periods] or [INTERACTIONS_SCHEMA.empty_table()])

    def watermark(self) -> int | None:
        """The last timestamp of the accepted events, or None before the first accepted period."""
        return max(
            (p.last_timestamp for p in self.partitions() if p.accepted and p.last_timestamp is not None), default=None
        )

    def _partition(self, period: int) -> PeriodPartition:
        partition = next((partition for partition in self.partitions() if partition.period == period), None)
        if partition is None:
            raise InputDataError(f"period {period} of {self.dataset_key} is not in the event store {self.folder.uri}")
        return partition
