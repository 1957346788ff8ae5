"""Reading the call record back: the pages the API and CLI show.

Reads never go through the writer: they open their own session, and in WAL mode (or on
Postgres) they do not wait for the writer's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import func, select

from callbridge.store.database import Database
from callbridge.store.models import Call, Event, Recording, Turn

R = TypeVar("R")

__all__ = ["CallDetail", "CallFilter", "CallPage", "CallRow", "Page", "get_call", "list_calls"]

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class CallFilter:
    status: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallRow:
    call: Call
    turns: int


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    """One page of a listing: its rows, the count of all, and where the neighbours start."""

    rows: Sequence[R]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.rows)
        return end if end < self.total else None

    @property
    def prev_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None


CallPage = Page[CallRow]


@dataclass(frozen=True, slots=True)
class CallDetail:
    call: Call
    turns: Sequence[Turn]
    events: Sequence[Event]
    recording: Recording | None


async def list_calls(
    database: Database, where: CallFilter = CallFilter(), *, limit: int = 50, offset: int = 0
) -> CallPage:
    """Newest first; ``limit`` is capped at ``MAX_PAGE``."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    conditions = []
    if where.status:
        conditions.append(Call.status == where.status)
    if where.from_number:
        conditions.append(Call.from_number == where.from_number)
    if where.to_number:
        conditions.append(Call.to_number == where.to_number)
    if where.since:
        conditions.append(Call.started_at >= where.since)
    turns = (
        select(func.count(Turn.id)).where(Turn.call_sid == Call.sid).correlate(Call)
    ).scalar_subquery()
    async with database.sessions() as session:
        total = await session.scalar(select(func.count(Call.sid)).where(*conditions)) or 0
        result = await session.execute(
            select(Call, turns)
            .where(*conditions)
            .order_by(Call.started_at.desc(), Call.sid.desc())
            .limit(limit)
            .offset(offset)
        )
        rows = [CallRow(call=call, turns=int(count or 0)) for call, count in result.all()]
    return Page(rows=rows, total=int(total), limit=limit, offset=offset)


async def get_call(database: Database, sid: str) -> CallDetail | None:
    async with database.sessions() as session:
        call = await session.get(Call, sid)
        if call is None:
            return None
        turns = (
            await session.scalars(select(Turn).where(Turn.call_sid == sid).order_by(Turn.seq))
        ).all()
        events = (
            await session.scalars(
                select(Event).where(Event.call_sid == sid).order_by(Event.at, Event.id)
            )
        ).all()
        recording = await session.get(Recording, sid)
    return CallDetail(call=call, turns=turns, events=events, recording=recording)
