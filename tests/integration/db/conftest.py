"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import create_database, drop_database


@pytest.fixture(params=["postgresql", "sqlite"])
def blank_url(request, tmp_path) -> Iterator[str]:
    """The URL of an empty database of each kind the tool supports: a fresh PostgreSQL database
    (dropped after the test), then a SQLite file."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'site.db'}"
        return
    url = create_database("hokusai_migrate")
    yield url
    drop_database(url)
