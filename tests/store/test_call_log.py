"""``CallLog`` around a runner: call row, turns in wall time, events from log lines,
the recording and the metrics (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import wave
from datetime import UTC, datetime
from pathlib import Path

from callbridge.clock import ManualClock
from callbridge.engine.events import CallEvent, TurnRecord
from callbridge.engine.runner import CallStats
from callbridge.engine.transport import CallerAudio, CallerHungUp, CallInfo, LineEvent
from callbridge.server.call_log import CallLog, Providers
from callbridge.store.database import Database
from callbridge.store.events import parse_fields
from callbridge.store.repository import get_call
from callbridge.store.writer import StoreWriter
from callbridge.telemetry.logging import bind_call
from callbridge.telemetry.metrics import Metrics

SID = "CA" + "4" * 32
WALL0 = 1_750_000_000.0


class ListTransport:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_audio(self, ulaw: bytes) -> None:
        self.sent.append(f"audio {len(ulaw)}")

    async def send_mark(self, name: str) -> None:
        self.sent.append(f"mark {name}")

    async def send_clear(self) -> None:
        self.sent.append("clear")

    async def hangup(self) -> None:
        self.sent.append("hangup")

    async def transfer(self, to: str) -> None:
        self.sent.append(f"transfer {to}")


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_call_is_recorded_end_to_end(database: Database, tmp_path: Path) -> None:
    clock = ManualClock(500.0)
    metrics = Metrics()
    writer = StoreWriter(database)
    writer.start()
    log = CallLog(
        writer,
        assistant="keypad",
        recordings_dir=tmp_path / "rec",
        metrics=metrics,
        providers=Providers(stt="deepgram", llm="openai", tts="elevenlabs"),
        clock=clock,
        wall_clock=lambda: WALL0 + (clock.now() - 500.0),
    )
    log.bridge.install()

    async def runner(info: CallInfo, transport: object, line: asyncio.Queue[LineEvent]) -> None:
        bind_call(info.call_sid, info.stream_sid)
        assert (await line.get()) == CallerAudio(b"\xff" * 160, 0)
        clock.advance(1.0)
        for _ in range(3):
            await transport.send_audio(b"\x10" * 160)  # type: ignore[attr-defined]
        await transport.send_clear()  # type: ignore[attr-defined]
        log.on_event(
            info, CallEvent("barge_in", {"reason": "speech", "heard_words": 2, "reaction_ms": 210})
        )
        log.on_event(info, CallEvent("reply_failed", {"error": "deepgram: HTTP 500: internal"}))
        log.on_turn(
            info,
            TurnRecord(
                role="assistant",
                text="Billing. Your invoices",
                heard_text="Billing.",
                interrupted=True,
                started_at=500.5,
                ended_at=501.0,
                kind="answer",
                latency_ms={"stt": 100.0, "first_audio": 250.0, "first_frame": 252.25},
            ),
        )
        assert isinstance(await line.get(), CallerHungUp)
        log.on_event(info, CallEvent("caller_hung_up", {"reason": "stop"}))
        log.on_end(info, CallStats(barge_ins=1, stale_interrupts=0, dropped_frames=4))

    line: asyncio.Queue[LineEvent] = asyncio.Queue()
    line.put_nowait(CallerAudio(b"\xff" * 160, 0))
    line.put_nowait(CallerHungUp("stop"))
    transport = ListTransport()
    info = CallInfo(SID, "MZ" + "5" * 32, "+15550001111", "+15550002222")
    try:
        await asyncio.create_task(log.wrap(runner)(info, transport, line))
        await writer.flush()
    finally:
        log.bridge.uninstall()
        await writer.close()

    assert transport.sent == ["audio 160"] * 3 + ["clear"]
    detail = await get_call(database, SID)
    assert detail is not None
    call = detail.call
    assert (call.assistant, call.from_number, call.outcome, call.status) == (
        "keypad",
        "+15550001111",
        "caller_hung_up",
        "completed",
    )
    (turn,) = detail.turns
    assert turn.started_at.replace(tzinfo=UTC) == datetime.fromtimestamp(WALL0 + 0.5, UTC)
    assert (turn.heard_text, turn.interrupted, turn.first_frame_ms) == ("Billing.", True, 252.2)
    kinds = [e.kind for e in detail.events]
    assert kinds == [
        "stream_started",
        "barge_in",
        "reply_failed",
        "caller_hung_up",
        "playout_drops",
    ]
    assert detail.events[1].data == {"reason": "speech", "heard_words": 2, "reaction_ms": 210}
    assert detail.events[2].data == {"error": "deepgram: HTTP 500: internal"}
    assert detail.recording is not None and detail.recording.duration_ms is not None
    with wave.open(detail.recording.path, "rb") as w:
        # 1 s in, 60 ms of bot audio were sent ahead and then cleared: never heard.
        assert (w.getnchannels(), w.getnframes()) == (2, 8000)

    assert sample(metrics, "callbridge_barge_ins_total") == 1
    assert sample(metrics, "callbridge_barge_in_reaction_seconds_sum") == 0.21
    assert sample(metrics, "callbridge_errors_total", kind="provider") == 1
    assert sample(metrics, "callbridge_playout_dropped_frames_total") == 4
    assert sample(metrics, "callbridge_turn_latency_seconds_count") == 1
    assert sample(metrics, "callbridge_turn_latency_seconds_sum") == 0.25225
    assert (
        sample(metrics, "callbridge_provider_ttfb_seconds_sum", stage="stt", provider="deepgram")
        == 0.1
    )
    assert (
        sample(
            metrics,
            "callbridge_provider_ttfb_seconds_sum",
            stage="llm+tts",
            provider="openai+elevenlabs",
        )
        == 0.15
    )


async def test_log_events_outside_a_call_are_not_stored(database: Database) -> None:
    writer = StoreWriter(database)
    writer.start()
    log = CallLog(writer)
    log.bridge.install()
    try:
        logging.getLogger("callbridge.server.media").info("media.gap gap_ms=240")
        await writer.flush()
    finally:
        log.bridge.uninstall()
        await writer.close()
    assert writer.written == 0


def test_fields_run_to_the_next_key() -> None:
    assert parse_fields("reason=goodbye") == {"reason": "goodbye"}
    assert parse_fields("lag_ms=1200 error=x: y=z b") == {"lag_ms": 1200, "error": "x:", "y": "z b"}
    assert parse_fields("delay_s=1.5 error=HTTP 500: boom") == {
        "delay_s": 1.5,
        "error": "HTTP 500: boom",
    }
    assert parse_fields("") == {}


async def test_a_provider_retry_in_a_call_is_recorded_with_its_fields(database: Database) -> None:
    from callbridge.errors import ProviderError
    from callbridge.providers.retry import retry_call

    writer = StoreWriter(database)
    writer.start()
    log = CallLog(writer)
    log.bridge.install()
    sid = "CA" + "7" * 32
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ProviderError("deepgram", "HTTP 503", retryable=True)
        return "ok"

    async def runner(info: CallInfo, transport: object, line: asyncio.Queue[LineEvent]) -> None:
        bind_call(info.call_sid, info.stream_sid)

        async def no_wait(_: float) -> None:
            return None

        assert await retry_call(flaky, sleep=no_wait) == "ok"

    try:
        await log.wrap(runner)(CallInfo(sid, "MZ" + "7" * 32), object(), asyncio.Queue())  # type: ignore[arg-type]
        await writer.flush()
    finally:
        log.bridge.uninstall()
        await writer.close()
    detail = await get_call(database, sid)
    assert detail is not None
    (retry,) = [e for e in detail.events if e.kind == "provider_retry"]
    assert retry.data == {"provider": "deepgram", "retry": 1, "delay_s": 1.0,
                          "error": "deepgram: HTTP 503"}
