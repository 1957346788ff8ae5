"""Which database, how to connect to it, and bringing its schema up to date.

SQLite (a file in the data dir, WAL mode) unless ``DATABASE_URL`` names another; a
Postgres URL is given the asyncpg driver. Alembic migrations ship inside the package and
run at start-up without an ``alembic.ini``, so a wheel install migrates itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from callbridge.errors import ConfigError
from callbridge.settings import Settings

__all__ = ["SQLITE_FILE", "Database", "SchemaState", "database_url"]

log = logging.getLogger(__name__)

SQLITE_FILE = "callbridge.db"
MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 7_406_113_901  # any constant: one instance migrates, the others wait

_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def database_url(settings: Settings) -> str:
    """``DATABASE_URL`` with an async driver, or the SQLite file in the data dir."""
    if not settings.database_url:
        path = (settings.data_dir / SQLITE_FILE).resolve()
        return f"sqlite+aiosqlite:///{path}"
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL: not a database URL ({exc})") from exc
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError(
            f"DATABASE_URL: expected postgresql://… or sqlite:///…, got {url.drivername}://…"
        )
    return url.set(drivername=driver).render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


class Database:
    """One async engine per process; sessions come from ``self.sessions``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(database_url(settings))

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs and ``doctor``."""
        return make_url(self.url).render_as_string(hide_password=True)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two instances starting together must not both create the tables.
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            await conn.run_sync(_upgrade)
        log.info("store.migrated url=%s", self.safe_url)

    async def schema_state(self) -> SchemaState:
        """Where the schema is versus where the code expects it (for ``doctor``)."""
        async with self.engine.connect() as conn:
            current = await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )
        return SchemaState(current=current, head=_head())

    async def dispose(self) -> None:
        await self.engine.dispose()


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _head() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the package ships at least one migration"
    return head


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL: the API and CLI read while the writer commits; NORMAL sync survives kill -9
    (a committed transaction is in the WAL file, only a power cut can lose it)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
