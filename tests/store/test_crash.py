"""``kill -9`` mid-call: every finished turn is in the database, the recording plays.

The real ``callbridge serve`` runs as a subprocess (store + recording on, a keypad
assistant with local providers). A raw WebSocket client plays Twilio: signed
``/voice``, then the Media Streams socket with 20 ms frames in real time, mark echoes and
keypad presses. Mid-way through the bot's second answer the server gets SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx
import pytest
import websockets
from support import twilio_stream as tw
from support.calls import answer_call

from callbridge.store.database import SQLITE_FILE, Database
from callbridge.store.repository import CallDetail, get_call

AUTH_TOKEN = "c" * 32
ASSISTANT = """
name: crash-test
recordingEnabled: true
firstMessage: Hello.
vad: {provider: webrtc}
transcriber: {provider: none}
model:
  provider: scripted
  intents:
    - {name: one, dtmf: "1", reply: Billing is on the first.}
    - name: two
      dtmf: "2"
      reply: >-
        Support. Please restart your device and wait one full minute before you try
        again, and if that does not help, call us back at any time of the day.
voice: {provider: espeak, voiceId: en-us, rate: 175}
"""
ENV_VARS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "PUBLIC_URL",
    "DATABASE_URL",
    "CALLBRIDGE_API_TOKEN",
    "CALLBRIDGE_STREAM_SECRET",
    "CALLBRIDGE_INSECURE_SKIP_SIGNATURE",
    "CALLBRIDGE_RECORDINGS_DIR",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    (tmp_path / "assistant.yaml").write_text(ASSISTANT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        CALLBRIDGE_HOST="127.0.0.1",
        CALLBRIDGE_PORT=str(port),
        CALLBRIDGE_DATA_DIR=str(tmp_path / "data"),
        CALLBRIDGE_ASSISTANT=str(tmp_path / "assistant.yaml"),
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "callbridge.cli", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    yield proc, port, tmp_path / "data"
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


async def wait_until_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(300):
            assert proc.poll() is None, "the server exited at start-up"
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not come up in 30 s")


async def turns_reach(database: Database, sid: str, count: int) -> CallDetail:
    """Poll the database (WAL: readable while the server writes) for ``count`` turns."""
    for _ in range(300):
        detail = await get_call(database, sid)
        if detail is not None and len(detail.turns) >= count:
            return detail
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} turns after 30 s")


async def test_sigkill_mid_call_leaves_every_finished_turn_and_a_playable_recording(
    server: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, data_dir = server
    base = f"http://127.0.0.1:{port}"
    await wait_until_up(base, proc)
    async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
        answered = await answer_call(client, base, AUTH_TOKEN)
    sid, stream = answered.call_sid, tw.stream_sid()
    database = Database(f"sqlite+aiosqlite:///{data_dir / SQLITE_FILE}")
    bot_frames = 0
    heard_enough = asyncio.Event()
    enough_at: int | None = None
    seq = 2
    started = time.monotonic()

    def next_seq() -> int:
        nonlocal seq
        seq += 1
        return seq

    async with websockets.connect(answered.stream_url, compression=None) as ws:
        await ws.send(tw.connected())
        await ws.send(tw.start(stream, sid, answered.params, seq=1))

        async def speak_silence() -> None:
            for i in range(10_000):
                frame = tw.media(
                    stream, b"\xff" * 160, seq=next_seq(), chunk=i + 1, timestamp_ms=20 * i
                )
                await ws.send(frame)
                await asyncio.sleep(0.02)

        async def listen() -> None:
            nonlocal bot_frames, enough_at
            async for text in ws:
                message = json.loads(text)
                if message["event"] == "media":
                    bot_frames += 1
                    if enough_at is not None and bot_frames >= enough_at:
                        heard_enough.set()
                elif message["event"] == "mark":  # played at once: we are a patient caller
                    await ws.send(tw.mark(stream, message["mark"]["name"], seq=next_seq()))

        tasks = [asyncio.create_task(speak_silence()), asyncio.create_task(listen())]
        try:
            await turns_reach(database, sid, 1)  # the greeting, heard to the end
            await ws.send(tw.dtmf(stream, "1", seq=next_seq()))
            await turns_reach(database, sid, 3)  # "(pressed 1)" and its answer
            await ws.send(tw.dtmf(stream, "2", seq=next_seq()))
            await turns_reach(database, sid, 4)
            enough_at = bot_frames + 50  # a second of the long answer is on the line
            await asyncio.wait_for(heard_enough.wait(), timeout=30)
            os.kill(proc.pid, signal.SIGKILL)
            killed_after_s = time.monotonic() - started
            proc.wait(timeout=10)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        detail = await get_call(database, sid)
    finally:
        await database.dispose()
    assert detail is not None
    assert [(t.role, t.kind, t.text) for t in detail.turns] == [
        ("assistant", "greeting", "Hello."),
        ("user", "", "(pressed 1)"),
        ("assistant", "answer", "Billing is on the first."),
        ("user", "", "(pressed 2)"),
    ]
    assert detail.turns[2].first_frame_ms is not None
    assert detail.call.ended_at is None  # it never ended: the process died
    assert [e.kind for e in detail.events][:1] == ["stream_started"]
    assert detail.recording is not None and detail.recording.duration_ms is None
    with wave.open(detail.recording.path, "rb") as w:  # the header is valid: it plays
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        recorded_s = w.getnframes() / 8000
        pcm = w.readframes(w.getnframes())
    assert len(pcm) == w.getnframes() * 4
    print(f"killed after {killed_after_s:.2f} s, recorded {recorded_s:.2f} s")
    assert killed_after_s - 2.0 <= recorded_s <= killed_after_s  # lost at most ~1 s (+ start-up)
    right = memoryview(pcm).cast("h")[1::2]
    assert any(right), "the bot's leg has audio"
