"""Logging: JSON lines carrying the call's ids from a ContextVar; secrets redacted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from callbridge.telemetry.logging import bind_call, call_context, configure_logging, log_event


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("INFO", "json", secrets=["supersecretvalue123"], stream=stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_call_ids_follow_the_call_into_its_tasks(captured: io.StringIO) -> None:
    log = logging.getLogger("t")

    async def call(sid: str) -> None:
        bind_call(sid, "MZ" + sid)
        await asyncio.sleep(0)
        await asyncio.create_task(asyncio.to_thread(lambda: None))
        inner = asyncio.create_task(asyncio.sleep(0))
        await inner
        log_event(log, logging.INFO, "turn.ended", latency_ms=120)

    await asyncio.gather(call("CA1"), call("CA2"))
    log.info("outside any call")
    lines = _lines(captured)
    assert {(x["call_sid"], x["stream_sid"]) for x in lines[:2]} == {
        ("CA1", "MZCA1"),
        ("CA2", "MZCA2"),
    }
    assert lines[0]["event"] == "turn.ended" and lines[0]["latency_ms"] == 120
    assert "call_sid" not in lines[2]


def test_call_context_is_undone(captured: io.StringIO) -> None:
    log = logging.getLogger("t")
    with call_context("CA9"):
        log.warning("inside")
    log.warning("after")
    inside, after = _lines(captured)
    assert inside["call_sid"] == "CA9" and "call_sid" not in after


def test_secrets_are_redacted_even_by_accident(captured: io.StringIO) -> None:
    logging.getLogger("t").error("token was %s", "supersecretvalue123")
    assert "supersecretvalue123" not in captured.getvalue()
    assert "[redacted]" in captured.getvalue()


def test_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", "text", stream=stream)
    try:
        with call_context("CA7"):
            logging.getLogger("t").info("hello")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("hello call_sid=CA7")
