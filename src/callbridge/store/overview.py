"""The overview's figures, aggregated by the database so the rows never reach Python.

Calls per hour is a ``GROUP BY`` hour. Percentiles need the values, and neither SQLite
nor a portable SQL has them: the database counts turns (and barge-ins) per hour in
10 ms bins, and Python reads p50/p95 off those few thousand counts — exact to the bin,
whatever the number of calls.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, func, select

from callbridge.store.database import Database
from callbridge.store.models import Call, Event, Turn
from callbridge.store.search import FAULT_KINDS

__all__ = [
    "BIN_MS",
    "HourPercentiles",
    "Overview",
    "hours_between",
    "load_overview",
    "percentile_of_bins",
]

BIN_MS = 10


@dataclass(frozen=True, slots=True)
class HourPercentiles:
    hour: datetime
    count: int
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True)
class Overview:
    since: datetime
    until: datetime
    calls_per_hour: Sequence[tuple[datetime, int]]
    turn_latency: Sequence[HourPercentiles]  # endpoint → first frame sent
    barge_in_reaction: Sequence[HourPercentiles]  # speech onset → clear
    faults: Sequence[tuple[str, str, int]]  # (provider or "-", event kind, count)

    @property
    def total_calls(self) -> int:
        return sum(n for _, n in self.calls_per_hour)


async def load_overview(database: Database, since: datetime, until: datetime) -> Overview:
    sqlite = database.is_sqlite
    async with database.sessions() as session:
        hour = _hour(Call.started_at, sqlite)
        calls = await session.execute(
            select(hour, func.count(Call.sid))
            .where(Call.started_at >= since, Call.started_at < until)
            .group_by(hour)
        )
        calls_per_hour = sorted((_as_hour(h), int(n)) for h, n in calls.all())

        turn_hour = _hour(Turn.started_at, sqlite)
        turn_bin = cast(Turn.first_frame_ms / BIN_MS, Integer)
        turns = await session.execute(
            select(turn_hour, turn_bin, func.count())
            .where(
                Turn.started_at >= since,
                Turn.started_at < until,
                Turn.first_frame_ms.is_not(None),
            )
            .group_by(turn_hour, turn_bin)
        )
        turn_latency = _percentiles(turns.all())

        reaction = Event.data["reaction_ms"].as_float()
        event_hour = _hour(Event.at, sqlite)
        barge_bin = cast(reaction / BIN_MS, Integer)
        barges = await session.execute(
            select(event_hour, barge_bin, func.count())
            .where(Event.kind == "barge_in", Event.at >= since, Event.at < until, reaction > 0)
            .group_by(event_hour, barge_bin)
        )
        barge_in_reaction = _percentiles(barges.all())

        provider = Event.data["provider"].as_string()
        faults = await session.execute(
            select(provider, Event.kind, func.count())
            .where(Event.kind.in_(sorted(FAULT_KINDS)), Event.at >= since, Event.at < until)
            .group_by(provider, Event.kind)
        )
        fault_rows = sorted(
            ((str(p or "-"), str(k), int(n)) for p, k, n in faults.all()), key=lambda r: -r[2]
        )
    return Overview(
        since=since,
        until=until,
        calls_per_hour=calls_per_hour,
        turn_latency=turn_latency,
        barge_in_reaction=barge_in_reaction,
        faults=fault_rows,
    )


def percentile_of_bins(bins: Counter[int], q: float) -> float:
    """The ``q`` quantile (0–1) of values counted in ``BIN_MS`` bins: the bin's middle."""
    total = sum(bins.values())
    if total == 0:
        raise ValueError("no values")
    rank = max(1, int(-(-q * total // 1)))  # ceil(q * total), at least the first value
    seen = 0
    for b in sorted(bins):
        seen += bins[b]
        if seen >= rank:
            return b * BIN_MS + BIN_MS / 2
    raise AssertionError("unreachable: rank ≤ total")


def _percentiles(rows: Sequence[Any]) -> list[HourPercentiles]:
    per_hour: dict[datetime, Counter[int]] = defaultdict(Counter)
    for hour, b, n in rows:
        per_hour[_as_hour(hour)][int(b or 0)] += int(n)
    return [
        HourPercentiles(
            hour=h,
            count=sum(bins.values()),
            p50_ms=percentile_of_bins(bins, 0.50),
            p95_ms=percentile_of_bins(bins, 0.95),
        )
        for h, bins in sorted(per_hour.items())
    ]


def _hour(column: Any, sqlite: bool) -> ColumnElement[Any]:
    if sqlite:
        # SQLAlchemy stores "YYYY-MM-DD HH:MM:SS.ffffff": the hour is its first 13
        # characters (30 % cheaper than strftime over a week of turns).
        return func.substr(column, 1, 13)
    return func.date_trunc("hour", column)


def _as_hour(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(since: datetime, until: datetime) -> list[datetime]:
    """Every hour in the window, so a chart shows quiet hours as zero, not as a gap."""
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while start < until:
        hours.append(start)
        start += timedelta(hours=1)
    return hours
