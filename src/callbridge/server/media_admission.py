"""Who may open a ``/media`` stream: the checks at the handshake and at ``start``.

A socket is refused at the upgrade (HTTP 403) when too many sockets already wait for
their ``start`` or its Twilio signature is wrong; its ``start`` must then carry an unused
stream token for its callSid, μ-law 8 kHz mono, and its call no other live stream.
``server/media.py`` calls these and closes 1008 with the problem they return.
"""

from __future__ import annotations

import logging

from starlette.requests import HTTPConnection

from callbridge.errors import CallbridgeError
from callbridge.server.edge import Edge
from callbridge.telemetry.logging import log_event
from callbridge.twilio import codec, twiml
from callbridge.twilio.tokens import StreamTokenError, TokenClaims

__all__ = ["admit", "check_start", "refuse_at_capacity", "refuse_handshake"]

log = logging.getLogger("callbridge.server.media")  # the stream's events, one logger


def refuse_handshake(edge: Edge, conn: HTTPConnection) -> bool:
    """True when the upgrade must be refused (HTTP 403): too many sockets wait for their
    ``start``, or the handshake carries a Twilio signature that does not verify."""
    if edge.unstarted >= edge.max_unstarted:
        edge.stats.streams_rejected += 1
        log_event(
            log,
            logging.WARNING,
            "stream.rejected",
            reason="too many sockets without 'start'",
            unstarted=edge.unstarted,
        )
        return True
    if edge.validator is None:
        edge.warn_insecure("/media")
    else:
        signature = conn.headers.get("x-twilio-signature")
        if signature is not None:
            verdict = edge.validator.check_handshake(edge.url_of(conn, websocket=True), signature)
            if not verdict.ok:
                edge.stats.streams_rejected += 1
                log_event(log, logging.WARNING, "stream.rejected", reason=verdict.reason)
                return True
    return False


def check_start(edge: Edge, start: codec.Start) -> TokenClaims | str:
    """The token's claims if ``start`` is well-formed and signed, else the problem."""
    token = start.custom_parameters.get("token")
    if not token:
        return "start carries no stream token"
    try:
        claims = edge.tokens.verify(token, start.call_sid)
    except StreamTokenError as exc:
        return str(exc)
    fmt = start.media_format
    if (fmt.encoding, fmt.sample_rate_hz, fmt.channels) != ("audio/x-mulaw", 8000, 1):
        return (
            "expected mediaFormat audio/x-mulaw 8000 Hz mono, got "
            f"{fmt.encoding} {fmt.sample_rate_hz} Hz {fmt.channels} ch"
        )
    return claims


def admit(edge: Edge, start: codec.Start, claims: TokenClaims) -> str | None:
    """One live stream per call, one stream per token; None when admitted."""
    if start.call_sid in edge.live_calls:
        return "a stream for this call is already live"
    problem = edge.spent_tokens.spend(claims)
    if problem is None:
        edge.live_calls.add(start.call_sid)  # no await since the check: no race
    return problem


async def refuse_at_capacity(edge: Edge, call_sid: str) -> None:
    """At capacity: the caller hears the polite refusal through REST (the stream closes
    1013 after it). ``/voice`` refuses at capacity too, but many calls answered at once
    all pass it before any of their streams has started; this is the check that holds."""
    edge.live_calls.discard(call_sid)
    edge.stats.overflow_total += 1
    log_event(log, logging.WARNING, "stream.overflow", active=edge.stats.active_calls)
    if edge.rest is not None:
        try:
            await edge.rest.transfer_call(call_sid, twiml.refuse())
        except CallbridgeError:
            log.exception("stream.overflow_refusal_failed")
