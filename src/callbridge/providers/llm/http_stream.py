"""A model's streamed POST with everything that does not change per request built once.

The official SDKs (openai, anthropic) build each request from scratch: merge and
validate the headers, parse and join the URL, walk the options, wrap the send in their
auth and retry layers, then wrap the response. At fifty calls that was a few ms of CPU
per turn, the largest part of the LLM client's cost besides the stream itself
(``bench/vendors.py llm --profile``). ``StreamingPost`` takes from the SDK client
exactly what the SDK would send (its base URL, its default and auth headers: the API
key, ``anthropic-version``, the ``User-Agent``) once, and sends each request through
the same httpx2 client, so the pool, HTTP/2, the timeouts and the redirects are the
SDK's own. The retries were off in the SDK anyway (``max_retries=0``): ours live in
providers/retry.py. HTTP errors become ``HttpStatusError`` with the vendor's JSON
body, which each client maps to a ``ProviderError`` as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import httpx2

__all__ = [
    "HttpStatusError",
    "NotAnEventStream",
    "StreamingPost",
    "body_chunks",
    "body_message",
    "error_body",
]


class SdkClient(Protocol):
    """What the two Stainless-built SDK clients (openai, anthropic) expose publicly."""

    @property
    def base_url(self) -> httpx2.URL: ...

    @property
    def default_headers(self) -> Mapping[str, object]: ...

    @property
    def auth_headers(self) -> Mapping[str, str]: ...


class HttpStatusError(Exception):
    """The vendor answered 4xx/5xx; ``body`` is its JSON (or text, or None)."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class NotAnEventStream(Exception):
    """2xx, but not ``text/event-stream`` (a proxy's page, a server that ignored
    ``stream: true``): the same request will get the same answer."""


class StreamingPost:
    """``POST {base_url}{path}`` with a JSON body, answered by an event stream."""

    def __init__(self, sdk: SdkClient, http: httpx2.AsyncClient, path: str) -> None:
        base = sdk.base_url
        self.url = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + b"/" +
                                  path.lstrip("/").encode())
        merged = {**sdk.default_headers, **sdk.auth_headers}
        # ``Omit`` markers (e.g. no OpenAI-Organization) are headers the SDK leaves out.
        self.headers = httpx2.Headers({k: v for k, v in merged.items() if isinstance(v, str)})
        self.http = http

    async def open(self, body: Mapping[str, Any]) -> httpx2.Response:
        """Send the request; the response's body is left to stream.

        Raises ``HttpStatusError``, ``NotAnEventStream`` and httpx2's ``TransportError``
        (connect, timeout, a dropped connection)."""
        request = httpx2.Request(
            "POST", self.url, headers=self.headers, content=json.dumps(body).encode()
        )
        response = await self.http.send(request, stream=True)
        if response.status_code >= 400:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
            raise HttpStatusError(response.status_code, error_body(raw))
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aclose()
            raise NotAnEventStream(
                f"content type {response.headers.get('content-type')!r}, not text/event-stream"
            )
        return response


def body_chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The body as it arrives: raw when it is not compressed (no decoder layers)."""
    if response.headers.get("content-encoding", "identity") == "identity":
        return response.aiter_raw()
    return response.aiter_bytes()


def error_body(raw: bytes) -> object:
    text = raw.decode("utf-8", "replace").strip()
    try:
        return json.loads(text)
    except ValueError:
        return text or None


def body_message(body: object) -> str:
    """The vendor's own words from an error body (``{"error": {"message": …}}`` for both
    OpenAI and Anthropic), or the body's text; at most 300 characters."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(body)[:300]
