"""The LLM client's lean HTTP/1.1 path (pool.py, h11_body.py) against a raw HTTP/1.1
server on 127.0.0.1 that scripts each answer byte by byte: bodies read whole a network
read, cut and failed streams never left in the pool, idle connections taken without a
pass over all of them, expired ones closed on the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpcore2
import pytest

from callbridge.errors import ProviderError
from callbridge.providers.base import Message, TextDelta
from callbridge.providers.llm import openai as openai_llm
from callbridge.providers.llm import pool as llm_pool
from callbridge.providers.llm.asyncio_net import AsyncioBackend
from callbridge.providers.llm.h11_body import H11Body
from callbridge.providers.llm.openai import OpenAIChat, OpenAIConfig, build
from providers_cloud.helpers import wait_for

HELLO = [Message("user", "Hi")]
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
END = b"0\r\n\r\n"


def event(text: str) -> bytes:
    return b'data: {"choices": [{"delta": {"content": "%s"}}]}\n\n' % text.encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def whole(*texts: str) -> bytes:
    return HEAD + b"".join(chunk(event(t)) for t in texts) + chunk(b"data: [DONE]\n\n") + END


Script = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Wire:
    """Counts connections, and the ones the client closed; ``script`` answers request
    ``n`` (from 0) and may read the socket itself (e.g. to wait for the client's close)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests = 0
        self.connections = 0
        self.closed_by_client = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client += 1
                    return
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                self.requests += 1
                await self.script(self.requests - 1, reader, writer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[tuple[OpenAIChat, Wire]]:
    wire = Wire(script)
    server = await asyncio.start_server(wire.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    try:
        yield build(OpenAIConfig(), env), wire
    finally:
        server.close()


async def turn(llm: OpenAIChat) -> list[object]:
    async with asyncio.timeout(5):
        return [event async for event in llm.stream(HELLO, ())]


async def answer_whole(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(whole("Hi"))


async def test_a_read_comes_up_whole_and_a_chunk_split_across_reads_joins() -> None:
    """Two events in one network write are one item; a chunk cut in two writes is two
    items that together are its bytes; the lean reader is the one used."""
    go_on = asyncio.Event()

    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + chunk(event("a")) + chunk(event("b")))
        await writer.drain()
        await go_on.wait()
        third = chunk(event("c"))
        writer.write(third[:20])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(third[20:] + chunk(b"data: [DONE]\n\n") + END)

    async with serving(script) as (llm, _):
        async with asyncio.timeout(5):
            stream = await llm._post.open({"model": "m", "stream": True})
            assert type(stream.chunks) is H11Body
            items = [await anext(stream.chunks)]
            go_on.set()
            items += [item async for item in stream.chunks]
            await stream.aclose()
    assert items[0] == event("a") + event("b")
    assert b"".join(items) == event("a") + event("b") + event("c") + b"data: [DONE]\n\n"
    assert len(items) >= 3  # the split chunk came up as it arrived


async def test_a_cut_exchange_closes_its_connection_and_the_next_turn_gets_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Barge-in on a reply whose stream never ends: after the drain limit the read is
    cancelled mid-body; that connection is closed, never handed to the next turn."""
    monkeypatch.setattr(openai_llm, "DRAIN_S", 0.05)

    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 0:
            writer.write(HEAD + chunk(event("first")))
            await writer.drain()
            await reader.read()  # nothing more, until the client hangs up
            return
        writer.write(whole("Next."))

    async with serving(script) as (llm, wire):
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in llm.stream(HELLO, ()):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        await asyncio.wait({task})
        await wait_for(lambda: openai_llm.exchanges_in_flight() == 0)
        assert await turn(llm) == [TextDelta("Next.")]
        assert await turn(llm) == [TextDelta("Next.")]
        assert wire.connections == 2  # the cut one was replaced once, then reused


@pytest.mark.parametrize("fault", [
    b"zz\r\n",  # a chunk size that is not one
    b"",  # the server hangs up mid-body
])
async def test_a_broken_body_is_retryable_and_the_pool_recovers(fault: bytes) -> None:
    async def script(n: int, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 0:
            writer.write(HEAD + chunk(event("a")) + fault)
            await writer.drain()
            writer.close()
            return
        writer.write(whole("Again."))

    async with serving(script) as (llm, wire):
        received: list[object] = []
        with pytest.raises(ProviderError) as caught:
            async with asyncio.timeout(5):
                async for item in llm.stream(HELLO, ()):
                    received.append(item)
        assert caught.value.retryable and received == [TextDelta("a")]
        assert await turn(llm) == [TextDelta("Again.")]
        assert wire.connections == 2


async def test_with_many_idle_connections_a_turn_takes_one_without_a_pass_over_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(llm_pool, "SWEEP_S", 3600.0)
    passes: list[int] = []
    base = httpcore2.AsyncConnectionPool._assign_requests_to_connections

    def counting(self: httpcore2.AsyncConnectionPool) -> list[object]:
        passes.append(len(self._connections))
        return base(self)  # type: ignore[return-value]

    monkeypatch.setattr(httpcore2.AsyncConnectionPool, "_assign_requests_to_connections",
                        counting)
    release = asyncio.Event()

    async def script(n: int, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n < 12:  # twelve at once: twelve connections
            await release.wait()
        writer.write(whole("Hi"))

    async with serving(script) as (llm, wire):
        calls = [asyncio.create_task(turn(llm)) for _ in range(12)]
        await wait_for(lambda: wire.requests == 12)
        release.set()
        assert all(r == [TextDelta("Hi")] for r in await asyncio.gather(*calls))
        before = len(passes)
        for _ in range(5):
            assert await turn(llm) == [TextDelta("Hi")]
        assert len(passes) == before  # no pass over the twelve
        assert wire.connections == 12 and wire.requests == 17


async def test_an_idle_connection_past_its_keep_alive_is_closed_and_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(llm_pool, "SWEEP_S", 3600.0)
    monkeypatch.setattr(openai_llm, "KEEPALIVE_S", 0.05)
    async with serving(answer_whole) as (llm, wire):
        assert await turn(llm) == [TextDelta("Hi")]
        await asyncio.sleep(0.1)
        assert await turn(llm) == [TextDelta("Hi")]
        await wait_for(lambda: wire.closed_by_client == 1)
        assert wire.connections == 2


async def test_an_idle_connection_the_server_closed_is_dropped_on_the_quick_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(llm_pool, "SWEEP_S", 3600.0)

    async def script(n: int, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(whole("Hi"))
        if n == 0:
            await writer.drain()
            writer.close()  # a vendor's idle timeout, right after the answer

    async with serving(script) as (llm, wire):
        assert await turn(llm) == [TextDelta("Hi")]
        await asyncio.sleep(0.05)
        assert await turn(llm) == [TextDelta("Hi")]
        assert wire.connections == 2 and wire.requests == 2


@asynccontextmanager
async def trickle(gaps_s: list[float]) -> AsyncIterator[int]:
    """A TCP server that writes a byte after each of ``gaps_s``, then nothing more."""
    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for gap in gaps_s:
            await asyncio.sleep(gap)
            writer.write(b"x")
        await asyncio.sleep(30)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_each_read_has_its_own_deadline_however_long_the_stream() -> None:
    """Bytes 0.06 s apart with a 0.15 s read timeout: five of them outlast the first
    read's deadline without a timeout; then nothing comes, and the read times out."""
    async with trickle([0.06] * 5) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        for _ in range(5):
            assert await stream.read(10, timeout=0.15) == b"x"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(httpcore2.ReadTimeout):
            await stream.read(10, timeout=0.15)
        assert 0.1 <= loop.time() - started < 2.0
        await stream.aclose()


async def test_a_read_without_a_timeout_is_not_cut_by_an_earlier_ones_timer() -> None:
    async with trickle([0.0, 0.3]) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        assert await stream.read(10, timeout=0.05) == b"x"  # leaves its timer set
        async with asyncio.timeout(5):
            assert await stream.read(10, timeout=None) == b"x"
        await stream.aclose()


async def test_a_shorter_timeout_after_a_longer_one_still_fires_on_time() -> None:
    async with trickle([0.0]) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        assert await stream.read(10, timeout=60) == b"x"
        async with asyncio.timeout(5):
            with pytest.raises(httpcore2.ReadTimeout):
                await stream.read(10, timeout=0.05)
        await stream.aclose()
