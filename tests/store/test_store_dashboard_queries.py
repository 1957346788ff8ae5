"""The dashboard's store queries on SQLite and PostgreSQL: every filter and sort of the
calls list, a page in a fixed number of statements, and the overview's aggregates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from callbridge.store.database import Database
from callbridge.store.ops import CallEnded, CallSeen, EventHappened, StoreOp, TurnEnded, apply
from callbridge.store.overview import load_overview, percentile_of_bins
from callbridge.store.search import CallQuery, search_calls

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def sid(i: int) -> str:
    return f"CA{i:032x}"


async def write(db: Database, *ops: StoreOp) -> None:
    async with db.sessions() as session, session.begin():
        for op in ops:
            await apply(session, op)


def call(i: int, at: datetime, length_s: float | None, **kw: Any) -> list[StoreOp]:
    seen = CallSeen(
        sid=sid(i),
        at=at,
        from_number=kw.get("from_number", f"+1555000{i:04d}"),
        to_number="+15550100000",
        status="in-progress",
        assistant=kw.get("assistant", "menu"),
    )
    ops: list[StoreOp] = [seen]
    for seq, first_frame in enumerate(kw.get("latencies", ()), start=1):
        ops.append(
            TurnEnded(
                sid=sid(i),
                seq=seq,
                role="assistant",
                kind="answer",
                text="ok",
                heard_text="ok",
                interrupted=False,
                started_at=at + timedelta(seconds=seq),
                ended_at=at + timedelta(seconds=seq + 1),
                latency_ms={"stt": 10.0, "first_frame": first_frame},
            )
        )
    for kind, data in kw.get("events", ()):
        ops.append(EventHappened(sid=sid(i), at=at + timedelta(seconds=1), kind=kind, data=data))
    if length_s is not None:
        ops.append(CallEnded(sid=sid(i), at=at + timedelta(seconds=length_s), outcome="hangup"))
    return ops


@pytest.fixture
async def calls(database: Database) -> Database:
    """Six calls: durations, latencies, faults and barge-ins chosen to tell sorts apart."""
    await write(
        database,
        *call(1, T0, 60, latencies=[200.0, 350.0]),
        *call(
            2,
            T0 + timedelta(minutes=5),
            30,
            latencies=[500.0],
            events=[("barge_in", {"reaction_ms": 180})],
        ),
        *call(
            3,
            T0 + timedelta(minutes=10),
            90,
            assistant="sales",
            events=[("provider_retry", {"provider": "deepgram"})],
        ),
        *call(4, T0 + timedelta(hours=1), None, latencies=[100.0]),  # still live
        *call(
            5,
            T0 + timedelta(days=1),
            10,
            from_number="+15559999999",
            events=[("barge_in", {"reaction_ms": 240}), ("reply_failed", {"provider": "openai"})],
        ),
        *call(6, T0 + timedelta(days=1, hours=2), 45, latencies=[260.0]),
    )
    return database


async def sids(db: Database, **query: Any) -> list[int]:
    page = await search_calls(db, CallQuery(**query))
    return [int(row.sid[2:], 16) for row in page.rows]


async def test_filters(calls: Database) -> None:
    assert await sids(calls) == [6, 5, 4, 3, 2, 1]  # newest first
    assert await sids(calls, number="+15559999999") == [5]
    assert await sids(calls, number="+15550100000") == [6, 5, 4, 3, 2, 1]  # the called side
    assert await sids(calls, assistant="sales") == [3]
    assert await sids(calls, status="in-progress") == [4]
    assert await sids(calls, had_fault=True) == [5, 3]
    assert await sids(calls, had_fault=False) == [6, 4, 2, 1]
    assert await sids(calls, had_barge_in=True) == [5, 2]
    assert await sids(calls, had_barge_in=True, had_fault=False) == [2]
    day = T0.replace(hour=0)
    assert await sids(calls, since=day, until=day + timedelta(days=1)) == [4, 3, 2, 1]


async def test_sorts_put_the_unmeasured_last(calls: Database) -> None:
    assert await sids(calls, sort="duration") == [3, 1, 6, 2, 5, 4]
    assert await sids(calls, sort="duration", descending=False) == [5, 2, 6, 1, 3, 4]
    assert await sids(calls, sort="latency") == [2, 1, 6, 4, 5, 3]
    assert await sids(calls, sort="latency", descending=False) == [4, 6, 1, 2, 5, 3]
    assert await sids(calls, sort="started", descending=False) == [1, 2, 3, 4, 5, 6]


async def test_a_row_carries_its_figures_and_pages_add_up(calls: Database) -> None:
    page = await search_calls(calls, CallQuery(limit=2, offset=2))
    assert [r.sid for r in page.rows] == [sid(4), sid(3)]
    assert (page.total, page.next_offset, page.prev_offset) == (6, 4, 0)
    (five,) = (await search_calls(calls, CallQuery(number="+15559999999"))).rows
    assert (five.turns, five.barge_ins, five.faults, five.duration_s) == (0, 1, 1, 10.0)
    (one,) = (await search_calls(calls, CallQuery(number="+15550000001"))).rows
    assert (one.turns, one.slowest_ms, one.barge_ins, one.faults) == (2, 350.0, 0, 0)


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)


async def test_a_page_costs_two_statements_whatever_its_size(calls: Database) -> None:
    await search_calls(calls, CallQuery(limit=1))  # warm the connection (pragmas)
    for limit in (1, 6):
        with statements(calls) as seen:
            page = await search_calls(calls, CallQuery(limit=limit, sort="latency"))
        assert len(page.rows) == limit
        assert len(seen) == 2, seen  # COUNT, then the page: no query per row


async def test_overview(calls: Database) -> None:
    overview = await load_overview(calls, T0 - timedelta(hours=1), T0 + timedelta(days=2))
    assert overview.calls_per_hour == [
        (T0, 3),
        (T0 + timedelta(hours=1), 1),
        (T0 + timedelta(days=1), 1),
        (T0 + timedelta(days=1, hours=2), 1),
    ]
    assert overview.total_calls == 6
    first = overview.turn_latency[0]
    assert (first.hour, first.count) == (T0, 3)  # 200, 350, 500 ms
    assert (first.p50_ms, first.p95_ms) == (355.0, 505.0)  # the middle of their 10 ms bins
    assert [(p.hour, p.p50_ms) for p in overview.barge_in_reaction] == [
        (T0, 185.0),
        (T0 + timedelta(days=1), 245.0),
    ]
    assert sorted(overview.faults) == [
        ("deepgram", "provider_retry", 1),
        ("openai", "reply_failed", 1),
    ]
    later = await load_overview(calls, T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert later.total_calls == 2 and [p.count for p in later.turn_latency] == [1]


def test_percentiles_of_bins() -> None:
    bins = Counter({0: 50, 10: 45, 50: 5})  # 100 values: 0–9 ms ×50, 100–109 ×45, 500–509 ×5
    assert percentile_of_bins(bins, 0.5) == 5.0
    assert percentile_of_bins(bins, 0.51) == 105.0
    assert percentile_of_bins(bins, 0.95) == 105.0
    assert percentile_of_bins(bins, 0.96) == 505.0
    with pytest.raises(ValueError):
        percentile_of_bins(Counter(), 0.5)
