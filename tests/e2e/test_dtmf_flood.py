"""A keypad flood on one authenticated socket does not become thousands of turns.

What ``callbridge serve`` runs (the engine with a scripted keypad assistant, the store on
SQLite) takes one call whose socket sends 2 000 ``dtmf`` frames in a burst, as was seen
in the wild. Before the per-socket budget each press became a stored user turn (and with
an LLM assistant, a model request).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import websockets
from support import twilio_stream as tw
from support.calls import answer_call
from support.server import running_server

from callbridge.server.app import serving_app
from callbridge.settings import load_settings
from callbridge.store.repository import get_call

AUTH_TOKEN = "e" * 32
ASSISTANT = """
name: flood-test
firstMessage: Hi.
vad: {provider: webrtc}
transcriber: {provider: none}
model:
  provider: scripted
  intents:
    - {name: one, dtmf: "1", reply: One.}
voice: {provider: espeak, voiceId: en-us, rate: 220}
"""


async def test_2000_key_presses_in_a_burst_are_held_to_the_keypad_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assistant.yaml").write_text(ASSISTANT, encoding="utf-8")
    settings = load_settings(auth_token=AUTH_TOKEN, data_dir=tmp_path / "data")
    app = serving_app(settings, tmp_path / "assistant.yaml")
    async with running_server(app) as base:
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            answered = await answer_call(client, base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with websockets.connect(answered.stream_url, compression=None) as ws:
            await ws.send(tw.connected())
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            await ws.send(tw.media(stream, b"\xff" * 160, seq=2, chunk=1, timestamp_ms=0))
            for i in range(2000):
                await ws.send(tw.dtmf(stream, "1", seq=3 + i))
            await ws.send(tw.stop(stream, answered.call_sid, seq=3000))
            async with asyncio.timeout(20):
                async for _ in ws:
                    pass
        rejected = app.state.edge.stats.frames_rejected["dtmf_rate"]
        database = app.state.store.database
        for _ in range(500):
            detail = await get_call(database, answered.call_sid)
            if detail is not None and detail.call.ended_at is not None:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the call's end never reached the store")
    presses = [t for t in detail.turns if t.role == "user"]
    # A burst of 20 passes, plus 10 a second for however long the 2 000 frames took.
    print(f"{len(presses)} user turns, {rejected} presses dropped")
    assert 1 <= len(presses) <= 30
    assert rejected >= 1970
