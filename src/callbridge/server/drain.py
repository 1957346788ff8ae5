"""Draining: stop taking calls, let the live ones finish, then let the process go.

A deploy, a restart and a scale-in all start with SIGTERM. Closing the sockets then would
cut every caller mid-sentence; instead ``/readyz`` turns 503 at once (the balancer stops
sending calls), a webhook that still arrives is turned away politely or redirected
(``CALLBRIDGE_OVERFLOW_URL``), and the calls in progress run to their natural end. Calls
still up after ``CALLBRIDGE_DRAIN_TIMEOUT_S`` hear a short goodbye and are hung up; only
then does the server close, flush the store and exit 0. ``serve.py`` wires the signals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from callbridge.server.live import END_GRACE_S, LiveCalls
from callbridge.telemetry.logging import log_event

__all__ = ["QUIET_S", "Drain", "DrainResult"]

log = logging.getLogger(__name__)

QUIET_S = 3.0
"""A drain ends only after this long with no call and no new stream or answered webhook:
a webhook answered just before the signal (here, or on an instance whose balancer has
not yet seen our 503) still has its caller's socket on the way."""


@dataclass(frozen=True, slots=True)
class DrainResult:
    finished: int  # calls that ended by themselves during the drain
    ended: int  # calls we ended at the timeout (goodbye, then hang-up)
    seconds: float


class Drain:
    """This instance's drain state; ``begin`` is instant, ``run`` waits the calls out."""

    def __init__(self, live: LiveCalls) -> None:
        self.live = live
        self.draining = False
        self.started_at: float | None = None
        self.ended_calls = 0  # cut at the timeout, over the process's life (a counter)
        self.last_answered_at = 0.0  # time.monotonic() of the last webhook given a stream

    def note_answered(self) -> None:
        """A webhook was answered with a stream: its socket may come here soon."""
        self.last_answered_at = time.monotonic()

    def begin(self, reason: str) -> bool:
        """Stop taking calls now. False when a drain had already begun."""
        if self.draining:
            return False
        self.draining = True
        self.started_at = time.monotonic()
        log_event(log, logging.WARNING, "drain.started", reason=reason, live_calls=len(self.live))
        return True

    async def _settle(self, deadline: float) -> bool:
        """True once no call is live and none has started for ``QUIET_S``; False when
        calls are still up at ``deadline``."""
        while True:
            if not await self.live.wait_empty(max(0.0, deadline - time.monotonic())):
                return False
            since = max(self.started_at or 0.0, self.live.last_added_at, self.last_answered_at)
            now = time.monotonic()
            if now - since >= QUIET_S or now >= deadline:
                return True
            await asyncio.sleep(min(QUIET_S - (now - since), deadline - now))

    async def run(self, timeout_s: float, message: str | None) -> DrainResult:
        """Wait for the live calls; at ``timeout_s`` say ``message`` to the rest and end them."""
        self.begin("run")
        removed_before = self.live.removed
        t0 = time.monotonic()
        ended = 0
        if not await self._settle(t0 + timeout_s):
            calls = self.live.all()
            ended = len(calls)
            self.ended_calls += ended
            log_event(log, logging.WARNING, "drain.timeout", timeout_s=timeout_s, live_calls=ended)
            await asyncio.gather(*(c.end("drain", message, grace_s=END_GRACE_S) for c in calls))
            await self.live.wait_empty(END_GRACE_S)
        result = DrainResult(
            finished=max(0, self.live.removed - removed_before - ended),
            ended=ended,
            seconds=time.monotonic() - t0,
        )
        log_event(
            log,
            logging.WARNING,
            "drain.done",
            finished=result.finished,
            ended=result.ended,
            seconds=round(result.seconds, 3),
        )
        return result
