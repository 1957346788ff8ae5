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

__all__ = ["Drain", "DrainResult"]

log = logging.getLogger(__name__)


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

    def begin(self, reason: str) -> bool:
        """Stop taking calls now. False when a drain had already begun."""
        if self.draining:
            return False
        self.draining = True
        self.started_at = time.monotonic()
        log_event(log, logging.WARNING, "drain.started", reason=reason, live_calls=len(self.live))
        return True

    async def run(self, timeout_s: float, message: str | None) -> DrainResult:
        """Wait for the live calls; at ``timeout_s`` say ``message`` to the rest and end them."""
        self.begin("run")
        at_start = len(self.live)
        t0 = time.monotonic()
        ended = 0
        if not await self.live.wait_empty(timeout_s):
            calls = self.live.all()
            ended = len(calls)
            self.ended_calls += ended
            log_event(log, logging.WARNING, "drain.timeout", timeout_s=timeout_s, live_calls=ended)
            await asyncio.gather(*(c.end("drain", message, grace_s=END_GRACE_S) for c in calls))
            await self.live.wait_empty(END_GRACE_S)
        result = DrainResult(
            finished=max(0, at_start - ended), ended=ended, seconds=time.monotonic() - t0
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
