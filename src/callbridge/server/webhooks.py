"""Twilio's HTTP webhooks: ``POST /voice`` answers a call, ``POST /status`` records its fate.

Nothing happens for a request whose signature does not check out: 403, one log line,
no token minted, no TwiML. The signature is checked against the raw body before any
parsing, because the parsed form is not what Twilio signed.
"""

from __future__ import annotations

import json
import logging
import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from callbridge.server.edge import Edge
from callbridge.telemetry.logging import call_context, log_event
from callbridge.twilio import twiml
from callbridge.twilio.security import form_params

__all__ = ["MAX_BODY_BYTES", "router"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_XML = "application/xml"

router = APIRouter()


@router.post("/voice")
async def voice(request: Request) -> Response:
    edge: Edge = request.app.state.edge
    params = await _verified_params(edge, request)
    if isinstance(params, Response):
        return params
    call_sid = params.get("CallSid", "")
    if not _CALL_SID.match(call_sid):
        log_event(log, logging.WARNING, "webhook.bad_request", path="/voice", reason="CallSid")
        return Response("expected a CallSid", status_code=400, media_type="text/plain")
    with call_context(call_sid):
        limit = edge.settings.max_calls
        full = bool(limit) and edge.stats.active_calls >= limit
        if full or edge.drain.draining:
            edge.stats.overflow_total += 1
            log_event(
                log,
                logging.WARNING,
                "webhook.overflow",
                active=edge.stats.active_calls,
                reason="draining" if edge.drain.draining else "capacity",
            )
            overflow = edge.settings.overflow_url
            xml = twiml.redirect(overflow) if overflow else twiml.refuse()
            return Response(xml, media_type=_XML)
        xml = twiml.connect_stream(
            edge.url_of(request, websocket=True, path="/media"),
            call_sid=call_sid,
            from_number=params.get("From", ""),
            to_number=params.get("To", ""),
            token=edge.tokens.mint(call_sid),
        )
        edge.drain.note_answered()
        log_event(
            log,
            logging.INFO,
            "webhook.voice",
            direction=params.get("Direction", ""),
            status=params.get("CallStatus", ""),
        )
        return Response(xml, media_type=_XML)


@router.post("/status")
async def status(request: Request) -> Response:
    edge: Edge = request.app.state.edge
    params = await _verified_params(edge, request)
    if isinstance(params, Response):
        return params
    with call_context(params.get("CallSid", "")):
        # With a store, ``status_capture.StatusCapture`` puts it in the call record once
        # this answers 204; the log line is for people.
        log_event(
            log,
            logging.INFO,
            "call.status",
            status=params.get("CallStatus", ""),
            duration_s=params.get("CallDuration", ""),
            sequence=params.get("SequenceNumber", ""),
        )
    return Response(status_code=204)


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    stats = request.app.state.edge.stats
    return JSONResponse({"status": "ok", "activeCalls": stats.active_calls})


async def _verified_params(edge: Edge, request: Request) -> dict[str, str] | Response:
    """The request's parameters if Twilio signed it, else the response to send instead."""
    path = request.url.path
    body = await _read_body(request)
    if body is None:
        edge.stats.webhooks_rejected += 1
        log_event(log, logging.WARNING, "webhook.rejected", path=path, reason="body too large")
        return Response(status_code=413)
    content_type = request.headers.get("content-type", "")
    if edge.validator is None:
        edge.warn_insecure(path)
    else:
        verdict = edge.validator.check(
            edge.url_of(request),
            content_type=content_type,
            body=body,
            signature=request.headers.get("x-twilio-signature"),
            signature_settings=request.headers.get("x-twilio-webhooks-signature-settings"),
        )
        if not verdict.ok:
            edge.stats.webhooks_rejected += 1
            client = request.client.host if request.client else ""
            log_event(
                log,
                logging.WARNING,
                "webhook.rejected",
                path=path,
                reason=verdict.reason,
                client=client,
            )
            return Response(status_code=403)
    try:
        return _parse(content_type, body)
    except (ValueError, UnicodeDecodeError):
        log_event(log, logging.WARNING, "webhook.bad_request", path=path, reason="unparsable body")
        return Response("unparsable body", status_code=400, media_type="text/plain")


def _parse(content_type: str, body: bytes) -> dict[str, str]:
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    params = form_params(body)
    return {k: params.getlist(k)[0] for k in params}


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it exceeds ``MAX_BODY_BYTES`` (Twilio's are ~1 KiB)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
