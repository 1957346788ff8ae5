"""The LLM pool's asyncio network layer: TLS with ALPN, reads, timeouts, closes, and the
model clients really running on it, on asyncio's loop and on uvloop (the server's)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpcore2
import pytest
from fakes.openai_chat import FakeOpenAI
from fakes.script import Reply

from callbridge.providers.base import Message, TextDelta
from callbridge.providers.llm import asyncio_net
from callbridge.providers.llm.asyncio_net import AsyncioBackend
from callbridge.providers.llm.openai import OpenAIConfig, build

HELLO = [Message("system", "Be brief."), Message("user", "Hi")]
# A self-signed certificate for localhost and 127.0.0.1 (valid to 2126), key included.
PEM = Path(__file__).resolve().parents[1] / "fakes" / "localhost_tls.pem"


@asynccontextmanager
async def tls_echo(alpn: list[str]) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 that answers each read with its bytes upper-cased and
    closes after ``bye``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(PEM)
    context.set_alpn_protocols(alpn)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
            if data.endswith(b"bye"):
                break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(PEM))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


async def test_tls_negotiates_alpn_and_carries_bytes_both_ways() -> None:
    async with tls_echo(["h2"]) as port:
        plain = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        stream = await plain.start_tls(client_context(), server_hostname="localhost", timeout=5)
        assert stream.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        assert stream.get_extra_info("server_addr")[1] == port
        assert not stream.get_extra_info("is_readable")  # idle, nothing from the server
        await stream.write(b"hello", timeout=5)
        assert await stream.read(65536, timeout=5) == b"HELLO"
        await stream.write(b"and bye", timeout=5)
        assert await stream.read(3, timeout=5) == b"AND"  # max_bytes is honoured
        assert await stream.read(65536, timeout=5) == b" BYE"
        assert await stream.read(65536, timeout=5) == b""  # the server closed
        assert stream.get_extra_info("is_readable")  # a closed idle connection shows it
        await stream.aclose()


async def test_a_certificate_for_another_name_is_a_connect_error() -> None:
    async with tls_echo(["http/1.1"]) as port:
        plain = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        with pytest.raises(httpcore2.ConnectError):
            await plain.start_tls(client_context(), server_hostname="api.openai.com", timeout=5)


async def test_a_read_with_nothing_coming_times_out() -> None:
    async with tls_echo(["http/1.1"]) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        stream = await stream.start_tls(client_context(), server_hostname="localhost", timeout=5)
        with pytest.raises(httpcore2.ReadTimeout):
            await stream.read(1024, timeout=0.05)
        await stream.aclose()
        with pytest.raises(httpcore2.WriteError):
            await stream.write(b"after close", timeout=1)


async def test_nobody_listening_is_a_connect_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(httpcore2.ConnectError):
        await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)


async def _two_turns() -> list[object]:
    async with FakeOpenAI([Reply(text=("Hi", " there."))]) as fake:
        env = {"OPENAI_API_KEY": "test-openai-key", "OPENAI_BASE_URL": fake.base_url}
        llm = build(OpenAIConfig(), env)
        events: list[object] = []
        for _ in range(2):
            events += [event async for event in llm.stream(HELLO, ())]
        return events


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_model_client_runs_on_it(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections are opened by ``AsyncioBackend`` (not anyio's), once for two turns."""
    counted: list[str] = []
    connect = AsyncioBackend.connect_tcp

    async def counting(self: AsyncioBackend, host: str, port: int, **kwargs: object) -> object:
        counted.append(host)
        return await connect(self, host, port, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio_net.AsyncioBackend, "connect_tcp", counting)
    factory = None
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        events = runner.run(_two_turns())
    assert events == [TextDelta("Hi"), TextDelta(" there.")] * 2
    assert counted == ["127.0.0.1"]
