"""``CallLog`` around a runner: call row, turns in wall time, the call's typed events
(from its ``emit``, through the bus; never from log lines), the recording and the
metrics (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import wave
from datetime import UTC, datetime
from pathlib import Path

from callbridge.call_events import CallEventBus, EngineNote, MediaGap
from callbridge.clock import ManualClock
from callbridge.engine.events import TurnRecord
from callbridge.engine.runner import CallStats
from callbridge.engine.transport import CallerAudio, CallerHungUp, CallInfo, Inbox, Line, LineEvent
from callbridge.server.call_log import CallLog, Providers
from callbridge.store.database import Database
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
    bus = CallEventBus()
    bus.subscribe(metrics.count_event)
    bus.subscribe(log.on_event)

    async def runner(info: CallInfo, transport: object, line: Line) -> None:
        inbox: Inbox[LineEvent] = Inbox()
        inbox.attach(line)
        assert (await inbox.get()) == CallerAudio(b"\xff" * 160, 0)
        clock.advance(1.0)
        for _ in range(3):
            await transport.send_audio(b"\x10" * 160)  # type: ignore[attr-defined]
        await transport.send_clear()  # type: ignore[attr-defined]
        info.emit(
            EngineNote("barge_in", {"reason": "speech", "heard_words": 2, "reaction_ms": 210})
        )
        info.emit(EngineNote("reply_failed", {"error": "deepgram: HTTP 500: internal"}))
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
        assert isinstance(await inbox.get(), CallerHungUp)
        info.emit(EngineNote("caller_hung_up", {"reason": "stop"}))
        log.on_end(info, CallStats(barge_ins=1, stale_interrupts=0, dropped_frames=4))

    line = Line()
    line.put_nowait(CallerAudio(b"\xff" * 160, 0))
    line.put_nowait(CallerHungUp("stop"))
    transport = ListTransport()
    info = CallInfo(
        SID, "MZ" + "5" * 32, "+15550001111", "+15550002222", emit=bus.emitter(SID)
    )
    try:
        await asyncio.create_task(log.wrap(runner)(info, transport, line))
        await writer.flush()
    finally:
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


async def test_a_log_line_is_not_a_call_event(database: Database) -> None:
    """Logs are output only: an event-shaped line inside a call stores nothing, and the
    typed event stores the same fact even with the ``callbridge`` loggers silenced."""
    writer = StoreWriter(database)
    writer.start()
    log = CallLog(writer)
    bus = CallEventBus()
    bus.subscribe(log.on_event)
    sid = "CA" + "6" * 32
    logger = logging.getLogger("callbridge")
    level = logger.level
    try:
        bind_call(sid)
        logger.setLevel(logging.INFO)
        logging.getLogger("callbridge.server.media").info("media.gap kind=timestamp gap_ms=240")
        await writer.flush()
        assert writer.written == 0
        logger.setLevel(logging.CRITICAL)
        bus.emitter(sid)(MediaGap("timestamp", 240))
        await writer.flush()
    finally:
        logger.setLevel(level)
        await writer.close()
    detail = await get_call(database, sid)
    assert detail is not None
    assert [(e.kind, e.data) for e in detail.events] == [
        ("gap", {"kind": "timestamp", "gap_ms": 240, "coalesced": 0})
    ]


async def test_a_provider_retry_in_a_call_is_recorded_with_its_fields(database: Database) -> None:
    from callbridge.errors import ProviderError
    from callbridge.providers.retry import record_retries, retry_call

    writer = StoreWriter(database)
    writer.start()
    log = CallLog(writer)
    bus = CallEventBus()
    bus.subscribe(log.on_event)
    sid = "CA" + "7" * 32
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ProviderError("deepgram", "HTTP 503", retryable=True)
        return "ok"

    async def runner(info: CallInfo, transport: object, line: Line) -> None:
        async def no_wait(_: float) -> None:
            return None

        assert await retry_call(flaky, sleep=no_wait, on_retry=record_retries(info.emit)) == "ok"

    info = CallInfo(sid, "MZ" + "7" * 32, emit=bus.emitter(sid))
    try:
        await log.wrap(runner)(info, object(), Line())  # type: ignore[arg-type]
        await writer.flush()
    finally:
        await writer.close()
    detail = await get_call(database, sid)
    assert detail is not None
    (retry,) = [e for e in detail.events if e.kind == "provider_retry"]
    assert retry.data == {"provider": "deepgram", "retry": 1, "delay_s": 1.0,
                          "error": "deepgram: HTTP 503"}


async def test_bot_audio_of_any_message_length_lands_on_the_recording_as_played(
    database: Database, tmp_path: Path
) -> None:
    """40 ms messages (and a lone 20 ms one) are laid end to end on the bot's leg where
    they play; a clear wipes what had not played; the board shows the bot speaking and
    the hang-up is the call's outcome, all through the wrapped transport and line."""
    from callbridge.audio import ulaw

    clock = ManualClock(500.0)
    writer = StoreWriter(database)
    writer.start()
    log = CallLog(writer, recordings_dir=tmp_path / "rec", clock=clock,
                  wall_clock=lambda: WALL0 + (clock.now() - 500.0))
    sent = [b"\x10" * 320, b"\x20" * 160, b"\x30" * 320]  # 100 ms sent at once

    async def runner(info: CallInfo, transport: object, line: Line) -> None:
        inbox: Inbox[LineEvent] = Inbox()
        inbox.attach(line)
        await inbox.get()
        clock.advance(1.0)
        for audio in sent:
            await transport.send_audio(audio)  # type: ignore[attr-defined]
        assert [row.phase for row in log.board.rows()] == ["speaking"]
        clock.advance(0.05)  # 50 ms of it played...
        await transport.send_clear()  # type: ignore[attr-defined]  # ...the rest never
        assert isinstance(await inbox.get(), CallerHungUp)

    line = Line()
    line.put_nowait(CallerAudio(b"\xff" * 160, 0))
    line.put_nowait(CallerHungUp("stop"))
    transport = ListTransport()
    try:
        await log.wrap(runner)(CallInfo(SID, "MZ" + "5" * 32), transport, line)
        await writer.flush()
    finally:
        await writer.close()
    assert transport.sent == ["audio 320", "audio 160", "audio 320", "clear"]
    detail = await get_call(database, SID)
    assert detail is not None and detail.call.outcome == "caller_hung_up"
    assert detail.recording is not None
    with wave.open(detail.recording.path, "rb") as w:
        pcm = w.readframes(w.getnframes())
    bot = b"".join(pcm[i + 2 : i + 4] for i in range(0, len(pcm), 4))  # the right channel
    at = 8000 * 2  # 1 s in, 16-bit samples
    heard = ulaw.decode(b"\x10" * 320 + b"\x20" * 80)
    assert bot[at : at + len(heard)] == heard
    assert bot[at + len(heard) :] == ulaw.decode(b"\xff" * (len(bot[at + len(heard) :]) // 2))
