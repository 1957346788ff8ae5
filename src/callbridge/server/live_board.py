"""The calls this process is serving right now, as the dashboard's live view shows them.

``CallLog`` feeds it from the call's own tasks (a call begins, a turn ends, bot audio
goes out, a barge-in, the call ends); each feed is an attribute store, so a 20 ms frame
pays nothing. The phase is read off those times when someone looks, not tracked:

- *speaking*: bot audio went out in the last ``SPEAKING_HOLD_S`` (it is sent ≤ 200 ms
  ahead of playback) and no barge-in came after it;
- *thinking*: the caller's turn ended after (or with) the bot's last turn and after its
  last audio;
- *listening*: otherwise.

It is per process: with several instances each shows the calls it serves (DESIGN §10);
the calls list, read from the shared store, shows them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from callbridge.clock import Clock, MonotonicClock

__all__ = ["SPEAKING_HOLD_S", "LiveBoard", "LiveRow"]

SPEAKING_HOLD_S = 0.4


@dataclass(frozen=True, slots=True)
class LiveRow:
    sid: str
    from_number: str
    to_number: str
    direction: str
    started_at: datetime
    duration_s: float
    phase: str
    last_latency_ms: float | None
    turns: int

    def as_json(self) -> dict[str, object]:
        """What the page's script gets: no duration (it ticks the clock itself)."""
        return {
            "sid": self.sid,
            "from": self.from_number,
            "to": self.to_number,
            "direction": self.direction,
            "startedAtMs": int(self.started_at.timestamp() * 1000),
            "phase": self.phase,
            "lastLatencyMs": self.last_latency_ms,
            "turns": self.turns,
        }


class _Call:
    __slots__ = (
        "barge_in_at",
        "bot_audio_at",
        "bot_turn_at",
        "direction",
        "from_number",
        "last_latency_ms",
        "mono0",
        "sid",
        "started_at",
        "to_number",
        "turns",
        "user_turn_at",
    )

    def __init__(
        self, sid: str, from_number: str, to_number: str, direction: str, mono0: float
    ) -> None:
        self.sid = sid
        self.from_number = from_number
        self.to_number = to_number
        self.direction = direction
        self.mono0 = mono0
        self.started_at = datetime.now(UTC)
        self.bot_audio_at = -1.0
        self.bot_turn_at = -1.0
        self.user_turn_at = -1.0
        self.barge_in_at = -1.0
        self.last_latency_ms: float | None = None
        self.turns = 0


class LiveBoard:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or MonotonicClock()
        self._calls: dict[str, _Call] = {}

    def begin(
        self, sid: str, *, from_number: str = "", to_number: str = "", direction: str = "inbound"
    ) -> None:
        self._calls[sid] = _Call(sid, from_number, to_number, direction, self._clock.now())

    def end(self, sid: str) -> None:
        self._calls.pop(sid, None)

    def bot_audio(self, sid: str) -> None:
        call = self._calls.get(sid)
        if call is not None:
            call.bot_audio_at = self._clock.now()

    def barge_in(self, sid: str) -> None:
        call = self._calls.get(sid)
        if call is not None:
            call.barge_in_at = self._clock.now()

    def turn(self, sid: str, role: str, latency_ms: dict[str, float]) -> None:
        call = self._calls.get(sid)
        if call is None:
            return
        now = self._clock.now()
        call.turns += 1
        if role == "user":
            call.user_turn_at = now
            return
        call.bot_turn_at = now
        latency = latency_ms.get("first_frame", latency_ms.get("first_audio"))
        if latency is not None:
            call.last_latency_ms = round(latency, 1)

    def __len__(self) -> int:
        return len(self._calls)

    def rows(self) -> list[LiveRow]:
        """Oldest call first, so rows keep their place while calls come and go."""
        now = self._clock.now()
        rows = [
            LiveRow(
                sid=c.sid,
                from_number=c.from_number,
                to_number=c.to_number,
                direction=c.direction,
                started_at=c.started_at,
                duration_s=now - c.mono0,
                phase=_phase(c, now),
                last_latency_ms=c.last_latency_ms,
                turns=c.turns,
            )
            for c in self._calls.values()
        ]
        rows.sort(key=lambda r: (r.started_at, r.sid))
        return rows


def _phase(call: _Call, now: float) -> str:
    recent = call.bot_audio_at >= 0 and now - call.bot_audio_at < SPEAKING_HOLD_S
    if recent and call.bot_audio_at > call.barge_in_at:
        return "speaking"
    caller_last = call.user_turn_at >= max(call.bot_turn_at, 0.0)  # a barge-in records both
    if caller_last and call.user_turn_at > call.bot_audio_at:
        return "thinking"
    return "listening"
