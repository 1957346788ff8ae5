"""What happened on a call, as typed facts, and the one per-call ``emit`` they go through.

Why a leaf module: the facts come from every layer (the socket adapter, the Twilio
transport, the engine, the providers' retry policy) and DESIGN.md §2 lets those layers
import each other only one way (server → twilio, engine; engine → providers.base;
providers → audio; never engine → twilio/server/store). A module that imports nothing
of callbridge is the one place all of them may reach, so the types and the ``Emit``
protocol live here, and no producer learns who listens.

How it flows: the socket adapter asks the process's ``CallEventBus`` for the call's
``emit`` once, when the stream starts, and hands that same function to the transport
and (in ``CallInfo.emit``) to the runner; the engine hands it on to its retry hooks.
The subscribers (the call record, the metrics) registered on the bus at start-up see
``(call_sid, event)``. Logging is separate and for people only: nothing reads it back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

__all__ = [
    "BacklogFull",
    "CallEvent",
    "CallEventBus",
    "CallerPaced",
    "Emit",
    "EngineNote",
    "EngineNoteKind",
    "FrameRejected",
    "HangupAlreadyOver",
    "HangupFailed",
    "Listener",
    "MediaGap",
    "ProviderRetried",
    "RunnerCancelled",
    "RunnerFailed",
    "StreamEnded",
    "Value",
    "ignore",
]

log = logging.getLogger(__name__)

Value = str | int | float | bool | None | Mapping[str, "Value"]
"""JSON-safe: what a stored event's data may hold."""

EngineNoteKind = Literal[
    "barge_in",
    "barge_in_stale",
    "reply_failed",
    "hangup",
    "transfer",
    "caller_hung_up",
    "max_duration",
    "mark_timeout",
    "stt_timeout",
    "provider_failed",
    "end_requested",
    "stt_lost",
    "stt_restored",
    "hold",
    "transfer_failed",
    "backchannel",
    "false_interruption",
    "resumed",
    "resume_cancelled",
]


@dataclass(frozen=True, slots=True)
class EngineNote:
    """A turn-taking fact the engine (or the VAPI bridge) decided, with its details."""

    kind: EngineNoteKind
    data: Mapping[str, str | int | float] = field(default_factory=dict)


# ---------------------------------------------------------------- the providers' retry policy


@dataclass(frozen=True, slots=True)
class ProviderRetried:
    """A provider call failed in a way a retry can fix; it runs again after ``delay_s``."""

    provider: str
    retry: int
    delay_s: float
    error: str
    kind: ClassVar[Literal["provider_retry"]] = "provider_retry"

    @property
    def data(self) -> dict[str, Value]:
        return {
            "provider": self.provider,
            "retry": self.retry,
            "delay_s": self.delay_s,
            "error": self.error,
        }


# ---------------------------------------------------------------- the socket adapter


@dataclass(frozen=True, slots=True)
class MediaGap:
    """The caller's audio stalled: ``timestamp`` (missing at Twilio) or ``arrival`` (held
    back on the way to us); ``coalesced`` gaps since the last report were only counted."""

    source: Literal["timestamp", "arrival"]
    gap_ms: int
    coalesced: int = 0
    kind: ClassVar[Literal["gap"]] = "gap"

    @property
    def data(self) -> dict[str, Value]:
        return {"kind": self.source, "gap_ms": self.gap_ms, "coalesced": self.coalesced}


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """A frame the call could not use (``reason``: the codec's kind, ``binary``, ``order``,
    ``dtmf_rate`` …), the ``count``-th of its reason; reported for the first few and then
    every 100th, so a flood is a handful of events."""

    reason: str
    count: int
    detail: str
    kind: ClassVar[Literal["bad_frame"]] = "bad_frame"

    @property
    def data(self) -> dict[str, Value]:
        return {"kind": self.reason, "count": self.count, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class BacklogFull:
    """The runner fell this far behind; newer caller audio is dropped (reported once)."""

    queued: int
    kind: ClassVar[Literal["backlog"]] = "backlog"

    @property
    def data(self) -> dict[str, Value]:
        return {"queued": self.queued}


@dataclass(frozen=True, slots=True)
class CallerPaced:
    """The caller's audio arrived ahead of real time and is being held (reported once)."""

    ahead_s: float
    kind: ClassVar[Literal["paced"]] = "paced"

    @property
    def data(self) -> dict[str, Value]:
        return {"ahead_s": self.ahead_s}


@dataclass(frozen=True, slots=True)
class RunnerFailed:
    """The runner raised: a bug of ours, which ends this call only."""

    error: str
    kind: ClassVar[Literal["runner_error"]] = "runner_error"

    @property
    def data(self) -> dict[str, Value]:
        return {"error": self.error}


@dataclass(frozen=True, slots=True)
class RunnerCancelled:
    """The caller left and the runner did not wind down within ``grace_s``."""

    grace_s: float
    kind: ClassVar[Literal["runner_cancelled"]] = "runner_cancelled"

    @property
    def data(self) -> dict[str, Value]:
        return {"grace_s": self.grace_s}


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The socket's account of the call once it is over: frames, gaps, rejects."""

    gaps: Mapping[str, int | float]
    rejected: Mapping[str, int]
    dropped_backlog: int
    paced_s: float
    kind: ClassVar[Literal["stream_ended"]] = "stream_ended"

    @property
    def data(self) -> dict[str, Value]:
        return {
            **self.gaps,
            "rejected": dict(self.rejected),
            "dropped_backlog": self.dropped_backlog,
            "paced_s": self.paced_s,
        }


# ---------------------------------------------------------------- the Twilio transport


@dataclass(frozen=True, slots=True)
class HangupFailed:
    """Twilio's REST API would not end the call; the socket was closed anyway."""

    error: str
    kind: ClassVar[Literal["twilio_rest_error"]] = "twilio_rest_error"

    @property
    def data(self) -> dict[str, Value]:
        return {"error": self.error}


@dataclass(frozen=True, slots=True)
class HangupAlreadyOver:
    """Twilio answered 20404 to our hang-up: the call had already ended (not an error)."""

    kind: ClassVar[Literal["hangup_already_over"]] = "hangup_already_over"

    @property
    def data(self) -> dict[str, Value]:
        return {}


CallEvent = (
    EngineNote
    | ProviderRetried
    | MediaGap
    | FrameRejected
    | BacklogFull
    | CallerPaced
    | RunnerFailed
    | RunnerCancelled
    | StreamEnded
    | HangupFailed
    | HangupAlreadyOver
)
"""Everything a call's record keeps besides turns (DESIGN.md §6: typed, ordered events).
Each has a ``kind`` (the stored name) and ``data`` (its JSON-safe fields)."""

Emit = Callable[[CallEvent], None]
"""One call's way to say what happened. Cheap and synchronous: subscribers append to a
queue or bump a counter, so a producer on the audio path never waits on them."""

Listener = Callable[[str, CallEvent], None]
"""A subscriber: told ``(call_sid, event)`` for every call of the process."""


def ignore(event: CallEvent) -> None:
    """The ``Emit`` of a call nobody records (tests, tools)."""


class CallEventBus:
    """The process's fan-out from each call's ``emit`` to the subscribers."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emitter(self, call_sid: str) -> Emit:
        """The ``emit`` of one call: its events reach every subscriber with its SID."""

        def emit(event: CallEvent) -> None:
            self.publish(call_sid, event)

        return emit

    def publish(self, call_sid: str, event: CallEvent) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(call_sid, event)
            except Exception:  # a subscriber's bug must not end the call that emitted
                log.exception("call_events.listener_failed kind=%s", event.kind)
