"""The writer outlives its database: a refused connection holds the record, never ends it.

The database is made to refuse connections the way asyncpg does when PostgreSQL is down
(a raw ``ConnectionRefusedError`` out of the pool's checkout, which SQLAlchemy does not
wrap). Time is an injected sleep that advances a manual clock, so the backoff schedule
is asserted exactly and nothing waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from callbridge.store.database import Database
from callbridge.store.ops import CallSeen, TurnEnded
from callbridge.store.repository import get_call
from callbridge.store.writer import StoreWriter
from callbridge.telemetry.metrics import Metrics

T0 = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)
SID = "CA" + "4" * 32


def turn(seq: int) -> TurnEnded:
    return TurnEnded(
        sid=SID,
        seq=seq,
        role="user",
        kind="",
        text=f"t{seq}",
        heard_text=None,
        interrupted=False,
        started_at=T0 + timedelta(seconds=seq),
        ended_at=T0 + timedelta(seconds=seq + 1),
        latency_ms={},
    )


class Outage:
    """Makes ``database`` refuse every connection while ``down`` is set."""

    def __init__(self, database: Database) -> None:
        self.down = False
        self.refused = 0
        event.listen(database.engine.sync_engine.pool, "checkout", self._checkout)

    def _checkout(self, *_: Any) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


class Time:
    """A manual clock whose sleep advances it; ``on_sleep`` runs before each pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []
        self.on_sleep: list[Any] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook()
        await asyncio.sleep(0)


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """The injected outage needs no server (test_store_pg_outage.py stops a real one)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'callbridge.db'}")
    await db.migrate()
    yield db
    await db.dispose()


async def test_a_refused_database_holds_the_ops_and_retries_them_in_order_with_backoff(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage(sqlite_db)
    time = Time()
    seen_healthy: list[bool] = []
    writer = StoreWriter(
        sqlite_db, backoff_s=(0.5, 1.0, 2.0, 4.0), sleep=time.sleep, clock=time.clock
    )
    metrics = Metrics()
    metrics.watch_store(writer)

    def during_outage() -> None:
        seen_healthy.append(writer.healthy)
        if len(time.pauses) == 6:
            outage.down = False  # PostgreSQL is back after the sixth pause

    time.on_sleep.append(during_outage)
    writer.start()
    try:
        writer.submit(CallSeen(sid=SID, at=T0))
        await writer.flush()
        assert writer.healthy
        outage.down = True
        with caplog.at_level(logging.INFO, logger="callbridge.store.writer"):
            for seq in range(1, 4):
                assert writer.submit(turn(seq))
            await writer.flush()
            assert writer.submit(turn(4))  # after the outage: the writer never stopped
            await writer.flush()
        assert time.pauses == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        assert seen_healthy == [False] * 6
        assert writer.healthy and writer.backlog == 0
        assert (writer.outages, writer.restarts, writer.failed, writer.dropped) == (1, 0, 0, 0)
        detail = await get_call(sqlite_db, SID)
        assert detail is not None and [t.seq for t in detail.turns] == [1, 2, 3, 4]
        events = [r.getMessage() for r in caplog.records]
        assert sum("store.unavailable" in m for m in events) == 1
        assert any("store.recovered" in m and "down_s=15.5" in m for m in events)
        scrape = metrics.render().decode()
        assert "callbridge_store_healthy 1.0" in scrape
        assert "callbridge_store_outages_total 1.0" in scrape
    finally:
        await writer.close()


async def test_the_backlog_is_bounded_and_what_overflows_is_dropped_and_counted(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage(sqlite_db)
    time = Time()
    gate = asyncio.Event()
    waiting = asyncio.Event()
    dropped: list[str] = []

    async def sleep(seconds: float) -> None:
        await time.sleep(seconds)
        waiting.set()
        await gate.wait()  # the database stays away until the test says so

    writer = StoreWriter(sqlite_db, max_queued=3, on_drop=dropped.append, sleep=sleep)
    metrics = Metrics()
    metrics.watch_store(writer)
    writer.start()
    try:
        outage.down = True
        assert writer.submit(turn(1))
        await asyncio.wait_for(waiting.wait(), 10)  # it holds turn 1, waits out the outage
        assert not writer.healthy
        with caplog.at_level(logging.WARNING, logger="callbridge.store.writer"):
            results = [writer.submit(turn(seq)) for seq in range(2, 7)]
        assert results == [True, True, True, False, False]
        assert dropped == ["queue full", "queue full"]
        assert writer.backlog == 4
        scrape = metrics.render().decode()
        assert "callbridge_store_healthy 0.0" in scrape
        assert "callbridge_store_backlog_ops 4.0" in scrape
        assert any("store.dropped" in r.getMessage() for r in caplog.records)
        outage.down = False
        gate.set()
        await writer.flush()
        detail = await get_call(sqlite_db, SID)
        assert detail is not None and [t.seq for t in detail.turns] == [1, 2, 3, 4]
        assert writer.healthy
    finally:
        gate.set()
        await writer.close()


async def test_a_bug_in_the_loop_restarts_it_with_backoff_and_keeps_the_held_batch(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Time()
    writer = StoreWriter(sqlite_db, backoff_s=(0.25, 0.5), sleep=time.sleep)
    write_held = writer._write_held
    crashes = 0

    async def crash_twice_then_write() -> None:
        nonlocal crashes
        if crashes < 2:
            crashes += 1
            raise RuntimeError("a bug outside the write")
        await write_held()

    monkeypatch.setattr(writer, "_write_held", crash_twice_then_write)
    writer.start()
    try:
        assert writer.submit(turn(1))
        await writer.flush()
        detail = await get_call(sqlite_db, SID)
        assert detail is not None and [t.seq for t in detail.turns] == [1]
        assert writer.restarts == 2
        assert time.pauses == [0.25, 0.5]
        assert writer.healthy
    finally:
        await writer.close()


async def test_healthy_is_false_before_start_and_after_close(database: Database) -> None:
    writer = StoreWriter(database)
    assert not writer.healthy
    writer.start()
    await asyncio.sleep(0)
    assert writer.healthy
    await writer.close()
    assert not writer.healthy


async def test_close_during_an_outage_gives_up_after_its_timeout_and_says_what_is_lost(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    time = Time()
    writer = StoreWriter(sqlite_db, max_queued=2, sleep=time.sleep)

    async def refused(_ops: object) -> None:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    async def away() -> bool:
        return False

    # The database is away without opening a connection per attempt: cancelling the
    # writer mid-connect (hundreds of aiosqlite threads in 0.2 s) could leave a future no
    # thread would ever resolve, and hang the event loop's teardown.
    writer._commit = refused  # type: ignore[method-assign]
    writer._database_answers = away  # type: ignore[method-assign]
    writer.start()
    for seq in range(1, 5):
        writer.submit(turn(seq))
    with caplog.at_level(logging.ERROR, logger="callbridge.store.writer"):
        await writer.close(timeout_s=0.2)  # the queue is full and nothing can be written
    assert not writer.healthy
    assert any(
        "store.close_timeout" in r.getMessage() and "lost=" in r.getMessage()
        for r in caplog.records
    )
