"""The embedded default (no MLFLOW_TRACKING_URI, no HOKUSAI_DATABASE_URL: both stores under
./.hokusai/) as a user runs it, with the import budget that keeps it fast guarded structurally.

Never a timed test: `benchmarks/embedded.py` measures wall time and peak RSS. These tests check what
makes the numbers: which modules a registration loads, that no schema migration runs inside it, and
that the program runs with its garbage-collector pace.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from hokusai_action.digest.background import usable_cores
from hokusai_action.process import YOUNG_THRESHOLD
from tests.helpers import CLI_PYTHON, embedded_env, register_args, run_captured

pytestmark = [pytest.mark.e2e]

# What a registration on the embedded default with the database sink has no use for. Each is a
# heavy import (Pub/Sub and its gRPC stack ~0.3 s, signing and Sigstore ~75 MB of dependencies, GCS),
# a driver for a database that is not in use, or what only the Pub/Sub and webhook sinks need.
NOT_FOR_EMBEDDED = (
    "google.cloud",
    "google.auth",
    "grpc",
    "model_signing",
    "sigstore",
    "OpenSSL",
    "psycopg2",
    "cloudevents",
    "standardwebhooks",
)

# Runs the program as `python -m hokusai_action` does, and records at exit (after the command, its
# SystemExit and every other exit handler) which modules it loaded and the collector's state.
PROGRAM = """
import atexit, gc, json, os, sys
out = sys.argv.pop(1)
migrations = []
if os.environ.get("PROBE_MIGRATIONS"):
    # every Alembic upgrade, MLflow's and ours, runs its scripts through this method
    from alembic.runtime.migration import MigrationContext
    original = MigrationContext.run_migrations
    def counted(self, **kwargs):
        migrations.append(self.get_current_revision())
        return original(self, **kwargs)
    MigrationContext.run_migrations = counted
hashes, prefetches = [], []
if os.environ.get("PROBE_HASHES"):
    # each hash of the model: the thread it ran in and whether it ran to its end; and what was imported
    # when the command started hashing in the background (when its thread gets to hash_model depends on
    # the machine's load)
    from hokusai_action.digest import hashing
    original_hash = hashing.hash_model
    def probed(*args, **kwargs):
        import threading
        hashes.append({"thread": threading.current_thread().name, "finished": False})
        result = original_hash(*args, **kwargs)
        hashes[-1]["finished"] = True
        return result
    hashing.hash_model = probed
    from hokusai_action.digest import background  # after the probe: it takes hash_model when imported
    original_prefetch = background.prefetch_digest
    def probed_prefetch(*args, **kwargs):
        prefetches.append({"sqlalchemy_loaded": "sqlalchemy" in sys.modules})
        return original_prefetch(*args, **kwargs)
    background.prefetch_digest = probed_prefetch
def record():
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"modules": sorted(sys.modules), "threshold": gc.get_threshold(),
                   "frozen": gc.get_freeze_count(), "migrations": len(migrations), "hashes": hashes,
                   "prefetches": prefetches}, handle)
atexit.register(record)
sys.argv[0] = "hokusai-ml-platform"
from hokusai_action.cli import run
run()
"""


def run_program(
    tmp_path: Path,
    *args: str,
    probe_migrations: bool = False,
    probe_hashes: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess, dict]:
    record = tmp_path / f"record-{len(list(tmp_path.glob('record-*')))}.json"
    env = {**embedded_env(tmp_path), **(env or {})}
    if probe_migrations:
        env["PROBE_MIGRATIONS"] = "1"
    if probe_hashes:
        env["PROBE_HASHES"] = "1"
    done = run_captured([CLI_PYTHON, "-c", PROGRAM, str(record), *args], env=env, cwd=tmp_path)
    return done, json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}


def loaded(modules: list[str], prefix: str) -> list[str]:
    return [name for name in modules if name == prefix or name.startswith(prefix + ".")]


@pytest.fixture
def embedded_home(tmp_path: Path, make_model) -> tuple[Path, Path]:
    """A fresh ./.hokusai set up as the README says (`db upgrade`), and a small model."""
    done, record = run_program(tmp_path, "db", "upgrade", probe_migrations=True)
    assert done.returncode == 0, done.stderr
    assert record["migrations"] >= 2  # the site database's and MLflow's own: the probe sees both
    return tmp_path, make_model(files={"weights.bin": os.urandom(2048)})


def test_db_upgrade_creates_the_embedded_mlflow_store(embedded_home):
    import sqlalchemy as sa

    home, _ = embedded_home
    store = home / ".hokusai" / "mlflow.db"
    assert store.is_file()
    engine = sa.create_engine(f"sqlite:///{store}")
    try:
        with engine.connect() as connection:
            revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            tables = set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert revision  # MLflow's own migrations ran to their head
    assert {"experiments", "runs", "logged_models", "registered_models", "model_versions"} <= tables

    again, _ = run_program(home, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout and "MLflow store" in again.stdout


def test_a_registration_on_the_embedded_default_loads_only_what_it_uses(embedded_home):
    home, model = embedded_home
    for token in ("EMBA", "EMBB"):  # the first registration on a fresh store, then a second token
        created, _ = run_program(home, "token", "create", token)
        assert created.returncode == 0, created.stderr
        done, record = run_program(home, *register_args(token, model), "--output", "json", probe_migrations=True)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert (result["status"], result["model_version"]) == ("registered", "1")

        modules = record["modules"]
        assert "mlflow" in modules  # the check below is about the right process
        unwanted = {prefix: loaded(modules, prefix) for prefix in NOT_FOR_EMBEDDED}
        assert not any(unwanted.values()), unwanted
        # neither MLflow (its store) nor the tool (the site database) migrated a schema here: both
        # are created by `db upgrade`, the setup step the README runs before a first registration
        assert record["migrations"] == 0, "a schema migration ran inside the registration"


@pytest.mark.skipif(
    usable_cores() < 2, reason="on one core the command does not hash ahead of its imports (background.prefetch_digest)"
)
def test_a_re_run_hashes_the_model_once_starting_before_the_database_client_is_imported(embedded_home):
    """A re-run's wall time is its hash: the hash starts before SQLAlchemy's imports (~0.3 s) and
    runs beside them, and the registration takes that hash over instead of hashing again."""
    home, model = embedded_home
    created, _ = run_program(home, "token", "create", "EMBR")
    assert created.returncode == 0, created.stderr
    first, _ = run_program(home, *register_args("EMBR", model), "--output", "json")
    assert first.returncode == 0, first.stderr

    again, record = run_program(home, *register_args("EMBR", model), "--output", "json", probe_hashes=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["model_version"] == json.loads(first.stdout)["model_version"]
    assert record["prefetches"] == [{"sqlalchemy_loaded": False}]
    assert record["hashes"] == [{"thread": "hokusai-hash", "finished": True}]  # the prefetch's, taken over


def test_the_program_runs_with_its_collector_pace(tmp_path):
    done, record = run_program(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert record["threshold"][0] == YOUNG_THRESHOLD
    assert record["frozen"] > 0  # the heap was frozen before shutdown


def test_python_m_runs_the_same_program(tmp_path):
    """`python -m hokusai_action` goes through ``cli.run`` as the console script does."""
    probe = (
        "import gc, runpy, sys\n"
        "sys.argv = ['hokusai-ml-platform', '--version']\n"
        "try:\n"
        "    runpy.run_module('hokusai_action', run_name='__main__')\n"
        "except SystemExit:\n"
        "    print(gc.get_threshold()[0], gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run(
        [CLI_PYTHON, "-c", probe],
        env=embedded_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split()[-2:] == [str(YOUNG_THRESHOLD), "True"], done.stdout + done.stderr


# ------------------------------------------------------------------ a store left by an older MLflow
# The tool was upgraded (a newer MLflow) and ./.hokusai was kept. MLflow migrates such a store on
# the spot when a table is missing, inside whatever command opened it, and refuses it ("out-of-date
# database schema") when the tables are there at an older revision (a migration that alters columns).


# MLflow's revisions from its head back to its first; with a database URL, that store written as an
# older MLflow left it: created, then migrated only up to the revision STEPS_BACK before this MLflow's head.
# In the CLI's interpreter: MLflow's ORM warns of deprecations there, and the test process errs on warnings.
MLFLOW_REVISIONS = """
import json, sys
from alembic import command
from alembic.script import ScriptDirectory
from mlflow.store.db.utils import _get_alembic_config, create_sqlalchemy_engine_with_retry
from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase
config = _get_alembic_config("sqlite://")
revisions = [revision.revision for revision in ScriptDirectory.from_config(config).walk_revisions()]
if len(sys.argv) > 1:
    url, steps_back = sys.argv[1], int(sys.argv[2])
    engine = create_sqlalchemy_engine_with_retry(url)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revisions[steps_back])
    engine.dispose()
print(json.dumps(revisions))
"""


def mlflow_revisions(*url_and_steps_back: str) -> list[str]:
    done = subprocess.run(
        [CLI_PYTHON, "-c", MLFLOW_REVISIONS, *url_and_steps_back],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def store_revision(store: Path) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{store}")
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def write_older_mlflow_store(store: Path, steps_back: int) -> str:
    """``store`` as an older MLflow left it (``MLFLOW_REVISIONS``); returns its revision."""
    return mlflow_revisions(f"sqlite:///{store}", str(steps_back))[steps_back]


def store_schema(store: Path) -> list[tuple[str, str, str]]:
    """Every table, index and trigger of an SQLite file, with the SQL that made it."""
    with contextlib.closing(sqlite3.connect(store)) as connection:
        return sorted(connection.execute("SELECT type, name, coalesce(sql, '') FROM sqlite_master").fetchall())


def stamp(store: Path, revision: str) -> None:
    """Say in the store's Alembic table that ``revision`` wrote it, its tables unchanged."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{store}")
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision})
    finally:
        engine.dispose()


def site_rows(home: Path, token: str) -> tuple[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / '.hokusai' / 'hokusai.db'}")
    try:
        with engine.connect() as connection:
            status = connection.execute(
                sa.text("SELECT model_status FROM tokens WHERE token_id = :token"), {"token": token}
            ).scalar()
            events = connection.execute(sa.text("SELECT count(*) FROM events")).scalar()
    finally:
        engine.dispose()
    return status, events


def test_a_registration_on_a_store_an_older_mlflow_left_says_to_run_db_upgrade_and_changes_nothing(embedded_home):
    """Before: MLflow's refusal was retried as an outage for 30 s, then exit 4 ("did not answer"),
    pointing at a server that does not exist and at `mlflow db upgrade`."""

    home, model = embedded_home
    store = home / ".hokusai" / "mlflow.db"
    head, older = mlflow_revisions()[:2]
    assert store_revision(store) == head
    stamp(store, older)  # the tables are there; the revision says an older MLflow wrote them
    created, _ = run_program(home, "token", "create", "OLDMF")
    assert created.returncode == 0, created.stderr

    done, _ = run_program(home, *register_args("OLDMF", model))

    assert done.returncode == 2, done.stderr
    assert f"The MLflow store at sqlite:///{store} was written by an older MLflow" in done.stderr, done.stderr
    assert f"revision {older}" in done.stderr and head in done.stderr
    assert "hokusai-ml-platform db upgrade" in done.stderr
    assert "did not answer" not in done.stderr and "Traceback" not in done.stderr
    assert site_rows(home, "OLDMF") == ("draft", 0)
    assert store_revision(store) == older  # nothing migrated either


def test_db_upgrade_migrates_a_store_an_older_mlflow_left_keeping_a_backup(embedded_home):
    """Before: `db upgrade` said "is ready", with no word of the migration MLflow ran as it opened the
    store (a table was missing) and no copy of the store as it was."""
    home, model = embedded_home
    store = home / ".hokusai" / "mlflow.db"
    head = mlflow_revisions()[0]
    store.unlink()
    older = write_older_mlflow_store(store, steps_back=3)

    done, record = run_program(home, "db", "upgrade", probe_migrations=True)

    assert done.returncode == 0, done.stderr
    backup = store.with_name(f"mlflow.db.{older}.bak")
    assert f"MLflow store sqlite:///{store} upgraded from revision {older} to {head}" in done.stdout, done.stdout
    assert f"the store as it was is kept in {backup}" in done.stdout, done.stdout
    assert record["migrations"] >= 1
    assert store_revision(store) == head
    assert store_revision(backup) == older

    created, _ = run_program(home, "token", "create", "UPGMF")
    assert created.returncode == 0, created.stderr
    registered, record = run_program(home, *register_args("UPGMF", model), probe_migrations=True)
    assert registered.returncode == 0, registered.stderr
    assert record["migrations"] == 0, "a schema migration ran inside the registration"

    again, _ = run_program(home, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert f"MLflow store sqlite:///{store} is ready" in again.stdout
    assert sorted(path.name for path in store.parent.glob("mlflow.db.*.bak")) == [backup.name]


def test_a_migration_that_fails_leaves_the_store_as_it_was_and_never_overwrites_a_kept_copy(embedded_home):
    """A store whose revision is older than its tables (the head migration is not undone): each attempt
    fails on the first table already there, says where the store as it was is kept, and keeps its own copy."""

    home, _ = embedded_home
    store = home / ".hokusai" / "mlflow.db"
    older = mlflow_revisions()[1]
    stamp(store, older)

    kept = []
    for _ in range(2):
        done, _ = run_program(home, "db", "upgrade")
        assert done.returncode == 2, done.stderr
        assert f"The MLflow store at sqlite:///{store} could not be migrated from revision {older}" in done.stderr
        assert "Traceback" not in done.stderr
        kept.append(re.search(r"is kept in (\S+\.bak)", done.stderr).group(1))
        assert store_revision(store) == older
    assert kept == [str(store.with_name(f"mlflow.db.{older}.bak")), str(store.with_name(f"mlflow.db.{older}.1.bak"))]
    assert all(store_revision(Path(copy)) == older for copy in kept)


def test_a_migration_that_fails_after_others_succeeded_puts_the_store_back_as_it_was(embedded_home, tmp_path):
    """Alembic commits SQLite migrations one by one: a store two revisions behind whose second migration
    fails (a table it creates is there already) was left half migrated, one revision on."""
    home, _ = embedded_home
    store = home / ".hokusai" / "mlflow.db"
    one_back = tmp_path / "one-back.db"
    write_older_mlflow_store(one_back, steps_back=1)
    made_by_the_last_migration = sorted(
        {name for kind, name, _ in store_schema(store) if kind == "table"}
        - {name for kind, name, _ in store_schema(one_back) if kind == "table"}
    )
    assert made_by_the_last_migration, "this MLflow's last migration creates no table: pick another way to fail it"
    store.unlink()
    older = write_older_mlflow_store(store, steps_back=2)
    with contextlib.closing(sqlite3.connect(store)) as connection, connection:
        connection.execute(f"CREATE TABLE {made_by_the_last_migration[0]} (left_by_hand INTEGER)")
    before = store_schema(store)

    done, _ = run_program(home, "db", "upgrade")

    assert done.returncode == 2, done.stderr
    assert f"could not be migrated from revision {older}" in done.stderr
    assert "It was put back as it was." in done.stderr
    assert store_revision(store) == older
    assert store_schema(store) == before


def test_a_store_a_newer_mlflow_wrote_is_named_so_and_never_migrated(embedded_home):
    home, model = embedded_home
    store = home / ".hokusai" / "mlflow.db"
    stamp(store, "feedfacecafe")
    created, _ = run_program(home, "token", "create", "NEWMF")
    assert created.returncode == 0, created.stderr

    registered, _ = run_program(home, *register_args("NEWMF", model))
    upgraded, _ = run_program(home, "db", "upgrade")

    for done in (registered, upgraded):
        assert done.returncode == 2, done.stderr
        assert "was written by a newer MLflow (revision feedfacecafe, which this MLflow does not know" in done.stderr
        assert "Use the version of hokusai-ml-platform that wrote it, or a newer one." in done.stderr
    assert site_rows(home, "NEWMF") == ("draft", 0)
    assert store_revision(store) == "feedfacecafe"
    assert not list(store.parent.glob("*.bak*"))


def test_an_older_mlflow_database_of_the_users_own_is_named_without_its_password(tmp_path, make_model):
    """A tracking URI naming a PostgreSQL database an older MLflow wrote: MLflow's own command migrates
    it (the tool does not touch a database it does not own), and its password is never printed."""
    import sqlalchemy as sa

    from tests.services import create_database, drop_database

    url = create_database("hokusai_older_mlflow")
    secret = "s3cret-in-the-tracking-uri"
    with_secret = sa.engine.make_url(url).set(password=secret).render_as_string(hide_password=False)
    try:
        head, older = mlflow_revisions(url, "0")[:2]
        engine = sa.create_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text("UPDATE alembic_version SET version_num = :older"), {"older": older})
        finally:
            engine.dispose()
        env = {"MLFLOW_TRACKING_URI": with_secret}
        for command in (("db", "upgrade"), ("token", "create", "PGOLD")):
            done, _ = run_program(tmp_path, *command, env=env)
            assert done.returncode == 0, done.stderr

        done, _ = run_program(tmp_path, *register_args("PGOLD", make_model()), "--debug", env=env)

        assert done.returncode == 2, done.stderr
        assert f"was written by an older MLflow (revision {older}; this MLflow needs {head})" in done.stderr
        assert "MLflow's `mlflow db upgrade <uri>`" in done.stderr
        assert "postgres:***@" in done.stderr
        assert secret not in done.stdout + done.stderr
        assert site_rows(tmp_path, "PGOLD") == ("draft", 0)
    finally:
        drop_database(url)


def test_the_embedded_mlflow_store_gets_its_folder_when_the_site_database_is_elsewhere(
    run_cli, make_token, make_model, tmp_path
):
    """The site's PostgreSQL with MLflow's embedded default: nothing created HOKUSAI_HOME yet (no
    `db upgrade` ran here), and an older MLflow (3.0) does not create a SQLite file's folder itself."""
    home = tmp_path / "not" / "yet" / "there"
    token, model = make_token(), make_model(files={"weights.bin": os.urandom(256)}, metrics=False)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91", "--output", "json"),
        env={"MLFLOW_TRACKING_URI": "", "HOKUSAI_HOME": str(home)},
    )

    assert result.code == 0, result.stderr
    assert result.json["model_version"] == "1"
    assert (home / "mlflow.db").is_file()
