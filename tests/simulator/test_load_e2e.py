"""The lean load caller against the real server's loopback echo, over a real socket:
webhook, our own WebSocket handshake and framing through uvicorn, marks, stop, close."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import httpx
from support.server import running_server

from callbridge.server.app import create_app
from callbridge.settings import load_settings
from callbridge.simulator import voice
from callbridge.simulator.lean import Script
from callbridge.simulator.loadworker import Scheduler, _one_call

from .conftest import AUTH_TOKEN


async def test_two_lean_calls_round_trip_through_the_loopback(
    loopback_url: str, hello: voice.Utterance
) -> None:
    read_end, write_end = os.pipe()
    scheduler = Scheduler()
    ticker = asyncio.create_task(scheduler.run())
    # No greeting on the loopback: give up waiting for one quickly, ask once, hang up.
    scripts = [Script(hello, hello, 0.1, speech_timeout_s=0.3) for _ in range(2)]
    try:
        async with httpx.AsyncClient() as http:
            results = await asyncio.gather(
                *(
                    _one_call(http, scheduler, loopback_url, AUTH_TOKEN, 0.1 * i, s, write_end)
                    for i, s in enumerate(scripts)
                )
            )
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        os.close(write_end)
    with os.fdopen(read_end, "rb") as events:
        assert sorted(events.read()) == sorted(b"EEXX")
    for result in results:
        assert result["ok"], result["why"]
        sent, received = result["frames"]
        assert received > 0.8 * (hello.end_index or 0)  # the question came back
        assert received <= sent  # an echo, never more than was said
        assert result["marks_received"] >= 1  # a mark per second of echoed audio
        assert result["turns"] == 1 and result["send_lag_ms"]
        assert max(result["jitter_ms"]) < 1000


async def test_a_refused_call_reports_why_and_never_counts_as_up(loopback_url: str) -> None:
    read_end, write_end = os.pipe()
    scheduler = Scheduler()
    utterance = voice.Utterance("x", (b"\xff" * 160,), ("//8=",), None, None)
    async with httpx.AsyncClient() as http:
        result = await _one_call(
            http,
            scheduler,
            loopback_url,
            "wrong-token",
            0.0,
            Script(utterance, utterance, 1.0),
            write_end,
        )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as events:
        assert events.read() == b"F"
    assert not result["ok"] and "CallRefused" in str(result["why"])


async def test_past_the_servers_max_calls_a_call_is_refused_not_failed(
    tmp_path: Path, hello: voice.Utterance
) -> None:
    """Two calls at ``CALLBRIDGE_MAX_CALLS=1``: the second is turned away (at ``/voice``
    or, if both passed it before either stream began, at the stream with 1013)."""
    settings = load_settings(auth_token=AUTH_TOKEN, stream_secret="s" * 32, data_dir=tmp_path,
                             account_sid="", max_calls=1)
    read_end, write_end = os.pipe()
    scheduler = Scheduler()
    ticker = asyncio.create_task(scheduler.run())
    scripts = [Script(hello, hello, 1.5, speech_timeout_s=0.3) for _ in range(2)]
    try:
        async with running_server(create_app(settings)) as url, httpx.AsyncClient() as http:
            results = await asyncio.gather(*(
                _one_call(http, scheduler, url, AUTH_TOKEN, 0.3 * i, s, write_end)
                for i, s in enumerate(scripts)
            ))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        os.close(write_end)
    os.close(read_end)
    served, turned_away = results
    assert served["ok"], served["why"]
    assert not turned_away["ok"] and turned_away["refused"], turned_away
    assert "refused" in str(turned_away["why"])
