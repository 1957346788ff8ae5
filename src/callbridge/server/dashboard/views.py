"""One call's record shaped for the page: the conversation, the waterfall, the timeline.

Pure functions of the stored rows (no I/O), so their rules are tested with plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from callbridge.store.models import Event, Turn, utc
from callbridge.store.search import BARGE_IN_KINDS, FAULT_KINDS

__all__ = [
    "STAGES",
    "Bubble",
    "Stage",
    "TimelineMark",
    "Waterfall",
    "conversation",
    "timeline",
    "waterfall",
]

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("endpoint", ()),  # the origin: every stored figure counts from the endpoint
    ("STT final", ("stt",)),
    ("LLM first token", ("llm_first_token", "llm_ttft", "first_token")),
    ("first sentence", ("first_sentence", "first_segment")),
    ("TTS first audio", ("first_audio",)),
    ("first frame sent", ("first_frame",)),
    ("first frame played (mark)", ("first_played", "played", "first_mark")),
)
"""The turn's milestones, in order, and the ``latency_ms`` keys that may hold each."""

ENDPOINTING_KEYS = ("endpointing", "endpoint", "last_word")
"""The caller's last word → endpoint, when the engine stores it (drawn before zero)."""

_PRESSED = re.compile(r"\(pressed ([0-9A-D*#]+)\)\s*$")


@dataclass(frozen=True, slots=True)
class Bubble:
    seq: int
    role: str
    kind: str
    heard: str  # what the caller heard (all of it unless interrupted)
    unheard: str  # the part cut off by a barge-in
    interrupted: bool
    dtmf: str | None
    offset_s: float  # from the start of the call (and of its recording)
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class Stage:
    label: str
    key: str | None  # the stored key it came from
    at_ms: float | None  # from the endpoint; None = not measured
    start_ms: float  # where its bar starts (the previous measured milestone)


@dataclass(frozen=True, slots=True)
class Waterfall:
    seq: int
    endpointing_ms: float | None
    stages: Sequence[Stage]
    extra: Mapping[str, float]  # stored figures that are no milestone (speculated_ms…)
    span_ms: float  # the scale: from −endpointing to the last milestone

    def left_pct(self, ms: float) -> float:
        origin = self.endpointing_ms or 0.0
        return round(100 * (ms + origin) / self.span_ms, 2) if self.span_ms else 0.0

    def width_pct(self, start_ms: float, end_ms: float) -> float:
        return max(0.5, round(100 * (end_ms - start_ms) / self.span_ms, 2)) if self.span_ms else 0


@dataclass(frozen=True, slots=True)
class TimelineMark:
    offset_s: float
    kind: str
    category: str  # barge-in, fault, retry, gap, status, other
    detail: str
    left_pct: float


def conversation(turns: Sequence[Turn], call_started: datetime) -> list[Bubble]:
    bubbles = []
    for turn in turns:
        text = turn.text or ""
        heard, unheard = text, ""
        if turn.interrupted:
            heard = turn.heard_text or ""
            unheard = text[len(heard) :] if text.startswith(heard) else text
            unheard = unheard.strip()
        match = _PRESSED.search(text) if turn.role == "user" else None
        started = utc(turn.started_at)
        assert started is not None
        bubbles.append(
            Bubble(
                seq=turn.seq,
                role=turn.role,
                kind=turn.kind,
                heard=heard.strip(),
                unheard=unheard,
                interrupted=turn.interrupted,
                dtmf=match.group(1) if match else None,
                offset_s=max(0.0, (started - call_started).total_seconds()),
                latency_ms=turn.first_frame_ms,
            )
        )
    return bubbles


def waterfall(turn: Turn) -> Waterfall | None:
    """The turn's milestones from its stored ``latency_ms``; None if it has none."""
    stored = {k: float(v) for k, v in (turn.latency_ms or {}).items() if _number(v)}
    used: set[str] = set()
    stages: list[Stage] = []
    previous = 0.0
    for label, keys in STAGES:
        if not keys:
            stages.append(Stage(label, None, 0.0, 0.0))
            continue
        key = next((k for k in keys if k in stored), None)
        at = stored[key] if key is not None else None
        if key is not None:
            used.add(key)
        stages.append(Stage(label, key, at, min(previous, at) if at is not None else previous))
        if at is not None:
            previous = max(previous, at)
    endpointing_key = next((k for k in ENDPOINTING_KEYS if k in stored), None)
    endpointing = stored[endpointing_key] if endpointing_key else None
    if endpointing_key:
        used.add(endpointing_key)
    if not used:
        return None
    extra = {k: v for k, v in stored.items() if k not in used}
    return Waterfall(
        seq=turn.seq,
        endpointing_ms=endpointing,
        stages=stages,
        extra=extra,
        span_ms=(endpointing or 0.0) + previous,
    )


def timeline(
    events: Sequence[Event], call_started: datetime, duration_s: float
) -> list[TimelineMark]:
    span = max(duration_s, 0.001)
    marks = []
    for event in events:
        at = utc(event.at)
        assert at is not None
        offset = max(0.0, (at - call_started).total_seconds())
        marks.append(
            TimelineMark(
                offset_s=offset,
                kind=event.kind,
                category=_category(event.kind),
                detail=_detail(event.data or {}),
                left_pct=round(min(100.0, 100 * offset / span), 2),
            )
        )
    return marks


def _category(kind: str) -> str:
    if kind in BARGE_IN_KINDS:
        return "barge-in"
    if kind == "provider_retry":
        return "retry"
    if kind in FAULT_KINDS:
        return "fault"
    if kind in ("gap", "backlog"):
        return "gap"
    if kind == "status":
        return "status"
    return "other"


def _detail(data: Mapping[str, Any]) -> str:
    parts = []
    if "reaction_ms" in data:
        parts.append(f"reaction {data['reaction_ms']} ms")
    parts.extend(f"{k}={v}" for k, v in data.items() if k != "reaction_ms")
    return ", ".join(parts)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
