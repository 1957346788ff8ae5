"""StreamingPost straight on the SDK client's pool: the same request bytes as httpx2, and
the answers httpx2 still handles (a redirect, a compressed body), against a raw HTTP/1.1
server on 127.0.0.1 that records every request it is sent."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpcore2
import httpx2
import pytest

from callbridge.providers.base import Message, TextDelta
from callbridge.providers.llm import asyncio_net
from callbridge.providers.llm.http_stream import as_httpx_error
from callbridge.providers.llm.openai import OpenAIChat, OpenAIConfig, build

HELLO = [Message("user", "Hi")]
Answer = Callable[[bytes], bytes]  # the request's target → the whole response


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event_stream(*texts: str, encoding: bytes | None = None) -> bytes:
    body = b"".join(b'data: {"choices": [{"delta": {"content": "%s"}}]}\n\n' % t.encode()
                    for t in texts) + b"data: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    if encoding is not None:
        body = gzip.compress(body)
        head += b"content-encoding: " + encoding + b"\r\n"
    return head + b"transfer-encoding: chunked\r\n\r\n" + chunk(body) + b"0\r\n\r\n"


def llm_at(port: int) -> OpenAIChat:
    env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    return build(OpenAIConfig(), env)


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[tuple[OpenAIChat, list[bytes]]]:
    """A model client at a server that answers each request with ``answer``; the list
    fills with the raw requests (head and body) as they arrive."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                request = head + await reader.readexactly(length)
                received.append(request)
                writer.write(answer(request.split(b" ")[1]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield llm_at(port), received
    finally:
        server.close()


async def turn(llm: OpenAIChat) -> list[object]:
    async with asyncio.timeout(5):
        return [event async for event in llm.stream(HELLO, ())]


async def test_the_request_is_byte_for_byte_what_httpx2_sends() -> None:
    async with serving(lambda _: event_stream("Hi")) as (llm, received):
        assert await turn(llm) == [TextDelta("Hi")]
        post = llm._post
        assert post._pool is not None  # the first went straight to the pool
        post._pool = None  # the second through httpx2's client, as before
        assert await turn(llm) == [TextDelta("Hi")]
    assert len(received) == 2 and received[0] == received[1]
    assert received[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_a_redirect_is_followed_as_httpx2_follows_it() -> None:
    def answer(target: bytes) -> bytes:
        if target == b"/v1/chat/completions":
            return (b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /v2/chat/completions\r\n"
                    b"content-length: 0\r\n\r\n")
        return event_stream("Moved", " here.")

    async with serving(answer) as (llm, received):
        assert await turn(llm) == [TextDelta("Moved"), TextDelta(" here.")]
    assert [r.split(b" ")[1] for r in received] == [
        b"/v1/chat/completions", b"/v1/chat/completions", b"/v2/chat/completions"]


async def test_a_compressed_event_stream_is_decoded() -> None:
    async with serving(lambda _: event_stream("Packed", encoding=b"gzip")) as (llm, received):
        assert await turn(llm) == [TextDelta("Packed")]
    assert len(received) == 1  # decoded where it arrived, not asked again


@pytest.mark.parametrize(("core", "expected"), [
    (httpcore2.ReadTimeout("slow"), httpx2.ReadTimeout),
    (httpcore2.PoolTimeout("full"), httpx2.PoolTimeout),
    (httpcore2.ConnectError("refused"), httpx2.ConnectError),
    (httpcore2.RemoteProtocolError("bad chunk"), httpx2.RemoteProtocolError),
    (httpcore2.WriteError("reset"), httpx2.WriteError),
])
def test_httpcore_errors_become_httpx2s(core: Exception, expected: type[Exception]) -> None:
    mapped = as_httpx_error(core)
    assert type(mapped) is expected and str(mapped) == str(core)


async def test_a_turn_that_closes_no_connection_skips_the_shielded_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``AsyncioPool`` overrides the method httpcore really calls (a rename would fail
    here), and reaches httpcore's own only when there is something to close."""
    ours: list[int] = []
    theirs: list[int] = []
    own = asyncio_net.AsyncioPool._close_connections
    base = httpcore2.AsyncConnectionPool._close_connections

    async def counting_ours(self: asyncio_net.AsyncioPool, closing: list[object]) -> None:
        ours.append(len(closing))
        await own(self, closing)  # type: ignore[arg-type]

    async def counting_theirs(self: httpcore2.AsyncConnectionPool, closing: list[object]) -> None:
        theirs.append(len(closing))
        await base(self, closing)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio_net.AsyncioPool, "_close_connections", counting_ours)
    monkeypatch.setattr(httpcore2.AsyncConnectionPool, "_close_connections", counting_theirs)
    async with serving(lambda _: event_stream("Hi")) as (llm, _):
        for _ in range(2):
            assert await turn(llm) == [TextDelta("Hi")]
    assert ours and set(ours) == {0} and theirs == []
