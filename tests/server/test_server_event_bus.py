"""The edge's ``CallEventBus``: each call's ``emit`` reaches every subscriber with the
call's SID, the metrics count the errors among them, and a subscriber's bug stays out
of the call that emitted."""

from __future__ import annotations

import logging

import pytest

from callbridge.call_events import (
    BacklogFull,
    CallEvent,
    CallEventBus,
    EngineNote,
    FrameRejected,
    HangupFailed,
    MediaGap,
    ProviderRetried,
    RunnerFailed,
)
from callbridge.telemetry.metrics import Metrics


def test_each_call_s_emit_reaches_every_subscriber_with_its_sid() -> None:
    bus = CallEventBus()
    first: list[tuple[str, CallEvent]] = []
    second: list[tuple[str, CallEvent]] = []
    bus.subscribe(lambda sid, e: first.append((sid, e)))
    bus.subscribe(lambda sid, e: second.append((sid, e)))
    a, b = bus.emitter("CA1"), bus.emitter("CA2")
    a(MediaGap("arrival", 180))
    b(FrameRejected("json", 1, "expected JSON"))
    assert first == second == [
        ("CA1", MediaGap("arrival", 180)),
        ("CA2", FrameRejected("json", 1, "expected JSON")),
    ]


def test_a_failing_subscriber_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = CallEventBus()
    heard: list[CallEvent] = []

    def broken(sid: str, event: CallEvent) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(lambda sid, e: heard.append(e))
    with caplog.at_level(logging.ERROR, logger="callbridge.call_events"):
        bus.emitter("CA1")(BacklogFull(1000))  # does not raise into the socket's reader
    assert heard == [BacklogFull(1000)]
    assert any(r.exc_info for r in caplog.records)


def test_the_metrics_count_errors_by_kind() -> None:
    metrics = Metrics()
    for event in (
        ProviderRetried("deepgram", 1, 1.0, "deepgram: HTTP 503"),
        ProviderRetried("deepgram", 2, 2.0, "deepgram: HTTP 503"),
        BacklogFull(1000),
        RunnerFailed("RuntimeError('bug')"),
        HangupFailed("HTTP 500"),
        EngineNote("provider_failed", {"stage": "stt", "provider": "deepgram"}),
        EngineNote("provider_failed", {"stage": "reply", "provider": "openai"}),
        EngineNote("reply_failed", {"error": "openai: HTTP 500"}),
        EngineNote("stt_lost", {"provider": "deepgram"}),
        EngineNote("barge_in", {"reaction_ms": 180}),
        MediaGap("timestamp", 400),  # counted by the edge's own counters, not here
    ):
        metrics.count_event("CA1", event)

    def errors(kind: str) -> float:
        return metrics.registry.get_sample_value("callbridge_errors_total", {"kind": kind}) or 0

    assert [errors(k) for k in ("provider_retry", "backlog", "runner", "twilio_rest")] == [
        2, 1, 1, 1
    ]
    assert errors("provider") == 2  # the stt give-up and the reply (counted once)
    assert errors("stt_lost") == 1
    assert metrics.registry.get_sample_value("callbridge_barge_ins_total") == 1
    assert metrics.registry.get_sample_value("callbridge_barge_in_reaction_seconds_sum") == 0.18
