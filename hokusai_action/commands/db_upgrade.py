"""`db upgrade`: the site database's schema to the head revision, and the embedded MLflow store
(``./.hokusai``) migrated and created here, the setup step, not inside a registration."""

from __future__ import annotations

from hokusai_action.commands.wiring import build_registry, site_database
from hokusai_action.settings.loader import Settings

EMBEDDED_MLFLOW_READY = "MLflow store {uri} is ready."
EMBEDDED_MLFLOW_UPGRADED = (
    "MLflow store {uri} upgraded from revision {before} to {after}; the store as it was is kept in {backup}."
)


def run_db_upgrade(settings: Settings) -> str:
    with site_database(settings) as database:
        before, after = database.upgrade()
    if before == after:
        lines = [f"Database {database.display_url} is up to date (revision {after})."]
    else:
        lines = [f"Database {database.display_url} upgraded from {before or 'empty'} to revision {after}."]
    if settings.uses_embedded_mlflow:
        from hokusai_action.mlflow.store_migration import upgrade_sqlite_store

        # a store an older MLflow left (the tool was upgraded, ./.hokusai kept) is migrated here, the
        # setup step, not inside a registration, and MLflow creates its own tables on the first use of
        # an empty store (about a hundred Alembic migrations, 0.6 s): here too
        upgraded = upgrade_sqlite_store(settings.mlflow_tracking_uri)
        registry = build_registry(settings)
        registry.check_reachable()
        if upgraded is None:
            lines.append(EMBEDDED_MLFLOW_READY.format(uri=registry.display_uri))
        else:
            lines.append(
                EMBEDDED_MLFLOW_UPGRADED.format(
                    uri=registry.display_uri, before=upgraded.before, after=upgraded.after, backup=upgraded.backup
                )
            )
    return "\n".join(lines)
