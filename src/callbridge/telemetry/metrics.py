"""Prometheus metrics: what an operator graphs to see slow turns, interruptions and faults.

One registry per app (not the library's global one), so two apps in one process — two
test servers, two instances — never share or collide. The edge's counters are read at
scrape time instead of being copied, so there is one source of truth for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from callbridge.call_events import (
    BacklogFull,
    CallEvent,
    EngineNote,
    HangupFailed,
    ProviderRetried,
    RunnerFailed,
)

__all__ = [
    "CONTENT_TYPE",
    "DrainState",
    "EdgeCounters",
    "Metrics",
    "ProviderNames",
    "StoreWriterState",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_TTFB_BUCKETS_S = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class EdgeCounters(Protocol):
    """The fields of ``server.edge.EdgeStats`` read here."""

    active_calls: int
    calls_total: int
    overflow_total: int
    webhooks_rejected: int
    streams_rejected: int
    frames_rejected: Mapping[str, int]
    timestamp_gaps: int
    arrival_gaps: int


class StoreWriterState(Protocol):
    """What ``store.writer.StoreWriter`` tells about itself."""

    @property
    def healthy(self) -> bool: ...
    @property
    def backlog(self) -> int: ...

    outages: int
    restarts: int
    failed: int


class DrainState(Protocol):
    """The fields of ``server.drain.Drain`` read here."""

    draining: bool
    ended_calls: int


class ProviderNames(Protocol):
    @property
    def stt(self) -> str: ...
    @property
    def llm(self) -> str: ...
    @property
    def tts(self) -> str: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turn_latency = Histogram(
            "callbridge_turn_latency_seconds",
            "Caller's end of speech (endpoint) to the answer's first frame sent",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.turn_stage = Histogram(
            "callbridge_turn_stage_seconds",
            "Answer latency by stage, each measured from the endpoint",
            ["stage"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.provider_ttfb = Histogram(
            "callbridge_provider_ttfb_seconds",
            "Time to first result by provider: stt = endpoint to final transcript; "
            "llm+tts = transcript to first TTS audio; tts = fixed text to first audio",
            ["stage", "provider"],
            buckets=_TTFB_BUCKETS_S,
            registry=r,
        )
        self.barge_ins = Counter(
            "callbridge_barge_ins", "Replies the caller interrupted", registry=r
        )
        self.barge_in_reaction = Histogram(
            "callbridge_barge_in_reaction_seconds",
            "Caller's speech onset to the clear sent to the line",
            buckets=(0.1, 0.15, 0.2, 0.22, 0.25, 0.3, 0.4, 0.6, 1.0),
            registry=r,
        )
        self.stale_interrupts = Counter(
            "callbridge_stale_interrupts",
            "Interruptions dropped because they were decided too late",
            registry=r,
        )
        self.playout_drops = Counter(
            "callbridge_playout_dropped_frames",
            "Bot audio frames dropped because the playout queue overflowed",
            registry=r,
        )
        self.errors = Counter("callbridge_errors", "Errors by kind", ["kind"], registry=r)
        self.store_dropped = Counter(
            "callbridge_store_dropped_ops",
            "Call-record writes dropped because the store could not keep up",
            registry=r,
        )

    def watch_edge(self, stats: EdgeCounters) -> None:
        self.registry.register(_EdgeCollector(stats))

    def watch_store(self, writer: StoreWriterState) -> None:
        self.registry.register(_StoreCollector(writer))

    def watch_drain(self, drain: DrainState, instance: str) -> None:
        self.registry.register(_DrainCollector(drain, instance))

    def observe_turn(
        self,
        *,
        role: str,
        kind: str,
        latency_ms: Mapping[str, float],
        providers: ProviderNames | None,
    ) -> None:
        """Latency of one finished bot turn (barge-ins are counted as they happen)."""
        if role != "assistant":
            return
        stt = latency_ms.get("stt")
        first_audio = latency_ms.get("first_audio")
        first_frame = latency_ms.get("first_frame")
        if kind == "answer":
            if first_frame is not None:
                self.turn_latency.observe(first_frame / 1000)
            for stage, value in (
                ("stt", stt),
                ("first_audio", first_audio),
                ("first_frame", first_frame),
            ):
                if value is not None:
                    self.turn_stage.labels(stage).observe(value / 1000)
        if providers is None:
            return
        if kind == "answer":
            if stt is not None:
                self.provider_ttfb.labels("stt", providers.stt).observe(stt / 1000)
            if stt is not None and first_audio is not None:
                both = f"{providers.llm}+{providers.tts}"
                self.provider_ttfb.labels("llm+tts", both).observe(
                    max(0.0, first_audio - stt) / 1000
                )
        elif first_audio is not None:
            # Fixed text (greeting, reprompt, goodbye) goes straight to TTS.
            self.provider_ttfb.labels("tts", providers.tts).observe(first_audio / 1000)

    def count_event(self, call_sid: str, event: CallEvent) -> None:
        """A ``CallEventBus`` listener: barge-ins and ``callbridge_errors_total{kind}``."""
        match event:
            case EngineNote(kind="barge_in", data=data):
                self.barge_ins.inc()
                reaction_ms = data.get("reaction_ms")
                if isinstance(reaction_ms, int | float) and reaction_ms > 0:
                    self.barge_in_reaction.observe(reaction_ms / 1000)
            case EngineNote(kind="barge_in_stale"):
                self.stale_interrupts.inc()
            case EngineNote(kind="reply_failed"):
                self.errors.labels("provider").inc()
            case EngineNote(kind="provider_failed", data=data) if data.get("stage") != "reply":
                # A reply's failure is counted once, as reply_failed.
                self.errors.labels("provider").inc()
            case EngineNote(kind="mark_timeout" | "stt_lost" | "transfer_failed" as kind):
                self.errors.labels(kind).inc()
            case ProviderRetried():
                self.errors.labels("provider_retry").inc()
            case BacklogFull():
                self.errors.labels("backlog").inc()
            case RunnerFailed():
                self.errors.labels("runner").inc()
            case HangupFailed():
                self.errors.labels("twilio_rest").inc()
            case _:
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EdgeCollector(Collector):
    def __init__(self, stats: EdgeCounters) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        s = self._stats
        yield GaugeMetricFamily(
            "callbridge_active_calls", "Media streams being served", s.active_calls
        )
        yield CounterMetricFamily("callbridge_calls", "Media streams started", s.calls_total)
        yield CounterMetricFamily(
            "callbridge_overflow_calls",
            "Calls turned away or redirected: full or draining",
            s.overflow_total,
        )
        gaps = CounterMetricFamily(
            "callbridge_inbound_gaps",
            "Inbound media gaps over 100 ms (counted when the stream ends)",
            labels=["kind"],
        )
        gaps.add_metric(["timestamp"], s.timestamp_gaps)
        gaps.add_metric(["arrival"], s.arrival_gaps)
        yield gaps
        rejected = CounterMetricFamily(
            "callbridge_rejected", "Requests and frames refused, by kind", labels=["kind"]
        )
        rejected.add_metric(["webhook"], s.webhooks_rejected)
        rejected.add_metric(["stream"], s.streams_rejected)
        for kind, count in sorted(s.frames_rejected.items()):
            rejected.add_metric([f"frame_{kind}"], count)
        yield rejected


class _StoreCollector(Collector):
    """The call record's writer, read at scrape time (alert on healthy == 0)."""

    def __init__(self, writer: StoreWriterState) -> None:
        self._writer = writer

    def collect(self) -> Iterable[Metric]:
        w = self._writer
        yield GaugeMetricFamily(
            "callbridge_store_healthy",
            "1 while the store writer runs and its last write succeeded, else 0",
            1 if w.healthy else 0,
        )
        yield GaugeMetricFamily(
            "callbridge_store_backlog_ops",
            "Call-record writes waiting for the database (held batch + queue)",
            w.backlog,
        )
        yield CounterMetricFamily(
            "callbridge_store_outages",
            "Times the database stopped answering (the writer held its ops and retried)",
            w.outages,
        )
        yield CounterMetricFamily(
            "callbridge_store_writer_restarts",
            "Times the store writer loop crashed and was restarted",
            w.restarts,
        )
        yield CounterMetricFamily(
            "callbridge_store_failed_ops",
            "Call-record writes the database refused as bad (lost)",
            w.failed,
        )


class _DrainCollector(Collector):
    def __init__(self, drain: DrainState, instance: str) -> None:
        self._drain = drain
        self._instance = instance

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "callbridge_instance", "This process's name in the calls table", labels=["name"]
        )
        info.add_metric([self._instance], 1)
        yield info
        yield GaugeMetricFamily(
            "callbridge_draining",
            "1 while the instance drains (SIGTERM)",
            int(self._drain.draining),
        )
        yield CounterMetricFamily(
            "callbridge_drain_ended_calls",
            "Calls still up at the drain timeout, ended with a goodbye",
            self._drain.ended_calls,
        )
