"""The LLM clients' connection pool: httpcore's, minus its pass over every connection on
every request.

httpcore's pool runs ``_assign_requests_to_connections`` when a request arrives and
again when its response closes, and each run asks every connection in the pool five or
six questions (closed? expired? idle? available? …), two method calls each. Over
HTTP/1.1 the pool holds a connection per concurrent call, so at 20 calls that pass was a
third of the client's CPU per streamed completion, and it grows with the calls
(``bench/vendor_wire.py llm --idle 80``). ``AsyncioPool`` keeps httpcore's pass as the
sweep (drop the closed, close the expired and the idle beyond the keep-alive limit, open
connections, queue) but runs it at most once per ``SWEEP_S`` and whenever the quick way
finds nothing. The quick way: a response closing with no request queued has nothing to
do; a new request takes the first connection that no request holds and that is idle,
checked the way httpcore checks it (expired, or the server closed or wrote to it, and
it is closed instead and the next one tried).
"""

from __future__ import annotations

import time
from typing import Final

import httpcore2
from httpcore2._async.connection_pool import AsyncPoolRequest

__all__ = ["SWEEP_S", "AsyncioPool"]

SWEEP_S: Final = 1.0  # the longest a closed or surplus connection stays listed

Connection = httpcore2.AsyncConnectionInterface


class AsyncioPool(httpcore2.AsyncConnectionPool):
    """httpcore's pool: a request takes an idle connection without a pass over all of
    them, and closing no connection costs nothing."""

    _swept_at = float("-inf")

    def _assign_requests_to_connections(self) -> list[Connection]:
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_S:
            return self._sweep(now)
        requests: list[AsyncPoolRequest] = self._requests
        queued = [request for request in requests if request.connection is None]
        if not queued:
            return []  # a response closed and nobody waits: its connection just stays
        taken = {request.connection for request in requests}
        closing: list[Connection] = []
        for request in queued:
            connection = self._idle_connection(request.request.url.origin, taken, closing)
            if connection is None:  # none idle: httpcore's pass opens one (or queues)
                return closing + self._sweep(now)
            request.assign_to_connection(connection)
            taken.add(connection)
        return closing

    def _sweep(self, now: float) -> list[Connection]:
        self._swept_at = now
        return super()._assign_requests_to_connections()

    def _idle_connection(self, origin: httpcore2.Origin, taken: set[Connection | None],
                         closing: list[Connection]) -> Connection | None:
        """The first idle connection to ``origin`` no request holds; the expired ones
        met on the way are taken out of the pool into ``closing``."""
        connections: list[Connection] = self._connections
        index = 0
        while index < len(connections):
            connection = connections[index]
            if (connection not in taken and connection.is_idle()
                    and connection.is_available() and connection.can_handle_request(origin)):
                if not connection.has_expired():
                    return connection
                del connections[index]
                closing.append(connection)
                continue
            index += 1
        return None

    async def _close_connections(self, closing: list[Connection]) -> None:
        if closing:  # httpcore's enters a shielded cancel scope to close none
            await super()._close_connections(closing)
