"""A call's facts reach its record typed, through the call's one ``emit``: a provider
retry (the retry policy's hook), a media gap and a rejected frame (the socket adapter)
travel from a real Media Streams socket on 127.0.0.1 into the SQLite record and the
metrics, with the ``callbridge`` loggers silenced: nothing is read back from logs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from support import twilio_stream as tw
from support.calls import answer_call
from support.server import running_server
from support.twilio_sign import sign_url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callbridge.call_events import StreamEnded
from callbridge.engine.transport import (
    CallerAudio,
    CallerHungUp,
    CallInfo,
    CallTransport,
    Inbox,
    Line,
    LineEvent,
)
from callbridge.errors import ProviderError
from callbridge.providers.retry import record_retries, retry_call
from callbridge.server.app import create_app
from callbridge.server.call_log import CallLog
from callbridge.settings import Settings
from callbridge.store import Store
from callbridge.store.repository import get_call
from callbridge.telemetry.metrics import Metrics

from .conftest import AUTH_TOKEN

MakeSettings = Callable[..., Settings]
ClientFor = Callable[[str], httpx.AsyncClient]


@pytest.fixture
def silent_logs() -> Iterator[None]:
    """The record must not depend on what the logs let through."""
    logger = logging.getLogger("callbridge")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class RetryingRunner:
    """Asks a flaky provider (503 once, then fine) under the real retry policy when the
    caller's first frame arrives, with the hook the engine passes; echoes each frame."""

    def __init__(self) -> None:
        self.attempts = 0

    async def _transcribe(self) -> str:
        self.attempts += 1
        if self.attempts == 1:
            raise ProviderError("deepgram", "HTTP 503: busy", retryable=True)
        return "ok"

    async def __call__(
        self, info: CallInfo, transport: CallTransport, line: Line
    ) -> None:
        async def no_wait(_: float) -> None:
            return None

        inbox: Inbox[LineEvent] = Inbox()
        inbox.attach(line)
        while True:
            event = await inbox.get()
            if isinstance(event, CallerHungUp):
                return
            if isinstance(event, CallerAudio):
                if self.attempts == 0:
                    on_retry = record_retries(info.emit)
                    assert await retry_call(self._transcribe, sleep=no_wait,
                                            on_retry=on_retry) == "ok"
                await transport.send_audio(event.ulaw)


async def test_a_retry_a_gap_and_a_bad_frame_reach_the_record_as_typed_events(
    make_settings: MakeSettings, client_for: ClientFor, silent_logs: None
) -> None:
    settings = make_settings()
    metrics = Metrics()
    store = Store.from_settings(settings)
    call_log = CallLog(store.writer, assistant="events", metrics=metrics)
    runner = RetryingRunner()
    app = create_app(settings, call_log.wrap(runner), store=store, metrics=metrics,
                     call_log=call_log)
    ended = asyncio.Event()  # the socket's account is the call's last event
    app.state.edge.events.subscribe(
        lambda sid, event: ended.set() if isinstance(event, StreamEnded) else None
    )
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        headers = {"X-Twilio-Signature": sign_url(AUTH_TOKEN, answered.stream_url)}
        async with await connect(answered.stream_url, additional_headers=headers) as ws:
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            await ws.send(tw.media(stream, b"\x01" * 160, seq=2, chunk=1, timestamp_ms=0))
            assert _payload(await _recv(ws)) == b"\x01" * 160  # retried, then answered
            await ws.send("{not json")  # rejected; the call goes on
            # 380 ms of the caller's audio missing at Twilio: a timestamp gap.
            await ws.send(tw.media(stream, b"\x02" * 160, seq=3, chunk=2, timestamp_ms=400))
            assert _payload(await _recv(ws)) == b"\x02" * 160
            await ws.send(tw.stop(stream, answered.call_sid, seq=4))
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
        await asyncio.wait_for(ended.wait(), 10)
        await store.writer.flush()
        detail = await get_call(store.database, answered.call_sid)

    assert detail is not None
    events: dict[str, list[dict[str, Any]]] = {}
    for e in detail.events:
        events.setdefault(e.kind, []).append(e.data)
    assert events["provider_retry"] == [
        {"provider": "deepgram", "retry": 1, "delay_s": 1.0, "error": "deepgram: HTTP 503: busy"}
    ]
    assert [g for g in events["gap"] if g["kind"] == "timestamp"] == [
        {"kind": "timestamp", "gap_ms": 400, "coalesced": 0}
    ]
    (bad,) = events["bad_frame"]
    assert (bad["kind"], bad["count"]) == ("json", 1) and bad["detail"]
    (ended,) = events["stream_ended"]
    assert ended["rejected"] == {"json": 1} and ended["timestamp_gaps"] == 1
    errors = metrics.registry.get_sample_value(
        "callbridge_errors_total", {"kind": "provider_retry"}
    )
    assert errors == 1


def _payload(message: dict[str, Any]) -> bytes:
    assert message["event"] == "media", message
    return base64.b64decode(message["media"]["payload"])


async def _recv(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]

