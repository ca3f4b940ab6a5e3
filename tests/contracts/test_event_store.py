"""The event store: periods appended once, published whole, accepted by the gate, read back as one history."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from recsys_tasks.contracts.event_store import EventStore
from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA
from recsys_tasks.errors import ConfigError
from tests.conftest import REPO

DATASET = "periods-/data/shop"
WEEK = 7 * 86_400


def events(period: int, users: int = 4, per_user: int = 3) -> pa.Table:
    """``users`` users with ``per_user`` events each in week ``period`` of 2024."""
    rows = [
        (f"{period}:{user}", user * 10 + step, 1_704_067_200 + period * WEEK + user * 60 + step)
        for user in range(users)
        for step in range(per_user)
    ]
    user_ids, items, times = zip(*rows, strict=True)
    return pa.table(
        {"user_id": user_ids, "item_id": items, "timestamp": times, "rating": [1.0] * len(rows)},
        schema=INTERACTIONS_SCHEMA,
    )


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(str(tmp_path / "events"), DATASET)


def test_an_appended_period_is_listed_with_its_counts_in_its_own_folder(store, tmp_path):
    partition, added = store.append("period_0.txt", events(0), "digest-0")

    assert added and partition.period == 0 and not partition.accepted
    assert (partition.rows, partition.users, partition.items) == (12, 4, 12)
    assert partition.first_timestamp == 1_704_067_200 and partition.last_timestamp == 1_704_067_200 + 3 * 60 + 2
    assert store.partitions() == [partition]
    folder = tmp_path / "events" / "periods-_data_shop" / "period=000000"
    assert sorted(path.name for path in folder.iterdir()) == ["_SUCCESS", "events.parquet", "partition.json"]
    assert store.events(0).equals(events(0))


def test_appending_a_period_again_adds_nothing(store):
    first, _ = store.append("period_0.txt", events(0), "digest-0")

    again, added = store.append("period_0.txt", events(0), "digest-0")

    assert not added and again == first
    assert len(store.partitions()) == 1 and store.read(accepted_only=False).num_rows == 12
    assert store.next_period() == 1


def test_a_changed_period_is_refused_once_accepted_and_replaces_it_before(store):
    store.append("period_0.txt", events(0), "digest-0")
    fixed, added = store.append("period_0.txt", events(0, users=5), "digest-0-fixed")
    assert added and fixed.period == 0 and fixed.rows == 15 and len(store.partitions()) == 1

    store.accept(0)
    with pytest.raises(ConfigError) as raised:
        store.append("period_0.txt", events(0), "digest-0-rewritten")

    message = str(raised.value)
    assert "period_0.txt of periods-/data/shop changed since it was ingested and accepted as period 0" in message
    assert "\n" not in message
    assert store.events(0).num_rows == 15 and store.partitions()[0].fingerprint == "digest-0-fixed"


def test_history_is_the_accepted_periods_plus_the_one_asked_for(store):
    for period in range(3):
        store.append(f"period_{period}.txt", events(period, users=period + 1), f"digest-{period}")
    assert store.watermark() is None and store.read().num_rows == 0

    accepted = store.accept(0)
    assert store.accept(0) == accepted  # accepting again keeps the first acceptance
    store.accept(2)

    assert store.read().num_rows == 3 + 9
    assert store.read(include=1).num_rows == 3 + 6 + 9
    assert store.read(include=2).num_rows == 3 + 9
    assert store.read(accepted_only=False)["timestamp"].to_pylist() == sorted(
        store.read(accepted_only=False)["timestamp"].to_pylist()
    )
    assert store.watermark() == store.partitions()[2].last_timestamp
    assert [partition.accepted for partition in store.partitions()] == [True, False, True]


def test_a_folder_left_by_a_write_killed_while_publishing_is_not_a_period(store, tmp_path):
    store.append("period_0.txt", events(0), "digest-0")
    folder = tmp_path / "events" / "periods-_data_shop"
    # The state a kill leaves between moving the finished folder in and renaming it into place.
    (folder / "period=000000").rename(folder / "period=000000.tmp-0123abcd")

    assert store.partitions() == [] and store.next_period() == 0 and store.read(accepted_only=False).num_rows == 0
    partition, added = store.append("period_0.txt", events(0), "digest-0")
    assert added and partition.period == 0 and store.events(0).num_rows == 12


def test_an_append_killed_while_writing_leaves_no_half_period(store, tmp_path):
    staging = tmp_path / "tmp"
    staging.mkdir()
    # A period large enough that writing it takes a while; the process is killed as soon as it starts writing.
    script = textwrap.dedent(
        f"""
        import numpy as np, pyarrow as pa
        from recsys_tasks.contracts.event_store import EventStore
        from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA
        n = 2_000_000
        events = pa.table(
            {{"user_id": pa.array(np.arange(n) % 997).cast(pa.string()), "item_id": np.arange(n) % 5000,
              "timestamp": np.arange(n) + 1_704_067_200, "rating": np.ones(n, np.float32)}},
            schema=INTERACTIONS_SCHEMA,
        )
        print("writing", flush=True)
        EventStore({str(tmp_path / "events")!r}, {DATASET!r}).append("period_0.txt", events, "big")
        """
    )
    env = {
        **os.environ,
        "TMPDIR": str(staging),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    writer = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        deadline = time.monotonic() + 30
        while not any(staging.glob("adaptrec-period=000000-*/*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert list(staging.glob("adaptrec-period=000000-*/events.parquet")), "killed before it started writing"

    assert store.partitions() == [] and store.next_period() == 0
    partition, added = store.append("period_0.txt", events(0), "digest-0")
    assert added and partition.period == 0 and [p.period for p in store.partitions()] == [0]
