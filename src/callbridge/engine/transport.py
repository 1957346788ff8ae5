"""The engine's only view of the phone line, so the same engine runs behind Twilio's
socket, the simulator and tests (DESIGN.md §1: the engine never imports ``twilio``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from callbridge.call_events import Emit, ignore

__all__ = [
    "CallInfo",
    "CallRunner",
    "CallTransport",
    "CallerAudio",
    "CallerDtmf",
    "CallerHungUp",
    "EndCall",
    "LineEvent",
    "MarkPlayed",
    "SayText",
]


class CallTransport(Protocol):
    """Outbound half of the line. Sends are in order; audio is μ-law 8 kHz."""

    async def send_audio(self, ulaw: bytes) -> None: ...

    async def send_mark(self, name: str) -> None:
        """Ask the far end to report ``name`` back once everything sent before it has played."""
        ...

    async def send_clear(self) -> None:
        """Drop all audio the far end has buffered but not played yet."""
        ...

    async def hangup(self) -> None:
        """End the call (Twilio: REST ``status=completed``, then close the socket)."""
        ...

    async def transfer(self, to: str) -> None:
        """Hand the caller to another number (Twilio: REST update with ``<Dial>``)."""
        ...


# Inbound half: the adapter turns what arrives into these and posts them to the session.


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """One frame of the caller, μ-law 8 kHz (normally 20 ms, 160 bytes)."""

    ulaw: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallerDtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The far end echoed a mark: the audio before it has played, or was cleared."""

    name: str


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    reason: str = "stop"


# Operator events: the server (a drain, the API of any instance) steering a live call.


@dataclass(frozen=True, slots=True)
class EndCall:
    """End the call on our side: say ``message`` (None: the assistant's own goodbye; "":
    nothing), then hang up. A drain's timeout and an API hang-up post this."""

    reason: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class SayText:
    """Say ``text`` to the caller at the next moment the bot would be listening."""

    text: str


LineEvent = CallerAudio | CallerDtmf | MarkPlayed | CallerHungUp | EndCall | SayText


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the line told us about the call when it connected, and ``emit``: where the
    call's events go (the adapter's per-call emit; the runner hands it to the engine)."""

    call_sid: str
    stream_sid: str
    from_number: str = ""
    to_number: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    emit: Emit = field(default=ignore, compare=False, repr=False)


CallRunner = Callable[[CallInfo, CallTransport, "asyncio.Queue[LineEvent]"], Awaitable[None]]
"""Serves one call: reads line events from the queue until ``CallerHungUp``, talks back
through the transport. The socket adapter owns the queue; the runner owns the call."""
