"""PostgreSQL stops and comes back under live calls: every finished turn lands, once.

What ``callbridge serve`` runs (``serving_app``: the engine with a keypad assistant on
local providers, the call log, the store on PostgreSQL) serves two calls on a real
uvicorn. Each caller speaks Media Streams in real time (20 ms frames, marks echoed,
keypad presses). Mid-call the test stops the database server (``pg_ctl stop -m fast``:
its sessions are cut, new connections refused), the callers go on pressing keys, then the
server is started again on the same port and data. Every turn the server finished —
before, during and after the outage — must be in the database exactly once.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from support import twilio_stream as tw
from support.calls import answer_call
from support.server import running_server

from callbridge.server.app import serving_app
from callbridge.settings import load_settings
from callbridge.store.database import Database
from callbridge.store.ops import StoreOp, TurnEnded
from callbridge.store.repository import get_call

from .pg import NoPostgres, OwnPostgres, fresh_database, own_postgres_server

AUTH_TOKEN = "d" * 32
ASSISTANT = """
name: outage-test
firstMessage: Hello.
vad: {provider: webrtc}
transcriber: {provider: none}
model:
  provider: scripted
  intents:
    - {name: one, dtmf: "1", reply: One.}
voice: {provider: espeak, voiceId: en-us, rate: 220}
"""


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    try:
        with own_postgres_server() as server:
            yield server
    except NoPostgres as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")


async def until(condition: Callable[[], bool], *, timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not so after {timeout_s:g} s")


class Caller:
    """One patient caller: silence in real time, every mark echoed at once."""

    def __init__(self, base: str, submitted: Callable[[str], int]) -> None:
        self.base = base
        self.submitted = submitted
        self.sid = ""
        self.stream = tw.stream_sid()
        self.seq = 1
        self.ws: websockets.ClientConnection | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def call(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, trust_env=False) as client:
            answered = await answer_call(client, self.base, AUTH_TOKEN)
        self.sid = answered.call_sid
        self.ws = await websockets.connect(answered.stream_url, compression=None)
        await self.ws.send(tw.connected())
        await self.ws.send(tw.start(self.stream, self.sid, answered.params, seq=self._seq()))
        self.tasks = [asyncio.create_task(self._speak()), asyncio.create_task(self._listen())]

    async def press_and_wait(self, digit: str, turns: int) -> None:
        """Press ``digit``; wait until the server has finished ``turns`` turns of this call."""
        assert self.ws is not None
        await self.ws.send(tw.dtmf(self.stream, digit, seq=self._seq()))
        await self.wait_turns(turns)

    async def wait_turns(self, turns: int) -> None:
        await until(lambda: self.submitted(self.sid) >= turns, timeout_s=20)

    async def hang_up(self) -> None:
        assert self.ws is not None
        await self.ws.send(tw.stop(self.stream, self.sid, seq=self._seq()))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.ws.close()

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    async def _speak(self) -> None:
        assert self.ws is not None
        for i in range(100_000):
            frame = tw.media(
                self.stream, b"\xff" * 160, seq=self._seq(), chunk=i + 1, timestamp_ms=20 * i
            )
            await self.ws.send(frame)
            await asyncio.sleep(0.02)

    async def _listen(self) -> None:
        assert self.ws is not None
        async for text in self.ws:
            message = json.loads(text)
            if message["event"] == "mark":
                await self.ws.send(tw.mark(self.stream, message["mark"]["name"], seq=self._seq()))


async def test_postgres_stopped_and_restarted_under_live_calls_loses_no_finished_turn(
    own_postgres: OwnPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = await fresh_database(own_postgres.url)
    (tmp_path / "assistant.yaml").write_text(ASSISTANT, encoding="utf-8")
    settings = load_settings(
        auth_token=AUTH_TOKEN,
        data_dir=tmp_path / "data",
        database_url=url,
        max_calls=0,
        stream_secret="a-secret-every-instance-shares",
    )
    app = serving_app(settings, tmp_path / "assistant.yaml")
    writer = app.state.store.writer
    turns_sent: dict[str, list[TurnEnded]] = defaultdict(list)
    submit = writer.submit

    def spy(op: StoreOp) -> bool:
        if isinstance(op, TurnEnded):
            turns_sent[op.sid].append(op)
        return bool(submit(op))

    monkeypatch.setattr(writer, "submit", spy)
    async with running_server(app) as base:
        callers = [Caller(base, lambda sid: len(turns_sent[sid])) for _ in range(2)]
        for caller in callers:
            await caller.call()
        try:
            await asyncio.gather(*(c.wait_turns(1) for c in callers))  # the greeting
            await asyncio.gather(*(c.press_and_wait("1", 3) for c in callers))
            await writer.flush()
            assert writer.healthy

            await own_postgres.halt()
            during = [len(turns_sent[c.sid]) for c in callers]
            await asyncio.gather(*(c.press_and_wait("1", 5) for c in callers))
            await asyncio.gather(*(c.press_and_wait("1", 7) for c in callers))
            await until(lambda: not writer.healthy, timeout_s=10)
            async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
                scrape = (await client.get("/metrics")).text
            assert "callbridge_store_healthy 0.0" in scrape
            assert writer.backlog > 0
            held_during = [len(turns_sent[c.sid]) - n for c, n in zip(callers, during, strict=True)]
            assert held_during == [4, 4]

            await own_postgres.resume()
            await asyncio.gather(*(c.press_and_wait("1", 9) for c in callers))
        finally:
            for caller in callers:
                await caller.hang_up()
        # The writer's backoff is at most 8 s.
        await until(lambda: writer.healthy and not writer.backlog, timeout_s=30)
        assert (writer.dropped, writer.failed, writer.outages) == (0, 0, 1)

    reader = Database(url)
    try:
        for caller in callers:
            detail = await get_call(reader, caller.sid)
            assert detail is not None
            stored = [(t.seq, t.role, t.text) for t in detail.turns]
            sent = [(op.seq, op.role, op.text) for op in turns_sent[caller.sid]]
            assert len(sent) >= 9
            assert stored == sorted(sent), "each finished turn once, none lost"
            assert detail.call.ended_at is not None
    finally:
        await reader.dispose()
