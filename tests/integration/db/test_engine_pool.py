"""The database engine's connection bound: one process holds at most ``POOL_SIZE`` connections to a
server database, however many of its threads want one at once (they wait their turn)."""

from __future__ import annotations

import os
import threading

import pytest
import sqlalchemy as sa

from hokusai_action.db.store import APPLICATION_NAME, POOL_SIZE, Database
from tests.pg_connections import ConnectionSampler
from tests.services import PG_ADMIN_URL, create_database, drop_database


@pytest.mark.unit
def test_a_server_database_gets_a_small_bounded_pool() -> None:
    database = Database("postgresql://hokusai@db.invalid:5432/site", timeout=7)  # connects to nothing
    pool = database.engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (POOL_SIZE, 0, 7)
    assert POOL_SIZE == 2  # the bound the README states: change both together
    database.dispose()


@pytest.mark.unit
def test_sqlite_keeps_its_own_pool(tmp_path) -> None:
    """A file on this machine: no server connections to bound (and WAL lets readers share it)."""
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    assert (database.engine.pool.size(), database.engine.pool._max_overflow) != (POOL_SIZE, 0)
    database.dispose()


@pytest.mark.integration
def test_eight_threads_at_once_share_at_most_pool_size_connections() -> None:
    """Eight threads each open a unit of work holding the connection for 0.4 s: all finish, and
    PostgreSQL never sees more than POOL_SIZE connections of ours from this process."""

    url = create_database("hokusai_pool")
    engine_under_test = Database(url, timeout=30)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            with engine_under_test.unit_of_work() as uow:
                assert uow.execute(sa.text("SELECT current_setting('application_name')")).scalar() == APPLICATION_NAME
                uow.execute(sa.text("SELECT pg_sleep(0.4)"))
        except BaseException as exc:  # collected: a thread must not die unseen
            errors.append(exc)

    with ConnectionSampler(PG_ADMIN_URL, period=0.02, database=sa.engine.make_url(url).database) as sampler:
        sampler.watch(os.getpid())
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    engine_under_test.dispose()
    drop_database(url)
    assert errors == []
    assert sampler.samples > 10
    assert sampler.peak[os.getpid()] == POOL_SIZE  # reached, never passed
