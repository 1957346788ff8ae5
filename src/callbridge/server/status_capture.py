"""Puts Twilio's call-status callbacks (``POST /status``) into the call record.

An ASGI middleware rather than code in the webhook: the webhook stays the one place
that checks signatures, and only a request it accepted (answered 204) is recorded —
the body is read as it streams past, so nothing is parsed twice or before the check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callbridge.store.ops import CallSeen, StatusChanged, StoreOp

__all__ = ["StatusCapture", "status_ops"]

log = logging.getLogger(__name__)

_MAX_BYTES = 64 * 1024


class StatusCapture:
    def __init__(self, app: ASGIApp, on_status: Callable[[dict[str, str]], None]) -> None:
        self.app = app
        self.on_status = on_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/status":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        accepted = False

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= _MAX_BYTES:
                body.extend(message.get("body", b""))
            return message

        async def watch_send(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "http.response.start":
                accepted = message["status"] == 204
            await send(message)

        await self.app(scope, tee_receive, watch_send)
        if accepted:
            params = _parse(scope, bytes(body))
            if params.get("CallSid"):
                self.on_status(params)


def _parse(scope: Scope, body: bytes) -> dict[str, str]:
    headers = dict(scope.get("headers") or [])
    content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip()
    try:
        if content_type.lower() == "application/json":
            data = json.loads(body)
            if isinstance(data, dict):
                return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
            return {}
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("status.unparsable error=%s", exc)  # the webhook accepted it; odd, not fatal
        return {}


def status_ops(params: dict[str, str], at: datetime) -> list[StoreOp]:
    """Twilio's status callback fields → what the call record keeps of them."""
    sid = params["CallSid"]
    seen = CallSeen(
        sid=sid,
        at=at,
        from_number=params.get("From", ""),
        to_number=params.get("To", ""),
        direction=params.get("Direction") or None,
    )
    data = {key: params[name] for key, name in _STATUS_PARAMS.items() if params.get(name)}
    return [
        seen,
        StatusChanged(sid=sid, at=at, status=params.get("CallStatus", "unknown"), data=data),
    ]


_STATUS_PARAMS = {
    "durationS": "CallDuration",
    "sequence": "SequenceNumber",
    "timestamp": "Timestamp",
    "answeredBy": "AnsweredBy",
    "sipResponseCode": "SipResponseCode",
    "direction": "Direction",
}
