"""What the Twilio-facing routes share: settings, checkers, the runner, and counters.

One object on ``app.state.edge`` instead of module globals, so two apps (two test
servers, two instances in one process) never share state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from callbridge.call_events import CallEventBus
from callbridge.engine.transport import CallRunner
from callbridge.server.drain import Drain
from callbridge.server.live import LiveCalls
from callbridge.settings import Settings
from callbridge.twilio.rest import TwilioRest
from callbridge.twilio.security import WebhookValidator, public_request_url
from callbridge.twilio.tokens import SpentTokens, StreamTokens

__all__ = ["INSECURE_WARNING", "MAX_UNSTARTED_STREAMS", "Edge", "EdgeStats"]

INSECURE_WARNING = (
    "SIGNATURE CHECKS ARE OFF (CALLBRIDGE_INSECURE_SKIP_SIGNATURE=1): anyone can reach "
    "this endpoint as if they were Twilio. Never run like this on a public address."
)

log = logging.getLogger("callbridge.security")

MAX_UNSTARTED_STREAMS = 64
"""Sockets accepted but not yet authenticated by a ``start``. Twilio sends ``start`` within
milliseconds, so only a peer that is not Twilio holds one open; past the cap new sockets
are refused at the handshake."""


@dataclass
class EdgeStats:
    """Process-wide counters: ``/metrics`` exports them (``Metrics.watch_edge``), ``/healthz``
    and the tests read them."""

    active_calls: int = 0
    calls_total: int = 0
    overflow_total: int = 0
    webhooks_rejected: int = 0
    streams_rejected: int = 0
    frames_rejected: Counter[str] = field(default_factory=Counter)
    timestamp_gaps: int = 0
    arrival_gaps: int = 0


@dataclass
class Edge:
    settings: Settings
    tokens: StreamTokens
    validator: WebhookValidator | None  # None only in explicit insecure mode
    runner: CallRunner
    rest: TwilioRest | None
    stats: EdgeStats = field(default_factory=EdgeStats)
    spent_tokens: SpentTokens = field(default_factory=SpentTokens)
    live_calls: set[str] = field(default_factory=set)
    """CallSids with a live media stream in this process: one stream per call."""
    unstarted: int = 0
    max_unstarted: int = MAX_UNSTARTED_STREAMS
    clock: Callable[[], float] = time.monotonic
    """Monotonic seconds for the per-socket budgets (a manual clock in tests)."""
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    live: LiveCalls = field(default_factory=LiveCalls)
    drain: Drain = field(init=False)
    instance: str = ""  # this process's name in the calls table (DESIGN.md §10)
    events: CallEventBus = field(default_factory=CallEventBus)
    """Each call's ``emit`` comes from here; the record and the metrics subscribe."""

    def __post_init__(self) -> None:
        self.drain = Drain(self.live)

    def warn_insecure(self, path: str) -> None:
        """Loud on every request by design: this must never go unnoticed in a log."""
        log.warning("%s path=%s", INSECURE_WARNING, path)

    def url_of(self, conn: HTTPConnection, *, websocket: bool = False, path: str = "") -> str:
        """The public URL the far end requested (or ``path`` on the same origin)."""
        scope = conn.scope
        raw_path = scope.get("raw_path")
        req_path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        s = self.settings
        return public_request_url(
            scheme=scope.get("scheme", "http"),
            host=conn.headers.get("host", ""),
            path=path or req_path,
            query="" if path else query,
            headers=conn.headers,
            client_ip=conn.client.host if conn.client else None,
            public_url=s.public_url,
            trusted_proxies=s.trusted_proxies,
            websocket=websocket,
        )
