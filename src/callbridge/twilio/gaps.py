"""Inbound gap detection: where the caller's audio stalled on its way to us.

Two clocks tell two stories. Twilio's ``timestamp`` jumping by more than 100 ms means
audio was missing at the source (Twilio's side); arrival times more than 100 ms apart
with contiguous timestamps means the network or our event loop held frames back (they
then arrive in a burst). Both are counted per call and reported to the caller of
``observe`` for logging.

Reports are coalesced: at most one per kind per ``report_every_s`` (each becomes a log
line and a stored call event). The gaps in between are still counted, and the next
report says how many it stands for, so a peer whose every frame jumps the timestamp
cannot turn 50 frames a second into 50 events a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_GAP_MS", "REPORT_EVERY_S", "Gap", "GapDetector"]

DEFAULT_GAP_MS = 100.0
REPORT_EVERY_S = 1.0
_NO_GAPS: tuple[()] = ()


@dataclass(frozen=True, slots=True)
class Gap:
    kind: Literal["timestamp", "arrival"]
    gap_ms: float
    at_timestamp_ms: int | None
    coalesced: int = 0
    """Gaps of this kind since the previous report that were counted but not reported."""


class GapDetector:
    """Feed it every inbound media frame; ``now`` is a monotonic clock in seconds."""

    __slots__ = (
        "_last_arrival",
        "_last_ts",
        "_now",
        "_reported_at",
        "_unreported",
        "arrival_gaps",
        "frames",
        "max_arrival_gap_ms",
        "max_timestamp_gap_ms",
        "reordered",
        "report_every_s",
        "threshold_ms",
        "timestamp_gaps",
    )

    def __init__(
        self,
        threshold_ms: float = DEFAULT_GAP_MS,
        now: Callable[[], float] = time.monotonic,
        report_every_s: float = REPORT_EVERY_S,
    ) -> None:
        self.threshold_ms = threshold_ms
        self.report_every_s = report_every_s
        self._now = now
        self._reported_at: dict[str, float] = {}
        self._unreported: dict[str, int] = {"timestamp": 0, "arrival": 0}
        self._last_ts: int | None = None
        self._last_arrival: float | None = None
        self.frames = 0
        self.timestamp_gaps = 0
        self.arrival_gaps = 0
        self.reordered = 0
        self.max_timestamp_gap_ms = 0.0
        self.max_arrival_gap_ms = 0.0

    def observe(self, timestamp_ms: int | None) -> list[Gap]:
        """Record one frame; return the gaps it closes that are due a report (usually none)."""
        return list(self.seen(timestamp_ms, arrival=self._now()))

    def seen(self, timestamp_ms: int | None, arrival: float) -> Sequence[Gap]:
        """``observe`` on the per-frame path: the caller read the clock already, and no
        gap due a report (nearly every frame) costs no list."""
        self.frames += 1
        gaps: list[Gap] | None = None
        if timestamp_ms is not None:
            last_ts = self._last_ts
            if last_ts is not None:
                delta = timestamp_ms - last_ts
                if delta < 0:
                    self.reordered += 1  # a late frame; keep the newest timestamp
                    timestamp_ms = last_ts
                elif delta > self.threshold_ms:
                    self.timestamp_gaps += 1
                    self.max_timestamp_gap_ms = max(self.max_timestamp_gap_ms, float(delta))
                    gaps = self._report(gaps, "timestamp", float(delta), timestamp_ms, arrival)
            self._last_ts = timestamp_ms
        last_arrival, self._last_arrival = self._last_arrival, arrival
        if last_arrival is not None:
            waited_ms = (arrival - last_arrival) * 1000.0
            if waited_ms > self.threshold_ms:
                self.arrival_gaps += 1
                self.max_arrival_gap_ms = max(self.max_arrival_gap_ms, waited_ms)
                gaps = self._report(gaps, "arrival", waited_ms, timestamp_ms, arrival)
        return _NO_GAPS if gaps is None else gaps

    def _report(
        self,
        gaps: list[Gap] | None,
        kind: Literal["timestamp", "arrival"],
        gap_ms: float,
        at_timestamp_ms: int | None,
        now: float,
    ) -> list[Gap] | None:
        last = self._reported_at.get(kind)
        if last is not None and now - last < self.report_every_s:
            self._unreported[kind] += 1
            return gaps
        self._reported_at[kind] = now
        skipped, self._unreported[kind] = self._unreported[kind], 0
        gap = Gap(kind, gap_ms, at_timestamp_ms, coalesced=skipped)
        if gaps is None:
            return [gap]
        gaps.append(gap)
        return gaps

    def summary(self) -> dict[str, float | int]:
        return {
            "frames": self.frames,
            "timestamp_gaps": self.timestamp_gaps,
            "arrival_gaps": self.arrival_gaps,
            "reordered": self.reordered,
            "max_timestamp_gap_ms": round(self.max_timestamp_gap_ms, 1),
            "max_arrival_gap_ms": round(self.max_arrival_gap_ms, 1),
        }
