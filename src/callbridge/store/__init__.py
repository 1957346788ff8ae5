"""The call record: calls, turns, events and recordings (DESIGN.md §6).

``Store`` is what a server holds: the database, its one writer task, and where the
recordings live. Start it before the first call and close it after the last.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from callbridge.settings import Settings
from callbridge.store.database import Database
from callbridge.store.recordings import purge_recordings
from callbridge.store.writer import StoreWriter

__all__ = ["Store"]


class Store:
    def __init__(
        self,
        database: Database,
        *,
        recordings_dir: Path,
        retention_days: float = 0,
        writer: StoreWriter | None = None,
    ) -> None:
        self.database = database
        self.recordings_dir = recordings_dir
        self.retention_days = retention_days
        self.writer = writer or StoreWriter(database)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_drop: Callable[[str], None] | None = None
    ) -> Store:
        """``on_drop`` hears of each op dropped because the writer fell behind."""
        database = Database.from_settings(settings)
        return cls(
            database,
            recordings_dir=settings.recordings_path,
            retention_days=settings.recording_retention_days,
            writer=StoreWriter(database, on_drop=on_drop),
        )

    async def start(self) -> None:
        """Migrate, apply the recordings' retention, start the writer."""
        await self.database.migrate()
        purge_recordings(self.recordings_dir, self.retention_days)
        self.writer.start()

    async def close(self) -> None:
        await self.writer.close()
        await self.database.dispose()
