"""What a replay starts from and what it compares: one call's record as plain data.

A stored call gives its stereo recording (the caller's leg is what gets replayed), its
key presses (the engine records each as a caller turn ending "(pressed N)" at the moment
the press arrived) and its turns and events. The replayed call is read back the same
way, from the replay server's store or from ``/api/calls/{sid}``, so both sides of the
comparison are the same shape.
"""

from __future__ import annotations

import re
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from callbridge.errors import CallbridgeError
from callbridge.simulator.replay_track import CallerTurnTiming, Track, split_stereo
from callbridge.store.database import Database
from callbridge.store.models import utc
from callbridge.store.repository import CallDetail, get_call

__all__ = [
    "FAULT_KINDS",
    "CallSide",
    "EventView",
    "ReplayError",
    "StoredCall",
    "TurnView",
    "load_stored_call",
    "side_from_api",
    "side_from_detail",
]

FAULT_KINDS = frozenset(
    {
        "provider_retry",
        "provider_failed",
        "reply_failed",
        "stt_lost",
        "stt_timeout",
        "mark_timeout",
        "transfer_failed",
        "backlog",
        "bad_frame",
        "runner_error",
        "twilio_rest_error",
        "recording_error",
        "playout_drops",
        "hold",
    }
)
"""Event kinds that mean something went wrong on the call (the README's fault table).
Inbound ``gap`` events are left out: they say the caller's frames came late (the line,
or a loaded machine running the simulator), not what the assistant did."""

_PRESSED = re.compile(r"\(pressed ([0-9*#A-Da-d])\)\s*$")


class ReplayError(CallbridgeError):
    """The call cannot be replayed as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class TurnView:
    seq: int
    role: str
    kind: str
    text: str
    heard_text: str | None
    interrupted: bool
    offset_s: float
    first_frame_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "role": self.role,
            "kind": self.kind,
            "text": self.text,
            "heard_text": self.heard_text,
            "interrupted": self.interrupted,
            "offset_s": round(self.offset_s, 3),
            "first_frame_ms": self.first_frame_ms,
        }


@dataclass(frozen=True, slots=True)
class EventView:
    offset_s: float
    kind: str
    data: Mapping[str, Any]


@dataclass
class CallSide:
    """One of the two calls, as the comparison sees it."""

    label: str
    sid: str
    assistant: str
    outcome: str | None
    duration_s: float | None
    turns: list[TurnView]
    events: list[EventView] | None  # None: the record was not reachable (``--url``)
    caller_turns: list[CallerTurnTiming] = field(default_factory=list)

    @property
    def barge_in_ms(self) -> list[float] | None:
        """Reaction (speech onset → clear) of each barge-in the engine recorded."""
        if self.events is None:
            return None
        return [
            float(e.data.get("reaction_ms") or 0.0) for e in self.events if e.kind == "barge_in"
        ]

    @property
    def faults(self) -> list[str] | None:
        if self.events is None:
            return None
        return [e.kind for e in self.events if e.kind in FAULT_KINDS]


@dataclass(frozen=True, slots=True)
class StoredCall:
    side: CallSide
    track: Track
    presses: Sequence[tuple[int, str]]  # (offset ms, digit), in order
    recording_path: Path


async def load_stored_call(database: Database, sid: str) -> StoredCall:
    """The call ``sid`` with its recording; ``ReplayError`` naming what is missing."""
    state = await database.schema_state()
    if state.current is None:
        raise ReplayError(f"no call record at {database.safe_url}: `callbridge serve` creates it")
    detail = await get_call(database, sid)
    if detail is None:
        raise ReplayError(
            f"no call {sid} in the record at {database.safe_url} (`callbridge calls` lists them)"
        )
    if detail.recording is None:
        raise ReplayError(
            f"call {sid} has no recording, so there is no caller audio to replay: set "
            "`recordingEnabled: true` in the assistant to record calls (README: Replaying a call)"
        )
    path = Path(detail.recording.path)
    track = _read_track(path, sid)
    origin = utc(detail.recording.created_at) or utc(detail.call.started_at)
    side = side_from_detail(detail, "original", origin)
    presses = [
        (round(t.offset_s * 1000 + _ended_after_s(detail, t.seq) * 1000), m.group(1))
        for t in side.turns
        if t.role == "user" and (m := _PRESSED.search(t.text))
    ]
    return StoredCall(side=side, track=track, presses=presses, recording_path=path)


def side_from_detail(detail: CallDetail, label: str, origin: datetime | None = None) -> CallSide:
    """``origin``: time zero of the offsets (the recording's start; else the call's)."""
    call = detail.call
    zero = origin or utc(call.started_at)
    started, ended = utc(call.started_at), utc(call.ended_at)
    turns = [
        TurnView(
            seq=t.seq,
            role=t.role,
            kind=t.kind or "",
            text=t.text or "",
            heard_text=t.heard_text,
            interrupted=bool(t.interrupted),
            offset_s=_offset(utc(t.started_at), zero),
            first_frame_ms=t.first_frame_ms,
        )
        for t in detail.turns
    ]
    events = [
        EventView(_offset(utc(e.at), zero), e.kind, dict(e.data or {})) for e in detail.events
    ]
    return CallSide(
        label=label,
        sid=call.sid,
        assistant=call.assistant,
        outcome=call.outcome,
        duration_s=(ended - started).total_seconds() if started and ended else None,
        turns=turns,
        events=events,
    )


def side_from_api(body: Mapping[str, Any], label: str) -> CallSide:
    """The same, from ``GET /api/calls/{sid}`` (a server reached with ``--url``)."""
    call = body["call"]
    zero = datetime.fromisoformat(call["startedAt"])
    turns = [
        TurnView(
            seq=int(t["seq"]),
            role=str(t["role"]),
            kind=str(t.get("kind") or ""),
            text=str(t.get("text") or ""),
            heard_text=t.get("heardText"),
            interrupted=bool(t.get("interrupted")),
            offset_s=_offset(datetime.fromisoformat(t["startedAt"]), zero),
            first_frame_ms=(t.get("latencyMs") or {}).get("first_frame"),
        )
        for t in body.get("turns", [])
    ]
    events = [
        EventView(
            _offset(datetime.fromisoformat(e["at"]), zero), str(e["kind"]), e.get("data") or {}
        )
        for e in body.get("events", [])
    ]
    return CallSide(
        label=label,
        sid=str(call["sid"]),
        assistant=str(call.get("assistant") or ""),
        outcome=call.get("outcome"),
        duration_s=call.get("durationS"),
        turns=turns,
        events=events,
    )


# ------------------------------------------------------------------ private


def _read_track(path: Path, sid: str) -> Track:
    try:
        with wave.open(str(path), "rb") as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            raw = w.readframes(w.getnframes())
    except FileNotFoundError as exc:
        raise ReplayError(
            f"the recording of call {sid} is gone ({path}): removed by hand or by "
            "CALLBRIDGE_RECORDING_RETENTION_DAYS, or written on another machine"
        ) from exc
    except (OSError, wave.Error, EOFError) as exc:
        raise ReplayError(f"cannot read the recording of call {sid} ({path}): {exc}") from exc
    if shape != (2, 2, 8000):
        raise ReplayError(
            f"the recording of call {sid} ({path}) is {shape[0]} channel(s), "
            f"{8 * shape[1]}-bit, {shape[2]} Hz; expected callbridge's stereo 16-bit 8 kHz "
            "(caller left, bot right)"
        )
    return split_stereo(raw)


def _offset(at: datetime | None, zero: datetime | None) -> float:
    if at is None or zero is None:
        return 0.0
    return (at - zero).total_seconds()


def _ended_after_s(detail: CallDetail, seq: int) -> float:
    """A press turn ends when the key arrived; its start may be the words before it."""
    turn = next(t for t in detail.turns if t.seq == seq)
    started, ended = utc(turn.started_at), utc(turn.ended_at)
    return (ended - started).total_seconds() if started and ended else 0.0
