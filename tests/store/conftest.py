"""Every store test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from callbridge.store.database import Database

from .pg import NoPostgres, fresh_database, postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """The server's URL; None (with ``_skip_reason`` set) when none can be had."""
    try:
        with postgres_server() as url:
            yield url
    except NoPostgres as exc:
        _skip_reason.append(str(exc))
        yield None


_skip_reason: list[str] = []


@pytest.fixture(params=["sqlite", "postgres"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> AsyncIterator[Database]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'callbridge.db'}"
    else:
        if postgres_url is None:
            pytest.skip(f"PostgreSQL unavailable: {_skip_reason[-1] if _skip_reason else '?'}")
        url = await fresh_database(postgres_url)
    db = Database(url)
    await db.migrate()
    yield db
    await db.dispose()
