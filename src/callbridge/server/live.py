"""The calls this instance is serving right now, and how to steer one from outside it.

The socket adapter registers each call for the length of its stream. A drain, the API,
or a command from another instance (``server/control.py``) then reaches the call only by
posting a typed event into its inbox, as the socket itself does; the call's owner task
stays the one that changes its state. When a call does not react (a runner that ignores
operator events, a stuck provider), ``hang_up`` ends it at Twilio and closes the socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from callbridge.engine.transport import EndCall, LineEvent, SayText
from callbridge.telemetry.logging import log_event

__all__ = ["END_GRACE_S", "LiveCall", "LiveCalls", "instance_name"]

log = logging.getLogger(__name__)

END_GRACE_S = 20.0
"""How long a call may take to say its goodbye after ``EndCall`` before it is cut."""


def instance_name() -> str:
    """Host and PID: unique among live instances, and says where to look (a pod's host
    name is the pod's name)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class LiveCall:
    call_sid: str
    post: Callable[[LineEvent], None]
    hang_up: Callable[[], Awaitable[None]]
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def end(self, reason: str, message: str | None, *, grace_s: float = END_GRACE_S) -> str:
        """Ask the call to end (goodbye, then hang-up); cut it if it has not within grace."""
        if self.ended.is_set():
            return "already over"
        self.post(EndCall(reason, message))
        try:
            async with asyncio.timeout(grace_s):
                await self.ended.wait()
            return "ended"
        except TimeoutError:
            log_event(log, logging.WARNING, "call.end_forced", reason=reason, grace_s=grace_s)
            await self.hang_up()
            return "ended (forced)"

    def say(self, text: str) -> None:
        self.post(SayText(text))


class LiveCalls:
    """Call SID → live call, for this process. Touched only from the event loop."""

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}
        self._changed = asyncio.Event()
        self.last_added_at = 0.0  # time.monotonic() of the newest stream
        self.removed = 0  # streams that have ended, over the process's life

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_sid: str) -> LiveCall | None:
        return self._calls.get(call_sid)

    def all(self) -> list[LiveCall]:
        return list(self._calls.values())

    def add(
        self,
        call_sid: str,
        post: Callable[[LineEvent], None],
        hang_up: Callable[[], Awaitable[None]],
    ) -> LiveCall:
        """Register a stream for its whole life; ``remove`` it when the runner is done."""
        call = LiveCall(call_sid, post, hang_up)
        self._calls[call_sid] = call
        self.last_added_at = time.monotonic()
        self._touch()
        return call

    def remove(self, call: LiveCall) -> None:
        call.ended.set()
        self.removed += 1
        if self._calls.get(call.call_sid) is call:
            del self._calls[call.call_sid]
        self._touch()

    async def wait_empty(self, timeout_s: float) -> bool:
        """True once no call is live; False when ``timeout_s`` passes first."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._calls:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def _touch(self) -> None:
        self._changed.set()
