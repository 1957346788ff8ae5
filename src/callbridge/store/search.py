"""The calls list an operator browses: filtered, sorted, paged, in a fixed number of queries.

One page is two statements whatever its size: a ``COUNT`` and a ``SELECT`` whose per-row
figures (turns, slowest turn, barge-ins, faults) are correlated subqueries the database
answers from indexes (``0002_dashboard_indexes``), never a query per row from Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Float, Select, and_, cast, func, or_, select

from callbridge.store.database import Database
from callbridge.store.models import Call, Event, Turn, utc
from callbridge.store.repository import Page

__all__ = [
    "BARGE_IN_KINDS",
    "FAULT_KINDS",
    "CallQuery",
    "CallSummary",
    "SortKey",
    "SummaryPage",
    "search_calls",
]

FAULT_KINDS = frozenset(
    {
        "reply_failed",
        "provider_retry",
        "runner_error",
        "twilio_rest_error",
        "mark_timeout",
        "stt_timeout",
        "recording_error",
        "backlog",
        "playout_drops",
    }
)
"""Event kinds that mean something went wrong on the call (the 'had a fault' filter)."""

BARGE_IN_KINDS = frozenset({"barge_in"})

SortKey = Literal["started", "duration", "latency"]
MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class CallQuery:
    since: datetime | None = None
    until: datetime | None = None
    number: str | None = None  # caller or called, exact
    status: str | None = None
    assistant: str | None = None
    had_fault: bool | None = None
    had_barge_in: bool | None = None
    sort: SortKey = "started"
    descending: bool = True
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class CallSummary:
    sid: str
    from_number: str
    to_number: str
    direction: str
    status: str
    assistant: str
    outcome: str | None
    started_at: datetime
    ended_at: datetime | None
    turns: int
    slowest_ms: float | None  # the call's slowest turn, endpoint → first frame sent
    barge_ins: int
    faults: int

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


SummaryPage = Page[CallSummary]


async def search_calls(database: Database, query: CallQuery) -> SummaryPage:
    limit = max(1, min(query.limit, MAX_PAGE))
    offset = max(0, query.offset)
    conditions = _conditions(query)
    statement = _page_statement(query, conditions, limit, offset, database.is_sqlite)
    async with database.sessions() as session:
        total = await session.scalar(select(func.count(Call.sid)).where(*conditions)) or 0
        result = await session.execute(statement)
        rows = [_summary(row) for row in result.all()]
    return Page(rows=rows, total=int(total), limit=limit, offset=offset)


def _conditions(query: CallQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.since is not None:
        conditions.append(Call.started_at >= query.since)
    if query.until is not None:
        conditions.append(Call.started_at < query.until)
    if query.number:
        conditions.append(or_(Call.from_number == query.number, Call.to_number == query.number))
    if query.status:
        conditions.append(Call.status == query.status)
    if query.assistant:
        conditions.append(Call.assistant == query.assistant)
    for wanted, kinds in ((query.had_fault, FAULT_KINDS), (query.had_barge_in, BARGE_IN_KINDS)):
        if wanted is None:
            continue
        having = Call.sid.in_(select(Event.call_sid).where(Event.kind.in_(sorted(kinds))))
        conditions.append(having if wanted else ~having)
    return conditions


def _page_statement(
    query: CallQuery,
    conditions: list[ColumnElement[bool]],
    limit: int,
    offset: int,
    is_sqlite: bool,
) -> Select[Any]:
    """The page's SIDs first (a deep page skips rows, not subqueries), then its figures."""
    turns = select(func.count(Turn.id)).where(Turn.call_sid == Call.sid).scalar_subquery()
    slowest = (
        select(func.max(Turn.first_frame_ms)).where(Turn.call_sid == Call.sid).scalar_subquery()
    )
    barge_ins = _event_count(BARGE_IN_KINDS)
    faults = _event_count(FAULT_KINDS)
    if query.sort == "duration":
        key: ColumnElement[Any] = _duration(is_sqlite)
    elif query.sort == "latency":
        key = slowest
    else:
        key = Call.started_at.expression
    order: list[ColumnElement[Any]] = [
        key.desc() if query.descending else key.asc(),
        Call.sid.desc(),
    ]
    if query.sort != "started":
        # Unfinished calls and calls without a measured turn go last either way (not for
        # the start time: never NULL, and the extra term would keep its index unused).
        order.insert(0, key.is_(None))
    page = (
        select(Call.sid).where(*conditions).order_by(*order).limit(limit).offset(offset)
    ).subquery()
    return (
        select(Call, turns, slowest, barge_ins, faults)
        .join(page, page.c.sid == Call.sid)
        .order_by(*order)
    )


def _event_count(kinds: frozenset[str]) -> Any:
    return (
        select(func.count(Event.id))
        .where(and_(Event.call_sid == Call.sid, Event.kind.in_(sorted(kinds))))
        .scalar_subquery()
    )


def _duration(is_sqlite: bool) -> ColumnElement[Any]:
    if is_sqlite:
        return func.julianday(Call.ended_at) - func.julianday(Call.started_at)
    return cast(func.extract("epoch", Call.ended_at - Call.started_at), Float)


def _summary(row: Any) -> CallSummary:
    call, turns, slowest, barge_ins, faults = row
    started = utc(call.started_at)
    assert started is not None
    return CallSummary(
        sid=call.sid,
        from_number=call.from_number,
        to_number=call.to_number,
        direction=call.direction,
        status=call.status,
        assistant=call.assistant,
        outcome=call.outcome,
        started_at=started,
        ended_at=utc(call.ended_at),
        turns=int(turns or 0),
        slowest_ms=float(slowest) if slowest is not None else None,
        barge_ins=int(barge_ins or 0),
        faults=int(faults or 0),
    )
