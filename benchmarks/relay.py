"""The relay's cost per row, on SQLite and PostgreSQL (a measurement, never a timed test).

    .venv/bin/python benchmarks/relay.py [--sizes 10000,50000,100000] [--old-sizes 1000,2000,4000]
                                         [--delivered-sizes 1000,5000] [--backends sqlite,postgresql]

1. skipped: N pending rows for a sink this relay does not configure (webhook rows when the relay has
   only pubsub) plus 5 rows it does deliver; times one `deliver_pending` and prints the time per
   skipped row at each N. Constant per row (or falling) means no re-scan.
2. old: the same with the previous outbox (`git show dcf81f3:hokusai_action/db/outbox.py`, which
   excluded seen rows with `NOT IN (seen)`), at smaller N: its cost per row grows with N.
3. delivered: N pending rows that the relay leases, delivers (to an in-process sink that accepts
   everything: the database work alone is measured) and marks; time per row.

Needs the machine's PostgreSQL (127.0.0.1:5432, trust auth) for the postgresql backend.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hokusai_action.db import outbox  # noqa: E402
from hokusai_action.db.schema import event_deliveries, events, tokens  # noqa: E402
from hokusai_action.db.store import Database, utcnow  # noqa: E402
from tests.services import create_database, drop_database  # noqa: E402

OLD_OUTBOX_COMMIT = "dcf81f3"
CONFIGURED_ROWS = 5
CHUNK = 5000
TOKEN = "BENCH"


class AcceptingSink:
    """Stands in for Pub/Sub: accepts every event at once, so only the relay's own work is timed."""

    name = "pubsub"

    def __init__(self) -> None:
        self.count = 0

    def deliver(self, event: object) -> None:
        self.count += 1

    def close(self) -> None:
        return None


@contextmanager
def fresh_database(backend: str) -> Iterator[Database]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            database = Database(f"sqlite:///{folder}/relay.db", timeout=30)
            database.upgrade()
            try:
                yield database
            finally:
                database.dispose()
        return
    url = create_database("hokusai_bench_relay")
    database = Database(url, timeout=30)
    database.upgrade()
    try:
        yield database
    finally:
        database.dispose()
        drop_database(url)


def token_of(event_id: str) -> str:
    return f"{TOKEN}{event_id.replace('-', '')[:16]}".upper()


def add_rows(database: Database, count: int, *, sink: str) -> None:
    """Commit ``count`` registrations, one token each (a relay sends only the registration a token
    holds), each event with one pending delivery row for ``sink``."""
    now = utcnow()
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        ids = [str(uuid.uuid4()) for _ in range(size)]
        with database.unit_of_work() as uow:
            uow.execute(
                tokens.insert(),
                [
                    {
                        "token_id": token_of(event_id),
                        "model_status": "registered",
                        "event_id": event_id,
                        "created_at": now,
                        "updated_at": now,
                        "metadata_": {},
                    }
                    for event_id in ids
                ],
            )
            uow.execute(
                events.insert(),
                [
                    {
                        "event_id": event_id,
                        "event_type": "token_ready_for_deploy",
                        "source": "bench",
                        "timestamp": now,
                        "payload": {
                            "id": event_id,
                            "source": "bench",
                            "time": "2026-01-01T00:00:00Z",
                            "subject": token_of(event_id),
                            "data": {},
                        },
                        "processed": False,
                        "token_id": token_of(event_id),
                    }
                    for event_id in ids
                ],
            )
            uow.execute(
                event_deliveries.insert(),
                [{"event_id": event_id, "sink": sink, "status": "pending", "attempts": 0} for event_id in ids],
            )
            uow.commit()
    if database.dialect == "postgresql":
        # what autovacuum's analyze does to a table that grew: without statistics the planner takes the
        # (status, sink) index for the per-row UPDATEs instead of the primary key
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("ANALYZE event_deliveries"))
            connection.execute(sa.text("ANALYZE events"))


def old_outbox() -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{OLD_OUTBOX_COMMIT}:hokusai_action/db/outbox.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_outbox.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_outbox", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def time_skipped(backend: str, sizes: list[int], relay: ModuleType, label: str) -> None:
    """One database grown to each size in turn; a relay that configures only pubsub runs at each."""
    with fresh_database(backend) as database:
        add_rows(database, CONFIGURED_ROWS, sink="pubsub")
        have = 0
        for size in sizes:
            add_rows(database, size - have, sink="webhook")
            have = size
            _reset(database, "pubsub")  # the delivered rows are made pending again: the same work each time
            sink = AcceptingSink()
            began = time.perf_counter()
            relay.deliver_pending(database, {"pubsub": sink})
            elapsed = time.perf_counter() - began
            assert sink.count == CONFIGURED_ROWS, sink.count
            print(
                f"  {backend:10} {label:4} skipped {size:>7,} rows: {elapsed:8.3f} s, "
                f"{elapsed / size * 1e6:8.2f} µs per skipped row",
                flush=True,
            )


def time_delivered(backend: str, sizes: list[int]) -> None:
    for size in sizes:
        with fresh_database(backend) as database:
            add_rows(database, size, sink="pubsub")
            sink = AcceptingSink()
            began = time.perf_counter()
            report = outbox.deliver_pending(database, {"pubsub": sink})
            elapsed = time.perf_counter() - began
            assert sink.count == size and len(report.delivered) == size
            print(
                f"  {backend:10} new  delivered {size:>7,} rows: {elapsed:8.3f} s, "
                f"{elapsed / size * 1e6:8.1f} µs per delivered row",
                flush=True,
            )


def _reset(database: Database, sink: str) -> None:
    with database.unit_of_work() as uow:
        uow.execute(
            event_deliveries.update()
            .where(event_deliveries.c.sink == sink)
            .values(status="pending", lease_owner=None, lease_until=None, next_attempt_at=None)
        )
        uow.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--old-sizes", default="1000,2000,4000")
    parser.add_argument("--delivered-sizes", default="1000,5000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()

    def numbers(text: str) -> list[int]:
        return [int(part) for part in text.split(",") if part]

    backends = [b for b in args.backends.split(",") if b]
    print(f"relay over pending rows of an unconfigured sink (+{CONFIGURED_ROWS} delivered rows)")
    for backend in backends:
        time_skipped(backend, numbers(args.sizes), outbox, "new")
        if args.old_sizes:
            time_skipped(backend, numbers(args.old_sizes), old_outbox(), "old")
    if args.delivered_sizes:
        print("relay delivering every row (lease, deliver in process, mark)")
        for backend in backends:
            time_delivered(backend, numbers(args.delivered_sizes))


if __name__ == "__main__":
    main()
