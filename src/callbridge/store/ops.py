"""What the process asks the store to remember, as plain facts, and how each is written.

The call's owner task only builds one of these and drops it in the writer's queue; the
SQL happens later, on the writer's task. Every op names its call; writing one for a call
the database does not know yet creates the call's row first, because the order in which
Twilio's status callbacks, the stream and the API reach us is not fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.store.models import Call, Event, Recording, Turn

__all__ = [
    "FINAL_STATUSES",
    "CallEnded",
    "CallSeen",
    "EventHappened",
    "RecordingEnded",
    "RecordingStarted",
    "StatusChanged",
    "StoreOp",
    "TurnEnded",
    "apply",
]

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


@dataclass(frozen=True, slots=True)
class CallSeen:
    """A call began (stream started, or we placed it). Blank fields never overwrite."""

    sid: str
    at: datetime
    stream_sid: str | None = None
    from_number: str = ""
    to_number: str = ""
    direction: str | None = None
    status: str | None = None
    assistant: str = ""
    instance: str = ""  # the instance serving the stream


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """Twilio's status callback: the call's status, and an event with the details."""

    sid: str
    at: datetime
    status: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallEnded:
    sid: str
    at: datetime
    outcome: str


@dataclass(frozen=True, slots=True)
class TurnEnded:
    sid: str
    seq: int
    role: str
    kind: str
    text: str
    heard_text: str | None
    interrupted: bool
    started_at: datetime
    ended_at: datetime
    latency_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class EventHappened:
    sid: str
    at: datetime
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    sid: str
    at: datetime
    path: str
    rate_hz: int
    channels: int


@dataclass(frozen=True, slots=True)
class RecordingEnded:
    sid: str
    duration_ms: int


StoreOp = (
    CallSeen
    | StatusChanged
    | CallEnded
    | TurnEnded
    | EventHappened
    | RecordingStarted
    | RecordingEnded
)


async def apply(session: AsyncSession, op: StoreOp) -> None:
    """Write one op inside the caller's transaction."""
    match op:
        case CallSeen():
            await _ensure_call(session, op.sid, op.at)
            values: dict[str, Any] = {
                "stream_sid": op.stream_sid,
                "from_number": op.from_number,
                "to_number": op.to_number,
                "direction": op.direction,
                "assistant": op.assistant,
                "instance": op.instance,
            }
            await _update_call(session, op.sid, {k: v for k, v in values.items() if v}, op.at)
            if op.status:
                await _set_status(session, op.sid, op.status, op.at)
        case StatusChanged():
            await _ensure_call(session, op.sid, op.at)
            await _set_status(session, op.sid, op.status, op.at)
            session.add(
                Event(
                    call_sid=op.sid, at=op.at, kind="status", data={"status": op.status, **op.data}
                )
            )
        case CallEnded():
            await _ensure_call(session, op.sid, op.at)
            await _update_call(session, op.sid, {"ended_at": op.at, "outcome": op.outcome}, op.at)
            # Without status callbacks nobody else says the call is over.
            await session.execute(
                update(Call)
                .where(Call.sid == op.sid, Call.status.not_in(FINAL_STATUSES))
                .values(status="completed")
            )
        case TurnEnded():
            await _ensure_call(session, op.sid, op.started_at)
            latency = op.latency_ms
            session.add(
                Turn(
                    call_sid=op.sid,
                    seq=op.seq,
                    role=op.role,
                    kind=op.kind,
                    text=op.text,
                    heard_text=op.heard_text,
                    interrupted=op.interrupted,
                    started_at=op.started_at,
                    ended_at=op.ended_at,
                    stt_ms=latency.get("stt"),
                    first_audio_ms=latency.get("first_audio"),
                    first_frame_ms=latency.get("first_frame"),
                    latency_ms=dict(latency),
                )
            )
        case EventHappened():
            await _ensure_call(session, op.sid, op.at)
            session.add(Event(call_sid=op.sid, at=op.at, kind=op.kind, data=dict(op.data)))
        case RecordingStarted():
            await _ensure_call(session, op.sid, op.at)
            existing = await session.get(Recording, op.sid)
            if existing is None:
                session.add(
                    Recording(
                        call_sid=op.sid,
                        path=op.path,
                        rate_hz=op.rate_hz,
                        channels=op.channels,
                        created_at=op.at,
                    )
                )
        case RecordingEnded():
            await session.execute(
                update(Recording)
                .where(Recording.call_sid == op.sid)
                .values(duration_ms=op.duration_ms)
            )
    await session.flush()


async def _ensure_call(session: AsyncSession, sid: str, at: datetime) -> None:
    """Insert a bare call row unless one exists (one statement, race-free on both DBs)."""
    values = {
        "sid": sid,
        "from_number": "",
        "to_number": "",
        "direction": "inbound",
        "status": "in-progress",
        "assistant": "",
        "started_at": at,
        "updated_at": at,
    }
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect == "postgresql":
        pg = postgresql.insert(Call).values(values).on_conflict_do_nothing(index_elements=["sid"])
        await session.execute(pg)
    elif dialect == "sqlite":
        lite = sqlite.insert(Call).values(values).on_conflict_do_nothing(index_elements=["sid"])
        await session.execute(lite)
    else:  # pragma: no cover - only the two dialects above are supported
        if await session.scalar(select(Call.sid).where(Call.sid == sid)) is None:
            session.add(Call(**values))
            await session.flush()


async def _update_call(
    session: AsyncSession, sid: str, values: dict[str, Any], at: datetime
) -> None:
    await session.execute(update(Call).where(Call.sid == sid).values(**values, updated_at=at))


async def _set_status(session: AsyncSession, sid: str, status: str, at: datetime) -> None:
    """Status callbacks can arrive out of order; a final status is never undone."""
    await session.execute(
        update(Call)
        .where(Call.sid == sid, Call.status.not_in(FINAL_STATUSES))
        .values(status=status, updated_at=at)
    )
