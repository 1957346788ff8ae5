"""One call's report: the figures of ``metrics.py`` as a rich table and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from callbridge.simulator.metrics import TurnMetrics, percentile

__all__ = ["CallReport", "render"]


@dataclass
class CallReport:
    call_sid: str
    stream_sid: str
    duration_s: float
    turns: list[TurnMetrics]
    jitter_ms: list[float]
    frames_sent: int
    frames_received: int
    marks_received: int
    marks_echoed_played: int
    marks_echoed_cleared: int
    clears: int
    underruns: int
    underrun_ms: float
    cleared_ms: float
    bot_audio_ms: float
    hangup_by: str | None
    close_code: int | None = None
    send_lag_ms: list[float] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    refused: str | None = None
    name: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def jitter(self, q: float) -> float | None:
        return percentile(self.jitter_ms, q)

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 2)

        return {
            "name": self.name,
            "ok": self.ok,
            "failures": list(self.failures),
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "refused": self.refused,
            "duration_s": round(self.duration_s, 3),
            "hangup_by": self.hangup_by,
            "close_code": self.close_code,
            "turns": [t.as_dict() for t in self.turns],
            "jitter_ms": {
                "p50": r(self.jitter(50)),
                "p99": r(self.jitter(99)),
                "max": r(max(self.jitter_ms, default=None) if self.jitter_ms else None),
            },
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "marks": {
                "received": self.marks_received,
                "echoed_played": self.marks_echoed_played,
                "echoed_cleared": self.marks_echoed_cleared,
            },
            "clears": self.clears,
            "underruns": self.underruns,
            "underrun_ms": round(self.underrun_ms, 1),
            "cleared_ms": round(self.cleared_ms, 1),
            "bot_audio_ms": round(self.bot_audio_ms, 1),
            "send_lag_ms_p99": r(percentile(self.send_lag_ms, 99)),
            "protocol_errors": list(self.protocol_errors),
        }


def render(report: CallReport, console: Console) -> None:
    """Print the per-turn table and the call's totals."""
    title = f"{report.name or 'call'} {report.call_sid}"
    turns = Table(title=title, title_justify="left")
    for column in ("#", "caller", "barge-in", "latency ms", "clear ms", "stale ms"):
        turns.add_column(column, justify="right" if "ms" in column or column == "#" else "left")
    for t in report.turns:
        turns.add_row(
            str(t.index),
            _short(t.label if t.kind == "speech" else f"DTMF {t.label}"),
            "yes" if t.barge_in else "",
            _ms(t.latency_ms),
            _ms(t.bargein_ms),
            _ms(t.stale_ms) if t.barge_in else "",
        )
    totals = Table(show_header=False, box=None)
    totals.add_column(style="bold")
    totals.add_column()
    rows = [
        ("duration", f"{report.duration_s:.1f} s, hang-up by {report.hangup_by or '-'}"),
        (
            "bot audio",
            f"{report.bot_audio_ms / 1000:.1f} s played, {report.cleared_ms:.0f} ms cleared",
        ),
        ("frames", f"{report.frames_sent} sent, {report.frames_received} received"),
        ("pacing jitter", f"p50 {_ms(report.jitter(50))} ms, p99 {_ms(report.jitter(99))} ms"),
        (
            "marks",
            f"{report.marks_received} received, {report.marks_echoed_played} echoed played, "
            f"{report.marks_echoed_cleared} echoed cleared",
        ),
        ("clears", str(report.clears)),
        ("underruns", f"{report.underruns} ({report.underrun_ms:.0f} ms)"),
    ]
    if report.refused:
        rows.insert(0, ("refused", report.refused))
    if report.protocol_errors:
        rows.append(("protocol errors", "; ".join(report.protocol_errors[:3])))
    for key, value in rows:
        totals.add_row(key, value)
    parts: list[Any] = [turns, totals]
    for failure in report.failures:
        parts.append(Text(f"FAIL {failure}", style="bold red"))
    if not report.failures:
        parts.append(Text("PASS", style="bold green"))
    console.print(Group(*parts))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
