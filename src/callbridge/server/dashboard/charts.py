"""The overview's figures as the charts' columns: one x (every hour in the window, so a
quiet hour is a zero or a gap, not a missing point) and aligned y series."""

from __future__ import annotations

from typing import Any

from callbridge.store.overview import HourPercentiles, Overview, hours_between

__all__ = ["series"]


def series(overview: Overview) -> dict[str, Any]:
    hours = hours_between(overview.since, overview.until)
    calls = dict(overview.calls_per_hour)
    latency = {p.hour: p for p in overview.turn_latency}
    barge = {p.hour: p for p in overview.barge_in_reaction}
    return {
        "x": [int(h.timestamp()) for h in hours],
        "calls": [calls.get(h, 0) for h in hours],
        "latencyP50": _column(hours, latency, "p50_ms"),
        "latencyP95": _column(hours, latency, "p95_ms"),
        "bargeP50": _column(hours, barge, "p50_ms"),
        "bargeP95": _column(hours, barge, "p95_ms"),
    }


def _column(
    hours: list[Any], by_hour: dict[Any, HourPercentiles], field: str
) -> list[float | None]:
    return [getattr(by_hour[h], field) if h in by_hour else None for h in hours]
