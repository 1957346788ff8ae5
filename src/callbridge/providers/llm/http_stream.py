"""A model's streamed POST with everything that does not change per request built once.

The official SDKs (openai, anthropic) build each request from scratch: merge and
validate the headers, parse and join the URL, walk the options, wrap the send in their
auth and retry layers, then wrap the response. At fifty calls that was a few ms of CPU
per turn, the largest part of the LLM client's cost besides the stream itself
(``bench/vendors.py llm --profile``). ``StreamingPost`` takes from the SDK client
exactly what the SDK would send (its base URL, its default and auth headers: the API
key, ``anthropic-version``, the ``User-Agent``) once. The retries were off in the SDK
anyway (``max_retries=0``): ours live in providers/retry.py. HTTP errors become
``HttpStatusError`` with the vendor's JSON body, which each client maps to a
``ProviderError`` as before.

A turn's request goes straight to the connection pool behind the SDK's httpx2 client
(the same pool, HTTP/2, keep-alive, timeouts, proxy, TLS), not through httpx2's client
and models: those are layers a request passes once (auth flow, redirects, event hooks,
its ``Request`` and ``Response``) and, worse, four generators and an exception mapper
that every streamed chunk passed through. The request bytes are the same (the header
block is httpx2's own, built once; a test compares them). What httpx2 would still have
done is done here: its exception types (``TransportError`` and kin, mapped from
httpcore's by name, as httpx2 maps them), and its redirects and content decoding, by
handing those rare answers (3xx, a compressed body) to the httpx2 client itself. An
HTTP/1.1 body is read by h11_body.py's ``H11Body`` (h11 and the socket, one step a
network read, not httpcore's four generators); anything else through httpcore's stream.
"""
from __future__ import annotations

import json
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Protocol, cast

import httpcore2
import httpx2

from callbridge.providers.llm.h11_body import HTTPCORE_ERRORS, as_httpx_error, lean_body

__all__ = [
    "EventStream",
    "HttpStatusError",
    "NotAnEventStream",
    "StreamingPost",
    "as_httpx_error",
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
        # httpx2's own header block (Host first, Content-Length last), with the length's
        # place kept to fill in per request.
        template = httpx2.Request("POST", self.url, headers=self.headers, content=b"{}")
        self._raw_headers = list(template.headers.raw)
        self._length_at = next(i for i, (name, _) in enumerate(self._raw_headers)
                               if name.lower() == b"content-length")
        self._target = httpcore2.URL(scheme=self.url.raw_scheme, host=self.url.raw_host,
                                     port=self.url.port, target=self.url.raw_path)
        self._extensions = {"timeout": http.timeout.as_dict()}
        self._read_timeout = http.timeout.read
        transport = http._transport_for_url(self.url)  # proxies from the env included
        pool = getattr(transport, "_pool", None)
        self._pool = pool if isinstance(transport, httpx2.AsyncHTTPTransport) and isinstance(
            pool, httpcore2.AsyncConnectionPool) else None

    async def open(self, body: Mapping[str, Any]) -> EventStream:
        """Send the request; the response's body is left to stream.

        Raises ``HttpStatusError``, ``NotAnEventStream`` and httpx2's ``TransportError``
        (connect, timeout, a dropped connection)."""
        content = json.dumps(body).encode()
        if self._pool is None:
            return await self._open_via_client(content)
        headers = self._raw_headers.copy()
        headers[self._length_at] = (headers[self._length_at][0], b"%d" % len(content))
        request = httpcore2.Request(b"POST", self._target, headers=headers, content=content,
                                    extensions=dict(self._extensions))
        try:
            response = await self._pool.handle_async_request(request)
        except HTTPCORE_ERRORS as exc:
            raise as_httpx_error(exc) from exc
        core = _CoreBody(response.stream)
        lean = lean_body(response.stream, self._read_timeout)  # HTTP/1.1: h11_body.py
        stream = (EventStream(lean, lean.aclose, response.status, response.headers)
                  if lean is not None else
                  EventStream(aiter(core), core.aclose, response.status, response.headers))
        if 300 <= stream.status < 400:  # a redirect to follow: httpx2's business, as before
            await stream.aclose()
            return await self._open_via_client(content)
        if stream.encoding != "identity":  # no Accept-Encoding was sent, but if it is
            decoded = httpx2.Response(response.status, headers=response.headers, stream=core)
            stream = EventStream(decoded.aiter_bytes(), decoded.aclose, response.status,
                                 response.headers)
        await stream.check()
        return stream

    async def _open_via_client(self, content: bytes) -> EventStream:
        request = httpx2.Request("POST", self.url, headers=self.headers, content=content)
        response = await self.http.send(request, stream=True)
        chunks = response.aiter_raw() if response.headers.get(
            "content-encoding", "identity") == "identity" else response.aiter_bytes()
        stream = EventStream(chunks, response.aclose, response.status_code,
                             response.headers.raw)
        await stream.check()
        return stream


class _CoreBody(httpx2.AsyncByteStream):
    """httpcore's streamed body with httpcore's errors raised as httpx2's."""

    def __init__(self, stream: Iterable[bytes] | AsyncIterable[bytes]) -> None:
        # An async pool's is async (an ABC ``isinstance`` is slow enough to show).
        self._stream = cast(AsyncIterable[bytes], stream)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except HTTPCORE_ERRORS as exc:
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            try:
                await close()
            except HTTPCORE_ERRORS as exc:
                raise as_httpx_error(exc) from exc


class EventStream:
    """An answer whose body streams: its status, two headers, ``chunks`` and ``aclose``
    (which gives a connection read to its end back to the pool)."""

    __slots__ = ("aclose", "chunks", "content_type", "encoding", "status")

    def __init__(self, chunks: AsyncIterator[bytes], aclose: Callable[[], Awaitable[None]],
                 status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.chunks = chunks  # the body as it arrives, errors as httpx2's
        self.aclose = aclose
        self.status = status
        self.content_type = ""
        self.encoding = "identity"
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-type":
                self.content_type = value.decode("latin-1")
            elif lowered == b"content-encoding":
                self.encoding = value.decode("latin-1").strip().lower() or "identity"

    async def check(self) -> None:
        """Raise (and close) unless this is a 2xx event stream."""
        if self.status >= 400:
            try:
                raw = b"".join([chunk async for chunk in self.chunks])
            finally:
                await self.aclose()
            raise HttpStatusError(self.status, error_body(raw))
        if not self.content_type.startswith("text/event-stream"):
            await self.aclose()
            raise NotAnEventStream(f"content type {self.content_type or None!r}, "
                                   "not text/event-stream")


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
