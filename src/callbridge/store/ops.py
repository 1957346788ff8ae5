"""What the process asks the store to remember, as plain facts, and how each is written.

The call's owner task only builds one of these and drops it in the writer's queue; the
SQL happens later, on the writer's task. Every op names its call; writing one for a call
the database does not know yet creates the call's row first, because the order in which
Twilio's status callbacks, the stream and the API reach us is not fixed.

A batch is written with statements built once at import (compiled once, then cached by
SQLAlchemy) and executemany: one ``INSERT … ON CONFLICT DO NOTHING`` for every call the
batch names, the updates in order, then all its events and all its turns in one
``INSERT`` each. The ORM's unit of work (an object and a flush per op, an ``insert()``
built per op) was the store's whole cost at a hundred calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
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
    "apply_batch",
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


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_CALLS = _table(Call)
_EVENTS = _table(Event)
_TURNS = _table(Turn)
_RECORDINGS = _table(Recording)
_ENSURE_CALL = {
    "postgresql": postgresql.insert(_CALLS).on_conflict_do_nothing(index_elements=["sid"]),
    "sqlite": sqlite.insert(_CALLS).on_conflict_do_nothing(index_elements=["sid"]),
}
_ADD_RECORDING = {
    "postgresql": postgresql.insert(_RECORDINGS).on_conflict_do_nothing(
        index_elements=["call_sid"]),
    "sqlite": sqlite.insert(_RECORDINGS).on_conflict_do_nothing(index_elements=["call_sid"]),
}
_ADD_EVENTS = insert(_EVENTS)
_ADD_TURNS = insert(_TURNS)
_NOT_FINAL = _CALLS.c.status.not_in(FINAL_STATUSES)
# Status callbacks can arrive out of order; a final status is never undone.
_SET_STATUS = (
    update(_CALLS)
    .where(_CALLS.c.sid == bindparam("b_sid"), _NOT_FINAL)
    .values(status=bindparam("b_status"), updated_at=bindparam("b_at"))
)
_ENDED = (
    update(_CALLS)
    .where(_CALLS.c.sid == bindparam("b_sid"))
    .values(ended_at=bindparam("b_at"), outcome=bindparam("b_outcome"),
            updated_at=bindparam("b_at"))
)
# Without status callbacks nobody else says the call is over.
_COMPLETED = update(_CALLS).where(_CALLS.c.sid == bindparam("b_sid"), _NOT_FINAL).values(
    status="completed")
_RECORDING_ENDED = (
    update(_RECORDINGS)
    .where(_RECORDINGS.c.call_sid == bindparam("b_sid"))
    .values(duration_ms=bindparam("b_duration"))
)


async def apply(session: AsyncSession, op: StoreOp) -> None:
    """Write one op inside the caller's transaction."""
    await apply_batch(session, (op,))


async def apply_batch(session: AsyncSession, ops: Sequence[StoreOp]) -> None:
    """Write ``ops`` inside the caller's transaction, with the effect of writing them
    one after another: a call's row exists before anything about it, updates keep their
    order, events keep theirs."""
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect not in _ENSURE_CALL:  # pragma: no cover - only the two are supported
        raise NotImplementedError(f"store on {dialect!r}")
    bare: dict[str, datetime] = {}  # the calls named, with the time of their first op
    for op in ops:
        if not isinstance(op, RecordingEnded):
            bare.setdefault(op.sid, op.started_at if isinstance(op, TurnEnded) else op.at)
    if bare:
        await session.execute(_ENSURE_CALL[dialect], [_bare_call(sid, at)
                                                      for sid, at in bare.items()])
    events: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for op in ops:
        match op:
            case EventHappened():
                events.append({"call_sid": op.sid, "at": op.at, "kind": op.kind,
                               "data": dict(op.data)})
            case TurnEnded():
                turns.append(_turn_row(op))
            case StatusChanged():
                await _set_status(session, op.sid, op.status, op.at)
                events.append({"call_sid": op.sid, "at": op.at, "kind": "status",
                               "data": {"status": op.status, **op.data}})
            case CallSeen():
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
            case CallEnded():
                params = {"b_sid": op.sid, "b_at": op.at, "b_outcome": op.outcome}
                await session.execute(_ENDED, params)
                await session.execute(_COMPLETED, {"b_sid": op.sid})
            case RecordingStarted():
                await session.execute(_ADD_RECORDING[dialect], {
                    "call_sid": op.sid, "path": op.path, "rate_hz": op.rate_hz,
                    "channels": op.channels, "created_at": op.at})
            case RecordingEnded():
                await session.execute(_RECORDING_ENDED,
                                      {"b_sid": op.sid, "b_duration": op.duration_ms})
    if events:
        await session.execute(_ADD_EVENTS, events)
    if turns:
        await session.execute(_ADD_TURNS, turns)


def _bare_call(sid: str, at: datetime) -> dict[str, Any]:
    return {"sid": sid, "from_number": "", "to_number": "", "direction": "inbound",
            "status": "in-progress", "assistant": "", "started_at": at, "updated_at": at}


def _turn_row(op: TurnEnded) -> dict[str, Any]:
    latency = op.latency_ms
    return {
        "call_sid": op.sid, "seq": op.seq, "role": op.role, "kind": op.kind,
        "text": op.text, "heard_text": op.heard_text, "interrupted": op.interrupted,
        "started_at": op.started_at, "ended_at": op.ended_at,
        "stt_ms": latency.get("stt"), "first_audio_ms": latency.get("first_audio"),
        "first_frame_ms": latency.get("first_frame"), "latency_ms": dict(latency),
    }


async def _update_call(
    session: AsyncSession, sid: str, values: dict[str, Any], at: datetime
) -> None:
    await session.execute(
        update(_CALLS).where(_CALLS.c.sid == sid).values(**values, updated_at=at))


async def _set_status(session: AsyncSession, sid: str, status: str, at: datetime) -> None:
    await session.execute(_SET_STATUS, {"b_sid": sid, "b_status": status, "b_at": at})
