"""A batch written at once (prebuilt statements, executemany) leaves exactly the rows that
writing its ops one at a time leaves, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from callbridge.store.database import Database
from callbridge.store.models import Call, Event, Recording, Turn
from callbridge.store.ops import (
    CallEnded,
    CallSeen,
    EventHappened,
    RecordingEnded,
    RecordingStarted,
    StatusChanged,
    StoreOp,
    TurnEnded,
    apply,
    apply_batch,
)

T0 = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def turn(sid: str, seq: int, **latency: float) -> TurnEnded:
    return TurnEnded(sid=sid, seq=seq, role="user" if seq % 2 else "assistant", kind="",
                     text=f"turn {seq}", heard_text=None, interrupted=seq == 2,
                     started_at=at(seq), ended_at=at(seq + 0.5), latency_ms=latency)


def script(a: str, b: str) -> list[StoreOp]:
    """Two calls' ops interleaved, in an order Twilio and the stream can produce."""
    return [
        EventHappened(a, at(0.1), "gap", {"ms": 80}),  # before anything else names a
        StatusChanged(a, at(0.2), "ringing", {"CallStatus": "ringing"}),
        CallSeen(a, at(0.3), stream_sid="MZ" + a, from_number="+15550001", to_number="+15550002",
                 direction="inbound", status="in-progress", assistant="billing", instance="i1"),
        turn(a, 1, stt=120.0, first_audio=300.0, first_frame=420.0),
        RecordingStarted(a, at(0.4), "/data/a.wav", 8000, 2),
        RecordingStarted(a, at(0.5), "/data/other.wav", 16000, 1),  # the first one stays
        CallSeen(b, at(0.6), from_number="+15550003"),
        turn(a, 2),
        EventHappened(b, at(0.7), "barge_in", {"heard": "wait"}),
        StatusChanged(a, at(0.8), "completed"),
        StatusChanged(a, at(0.9), "in-progress"),  # late and out of order: ignored
        CallEnded(a, at(1.0), "hangup"),
        CallEnded(b, at(1.1), "transferred"),
        RecordingEnded(a, 12_000),
        RecordingEnded("CA-never-seen", 5),  # names no call: creates none
    ]


async def rows(database: Database, sids: tuple[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every row about ``sids``, with the sids replaced by their position."""
    rename = {sid: f"call{i}" for i, sid in enumerate(sids)}

    def plain(obj: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
        row = {c.key: getattr(obj, c.key) for c in obj.__table__.columns if c.key not in drop}
        for key in ("sid", "call_sid", "stream_sid"):
            if row.get(key):
                row[key] = rename.get(row[key], row[key].replace(sids[0], "call0"))
        return row

    async with database.sessions() as session:
        calls = (await session.scalars(select(Call).where(Call.sid.in_(sids)))).all()
        events = (await session.scalars(
            select(Event).where(Event.call_sid.in_(sids)).order_by(Event.id))).all()
        turns = (await session.scalars(
            select(Turn).where(Turn.call_sid.in_(sids)).order_by(Turn.id))).all()
        recordings = (await session.scalars(
            select(Recording).where(Recording.call_sid.in_(sids)))).all()
        stray = await session.get(Call, "CA-never-seen")
    assert stray is None
    return {
        "calls": sorted((plain(c) for c in calls), key=lambda r: r["sid"]),
        "events": [plain(e, ("id",)) for e in events],
        "turns": [plain(t, ("id",)) for t in turns],
        "recordings": [plain(r) for r in recordings],
    }


async def test_a_batch_leaves_what_its_ops_one_by_one_leave(database: Database) -> None:
    one_by_one = ("CA" + "1" * 32, "CA" + "2" * 32)
    batched = ("CA" + "3" * 32, "CA" + "4" * 32)
    for op in script(*one_by_one):
        async with database.sessions() as session, session.begin():
            await apply(session, op)
    async with database.sessions() as session, session.begin():
        await apply_batch(session, script(*batched))

    expected = await rows(database, one_by_one)
    assert await rows(database, batched) == expected
    call0 = expected["calls"][0]
    assert (call0["status"], call0["outcome"], call0["assistant"]) == (
        "completed", "hangup", "billing")
    assert call0["started_at"].replace(tzinfo=UTC) == at(0.1)  # the first op's time
    assert [e["kind"] for e in expected["events"]] == ["gap", "status", "barge_in", "status",
                                                       "status"]
    assert expected["recordings"][0]["path"] == "/data/a.wav"
    assert expected["recordings"][0]["duration_ms"] == 12_000
    assert expected["turns"][0]["first_frame_ms"] == 420.0
