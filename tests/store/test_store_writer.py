"""The one writer task: ops are committed as they come, bad ones do not sink good ones,
and a full queue drops instead of blocking the call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from callbridge.store.database import Database
from callbridge.store.ops import CallSeen, EventHappened, TurnEnded
from callbridge.store.repository import get_call
from callbridge.store.writer import StoreWriter

T0 = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)
SID = "CA" + "3" * 32


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


async def test_each_op_is_committed_and_readable_from_another_connection(
    database: Database,
) -> None:
    writer = StoreWriter(database)
    writer.start()
    try:
        assert writer.submit(CallSeen(sid=SID, at=T0, from_number="+1"))
        assert writer.submit(turn(1))
        await writer.flush()
        reader = Database(database.url)  # a second engine: proves it is committed
        try:
            detail = await get_call(reader, SID)
            assert detail is not None and [t.text for t in detail.turns] == ["t1"]
        finally:
            await reader.dispose()
        assert writer.written == 2
    finally:
        await writer.close()


async def test_a_bad_op_does_not_take_its_batch_with_it(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    writer = StoreWriter(database)
    writer.start()
    try:
        # Queued together, so they are one batch; the duplicate seq violates the schema.
        for op in (turn(1), turn(1), turn(2), EventHappened(sid=SID, at=T0, kind="gap")):
            writer.submit(op)
        with caplog.at_level(logging.ERROR, logger="callbridge.store.writer"):
            await writer.flush()
        detail = await get_call(database, SID)
        assert detail is not None
        assert [t.seq for t in detail.turns] == [1, 2]
        assert [e.kind for e in detail.events] == ["gap"]
        assert writer.failed == 1
        assert any("store.op_failed" in r.getMessage() for r in caplog.records)
    finally:
        await writer.close()


async def test_a_full_queue_drops_and_counts(database: Database) -> None:
    dropped: list[str] = []
    writer = StoreWriter(database, max_queued=2, on_drop=dropped.append)
    assert not writer.submit(turn(1))  # not started: nothing would ever write it
    writer.start()
    try:
        results = [writer.submit(turn(i)) for i in range(1, 5)]  # no await: the task waits
        assert results == [True, True, False, False]
        assert dropped == ["writer not running", "queue full", "queue full"]
        assert writer.dropped == 3
        await writer.flush()
        detail = await get_call(database, SID)
        assert detail is not None and [t.seq for t in detail.turns] == [1, 2]
    finally:
        await writer.close()


async def test_close_writes_what_is_queued(database: Database) -> None:
    writer = StoreWriter(database)
    writer.start()
    for i in range(1, 51):
        writer.submit(turn(i))
    await writer.close()
    detail = await get_call(database, SID)
    assert detail is not None and len(detail.turns) == 50
    assert not writer.submit(turn(99))
