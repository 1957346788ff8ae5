"""Small helpers shared by the WebSocket fakes (refusing an upgrade like the vendors do)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Response


def refuse(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    """An HTTP answer to the upgrade request instead of ``101 Switching Protocols``."""
    payload = json.dumps(body).encode()
    all_headers = Headers(
        {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(headers or {})}
    )
    return Response(status, HTTPStatus(status).phrase, all_headers, payload)


def port_of(server: Any) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])
