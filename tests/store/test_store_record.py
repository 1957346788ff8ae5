"""The schema, the ops and the reads, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from callbridge.store.database import Database
from callbridge.store.models import Base
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
)
from callbridge.store.repository import CallFilter, get_call, list_calls

T0 = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)
SID = "CA" + "1" * 32


async def write(db: Database, *ops: StoreOp) -> None:
    async with db.sessions() as session, session.begin():
        for op in ops:
            await apply(session, op)


def turn(seq: int, role: str, at_s: float, **kw: object) -> TurnEnded:
    values: dict[str, object] = {
        "sid": SID,
        "seq": seq,
        "role": role,
        "kind": "answer" if role == "assistant" else "",
        "text": f"turn {seq}",
        "heard_text": None,
        "interrupted": False,
        "started_at": T0 + timedelta(seconds=at_s),
        "ended_at": T0 + timedelta(seconds=at_s + 1),
        "latency_ms": {},
    }
    values.update(kw)
    return TurnEnded(**values)  # type: ignore[arg-type]


async def test_migrations_create_exactly_the_models(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    assert diff == []
    state = await database.schema_state()
    assert state.up_to_date and state.current == "0002_instance"
    await database.migrate()  # again: a restart must be a no-op
    assert (await database.schema_state()).up_to_date


async def test_a_call_with_turns_events_and_status(database: Database) -> None:
    await write(
        database,
        CallSeen(
            sid=SID,
            at=T0,
            stream_sid="MZ" + "2" * 32,
            from_number="+15550001111",
            to_number="+15550002222",
            status="in-progress",
            assistant="keypad",
        ),
        turn(1, "assistant", 0.0, kind="greeting", latency_ms={"first_audio": 61.5}),
        turn(2, "user", 2.0, text="(pressed 1)"),
        EventHappened(sid=SID, at=T0 + timedelta(seconds=3.5), kind="barge_in", data={"n": 1}),
        turn(
            3,
            "assistant",
            3.0,
            text="Billing. Your invoices are emailed",
            heard_text="Billing.",
            interrupted=True,
            latency_ms={"stt": 0.0, "first_audio": 80.0, "first_frame": 81.0},
        ),
        StatusChanged(sid=SID, at=T0 + timedelta(seconds=9), status="completed", data={"x": "1"}),
        CallEnded(sid=SID, at=T0 + timedelta(seconds=9), outcome="goodbye"),
    )
    detail = await get_call(database, SID)
    assert detail is not None
    call = detail.call
    assert (call.from_number, call.to_number, call.assistant) == (
        "+15550001111",
        "+15550002222",
        "keypad",
    )
    assert (call.status, call.outcome) == ("completed", "goodbye")
    assert [t.seq for t in detail.turns] == [1, 2, 3]
    interrupted = detail.turns[2]
    assert interrupted.interrupted and interrupted.heard_text == "Billing."
    assert interrupted.first_frame_ms == 81.0 and interrupted.latency_ms["first_audio"] == 80.0
    assert [e.kind for e in detail.events] == ["barge_in", "status"]
    assert detail.events[1].data == {"status": "completed", "x": "1"}


async def test_ops_for_an_unknown_call_create_it(database: Database) -> None:
    """A status callback can beat the stream to the database."""
    await write(database, StatusChanged(sid=SID, at=T0, status="ringing"))
    await write(database, CallSeen(sid=SID, at=T0 + timedelta(seconds=1), from_number="+1555"))
    detail = await get_call(database, SID)
    assert detail is not None
    assert (detail.call.status, detail.call.from_number) == ("ringing", "+1555")
    assert detail.call.started_at.replace(tzinfo=UTC) == T0


async def test_a_final_status_is_never_undone(database: Database) -> None:
    await write(
        database,
        StatusChanged(sid=SID, at=T0, status="completed"),
        StatusChanged(sid=SID, at=T0, status="in-progress"),  # a late, reordered callback
    )
    detail = await get_call(database, SID)
    assert detail is not None and detail.call.status == "completed"
    assert [e.data["status"] for e in detail.events] == ["completed", "in-progress"]


async def test_call_ended_completes_a_call_nobody_else_finished(database: Database) -> None:
    await write(database, CallSeen(sid=SID, at=T0, status="in-progress"))
    await write(
        database, CallEnded(sid=SID, at=T0 + timedelta(seconds=5), outcome="caller_hung_up")
    )
    detail = await get_call(database, SID)
    assert detail is not None
    assert (detail.call.status, detail.call.outcome) == ("completed", "caller_hung_up")
    assert detail.call.ended_at is not None


async def test_recording_row_gets_its_duration_at_the_end(database: Database) -> None:
    await write(
        database,
        RecordingStarted(sid=SID, at=T0, path="/r/x.wav", rate_hz=8000, channels=2),
        RecordingStarted(sid=SID, at=T0, path="/r/x.wav", rate_hz=8000, channels=2),
    )
    detail = await get_call(database, SID)
    assert detail is not None and detail.recording is not None
    assert detail.recording.duration_ms is None
    await write(database, RecordingEnded(sid=SID, duration_ms=1234))
    detail = await get_call(database, SID)
    assert detail is not None and detail.recording is not None
    assert detail.recording.duration_ms == 1234


async def test_list_filters_and_pages_newest_first(database: Database) -> None:
    sids = [f"CA{i:032x}" for i in range(7)]
    for i, sid in enumerate(sids):
        await write(
            database,
            CallSeen(
                sid=sid,
                at=T0 + timedelta(minutes=i),
                from_number="+1555000000" + str(i % 2),
                to_number="+15559999999",
                status="completed" if i < 5 else "in-progress",
            ),
        )
    await write(database, turn(1, "user", 0.0, sid=sids[6]), turn(2, "assistant", 1, sid=sids[6]))
    first = await list_calls(database, limit=3)
    assert [r.call.sid for r in first.rows] == sids[6:3:-1]
    assert (first.total, first.next_offset) == (7, 3)
    assert first.rows[0].turns == 2 and first.rows[1].turns == 0
    last = await list_calls(database, limit=3, offset=6)
    assert [r.call.sid for r in last.rows] == [sids[0]] and last.next_offset is None
    done = await list_calls(database, CallFilter(status="completed"))
    assert {r.call.sid for r in done.rows} == set(sids[:5])
    odd = await list_calls(database, CallFilter(from_number="+15550000001"))
    assert {r.call.sid for r in odd.rows} == {sids[1], sids[3], sids[5]}
    recent = await list_calls(database, CallFilter(since=T0 + timedelta(minutes=4)))
    assert {r.call.sid for r in recent.rows} == set(sids[4:])
    capped = await list_calls(database, limit=10_000)
    assert capped.limit == 200


async def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/wal.db")
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
        assert (mode, keys) == ("wal", 1)
    finally:
        await db.dispose()
