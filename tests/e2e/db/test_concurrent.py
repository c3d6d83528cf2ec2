"""Many registrations at once against one MLflow server and one PostgreSQL: all succeed, and each
process holds at most ``POOL_SIZE`` database connections (`benchmarks/many_at_once.py` runs 16)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hokusai_action.db.store import POOL_SIZE
from tests.helpers import register_args, start_cli
from tests.pg_connections import ConnectionSampler
from tests.services import PG_ADMIN_URL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUNS = 8


def test_eight_registrations_at_once_each_exit_0_with_one_version_and_bounded_connections(
    cli_env, services, make_token, make_model, snapshot, tmp_path
):
    tokens = [make_token() for _ in range(RUNS)]
    models = [make_model(name=f"model-{n}") for n in range(RUNS)]
    site_database = sa.engine.make_url(services.database_url).database
    with ConnectionSampler(PG_ADMIN_URL, period=0.02, database=site_database) as sampler:
        processes = []
        for token, model in zip(tokens, models, strict=True):
            process = start_cli(*register_args(token, model, "--output", "json"), env=cli_env, cwd=tmp_path)
            sampler.watch(process.pid)
            processes.append(process)
        outcomes = [(*process.communicate(timeout=300), process.returncode) for process in processes]
        outcomes = [(code, out, err) for out, err, code in outcomes]

    assert [code for code, _, _ in outcomes] == [0] * RUNS, [err[-2000:] for _, _, err in outcomes]
    for token in tokens:
        after = snapshot(token)
        assert after.versions == ("1",)
        assert after.events == 1
        assert after.token["model_status"] == "registered"
    # every process was seen holding a connection, and none ever held more than the bound
    assert len(sampler.peak) == RUNS, (sampler.samples, dict(sampler.peak))
    assert max(sampler.peak.values()) <= POOL_SIZE, dict(sampler.peak)
