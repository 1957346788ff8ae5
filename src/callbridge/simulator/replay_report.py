"""Two calls side by side: the stored one and its replay.

Turns are aligned like a text diff (``difflib``) on who spoke, the turn's kind, its
words (case and punctuation ignored) and whether it was interrupted, so one extra or
missing turn shows as one row, not as every later row changed. Caller turns measured
from audio pair up by position: the replay plays the same caller audio, so the n-th
utterance is the same words on both sides.

A replay is *the same* when every turn matches and every caller turn's latency is
within ``tolerance_ms`` of the original's (both answered or both not).
"""

from __future__ import annotations

import difflib
import itertools
import re
import statistics
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from callbridge.simulator.replay_source import CallSide, TurnView
from callbridge.simulator.replay_track import CallerTurnTiming
from callbridge.simulator.report import CallReport

__all__ = ["CallerRow", "ReplayReport", "TurnRow", "render_replay"]

_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True, slots=True)
class TurnRow:
    original: TurnView | None
    replay: TurnView | None
    same: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "original": None if self.original is None else self.original.as_dict(),
            "replay": None if self.replay is None else self.replay.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class CallerRow:
    index: int
    original: CallerTurnTiming | None
    replay: CallerTurnTiming | None

    @property
    def delta_ms(self) -> float | None:
        if self.original is None or self.replay is None:
            return None
        if self.original.latency_ms is None or self.replay.latency_ms is None:
            return None
        return self.replay.latency_ms - self.original.latency_ms

    def within(self, tolerance_ms: float) -> bool:
        if self.original is None or self.replay is None:
            return False
        a, b = self.original.latency_ms, self.replay.latency_ms
        if a is None or b is None:
            return a is None and b is None
        return abs(b - a) <= tolerance_ms

    def as_dict(self) -> dict[str, Any]:
        delta = self.delta_ms
        return {
            "index": self.index,
            "original": None if self.original is None else self.original.as_dict(),
            "replay": None if self.replay is None else self.replay.as_dict(),
            "delta_ms": None if delta is None else round(delta, 1),
        }


@dataclass
class ReplayReport:
    original: CallSide
    replay: CallSide
    simulator: CallReport
    speed: float
    removed_ms: int
    tolerance_ms: float

    @property
    def turn_rows(self) -> list[TurnRow]:
        return align_turns(self.original.turns, self.replay.turns)

    @property
    def caller_rows(self) -> list[CallerRow]:
        pairs = itertools.zip_longest(self.original.caller_turns, self.replay.caller_turns)
        return [CallerRow(i + 1, a, b) for i, (a, b) in enumerate(pairs)]

    @property
    def same_turns(self) -> bool:
        return all(row.same for row in self.turn_rows)

    @property
    def latency_within_tolerance(self) -> bool:
        return all(row.within(self.tolerance_ms) for row in self.caller_rows)

    @property
    def same(self) -> bool:
        return self.same_turns and self.latency_within_tolerance and not self.differences

    @property
    def differences(self) -> list[str]:
        """One line per difference a person should look at."""
        out: list[str] = []
        for n, turn in enumerate(self.turn_rows, 1):
            if not turn.same:
                out.append(f"turn {n}: {_turn_text(turn.original)} → {_turn_text(turn.replay)}")
        for caller in self.caller_rows:
            out += _caller_differences(caller, self.tolerance_ms)
        a, b = self.original, self.replay
        bargeins = a.barge_in_ms, b.barge_in_ms
        if bargeins[0] is not None and bargeins[1] is not None and (
            len(bargeins[0]) != len(bargeins[1])
        ):
            out.append(f"barge-ins: {len(bargeins[0])} → {len(bargeins[1])}")
        if a.faults is not None and b.faults is not None and sorted(a.faults) != sorted(b.faults):
            out.append(f"faults: {_listing(a.faults)} → {_listing(b.faults)}")
        if b.events is not None and (a.outcome or "") != (b.outcome or ""):
            out.append(f"outcome: {a.outcome or '-'} → {b.outcome or '-'}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "same_turns": self.same_turns,
            "latency_within_tolerance": self.latency_within_tolerance,
            "tolerance_ms": self.tolerance_ms,
            "speed": self.speed,
            "dead_air_removed_ms": self.removed_ms,
            "differences": self.differences,
            "original": _side_dict(self.original),
            "replay": _side_dict(self.replay),
            "turns": [row.as_dict() for row in self.turn_rows],
            "caller_turns": [row.as_dict() for row in self.caller_rows],
            "simulator": self.simulator.as_dict(),
        }


def align_turns(left: list[TurnView], right: list[TurnView]) -> list[TurnRow]:
    a, b = [_key(t) for t in left], [_key(t) for t in right]
    rows: list[TurnRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [TurnRow(x, y, True) for x, y in zip(left[i1:i2], right[j1:j2], strict=True)]
        else:
            pairs = itertools.zip_longest(left[i1:i2], right[j1:j2])
            rows += [TurnRow(x, y, False) for x, y in pairs]
    return rows


def render_replay(report: ReplayReport, console: Console) -> None:
    a, b = report.original, report.replay
    parts: list[Any] = [
        Text.assemble(
            ("original ", "bold"), f"{a.sid}  {a.assistant or '-'}  {a.outcome or ''}\n",
            ("replay   ", "bold"), f"{b.sid}  {b.assistant or '-'}  {b.outcome or ''}",
        )
    ]
    turns = Table(title="Turns (from each call's record)", title_justify="left")
    for column in ("#", "who", "original", "replay"):
        turns.add_column(column, justify="right" if column == "#" else "left")
    for n, row in enumerate(report.turn_rows, 1):
        who = (row.original or row.replay)
        style = "" if row.same else "yellow"
        turns.add_row(
            str(n),
            _who(who),
            _turn_cell(row.original),
            _turn_cell(row.replay),
            style=style,
        )
    if b.events is None:
        turns.caption = "replay record not read: pass --api-token with --url"
    parts.append(turns)
    callers = Table(title="Caller turns (measured from the audio)", title_justify="left")
    for column in ("#", "caller", "at s", "original ms", "replay ms", "Δ ms", "over the bot"):
        callers.add_column(column, justify="left" if column in ("caller", "over the bot")
                           else "right")
    for caller in report.caller_rows:
        first = caller.original or caller.replay
        delta = caller.delta_ms
        callers.add_row(
            str(caller.index),
            ("words" if first.dtmf is None else f"DTMF {first.dtmf}") if first else "",
            f"{first.onset_s:.2f}" if first else "",
            _latency(caller.original),
            _latency(caller.replay),
            "" if delta is None else f"{delta:+.0f}",
            " / ".join(_over(t) for t in (caller.original, caller.replay)),
            style="" if caller.within(report.tolerance_ms) else "yellow",
        )
    parts.append(callers)
    totals = Table(show_header=True, box=None)
    for column in ("", "original", "replay"):
        totals.add_column(column, style="bold" if not column else "")
    totals.add_row("turn latency p50", _p50(a), _p50(b))
    totals.add_row("barge-ins (reaction ms)", _bargeins(a), _bargeins(b))
    totals.add_row("faults", _faults(a), _faults(b))
    totals.add_row("duration", _duration(a), f"{report.simulator.duration_s:.1f} s")
    parts.append(totals)
    if report.speed > 1:
        parts.append(
            Text(f"--speed {report.speed:g}: {report.removed_ms / 1000:.1f} s of dead air removed")
        )
    if report.same:
        parts.append(
            Text(
                f"SAME: every turn matches, every caller turn within ±{report.tolerance_ms:.0f} ms",
                style="bold green",
            )
        )
    else:
        parts += [Text(f"DIFF {line}", style="yellow") for line in report.differences]
    console.print(Group(*parts))


# ------------------------------------------------------------------ private


def _key(turn: TurnView) -> tuple[str, str, str, bool]:
    words = " ".join(_WORD.findall(turn.text.lower()))
    return (turn.role, turn.kind, words, turn.interrupted)


def _caller_differences(row: CallerRow, tolerance_ms: float) -> list[str]:
    where = f"caller turn {row.index}"
    if row.original is None or row.replay is None:
        return [f"{where}: only in the {'replay' if row.original is None else 'original'}"]
    out = []
    a, b = row.original.latency_ms, row.replay.latency_ms
    if (a is None) != (b is None):
        out.append(f"{where}: {'answered' if a is not None else 'unanswered'} → "
                   f"{'answered' if b is not None else 'unanswered'}")
    elif a is not None and b is not None and abs(b - a) > tolerance_ms:
        out.append(f"{where}: latency {a:.0f} → {b:.0f} ms ({b - a:+.0f})")
    if row.original.over_bot != row.replay.over_bot:
        now = "spoke over the bot" if row.replay.over_bot else "no longer over the bot"
        out.append(f"{where}: {now}")
    return out


def _turn_text(turn: TurnView | None) -> str:
    if turn is None:
        return "(none)"
    who = "caller" if turn.role == "user" else "bot"
    kind = f" {turn.kind}" if turn.kind else ""
    cut = " [interrupted]" if turn.interrupted else ""
    return f"{who}{kind} {_short(turn.text)!r}{cut}"


def _turn_cell(turn: TurnView | None) -> Text:
    if turn is None:
        return Text("—", style="dim")
    cell = Text()
    if turn.interrupted:
        heard = turn.heard_text or ""
        cell.append(heard)
        unheard = turn.text[len(heard):] if turn.text.startswith(heard) else turn.text
        if unheard.strip():
            cell.append(unheard, style="strike dim")
        cell.append(" [interrupted]", style="yellow")
    else:
        cell.append(turn.text)
    if turn.kind:
        cell.append(f" ({turn.kind})", style="dim")
    if turn.first_frame_ms is not None:
        cell.append(f"  {turn.first_frame_ms:.0f} ms", style="dim")
    return cell


def _who(turn: TurnView | None) -> str:
    return "" if turn is None else ("caller" if turn.role == "user" else "bot")


def _latency(turn: CallerTurnTiming | None) -> str:
    if turn is None:
        return "—"
    return "no answer" if turn.latency_ms is None else f"{turn.latency_ms:.0f}"


def _over(turn: CallerTurnTiming | None) -> str:
    return "—" if turn is None else ("yes" if turn.over_bot else "no")


def _p50(side: CallSide) -> str:
    values = [t.latency_ms for t in side.caller_turns if t.latency_ms is not None]
    return f"{statistics.median(values):.0f} ms" if values else "-"


def _bargeins(side: CallSide) -> str:
    values = side.barge_in_ms
    if values is None:
        return "not read"
    return f"{len(values)}" + (f" ({', '.join(f'{v:.0f}' for v in values)})" if values else "")


def _faults(side: CallSide) -> str:
    faults = side.faults
    return "not read" if faults is None else _listing(faults) or "none"


def _duration(side: CallSide) -> str:
    return "-" if side.duration_s is None else f"{side.duration_s:.1f} s"


def _listing(kinds: list[str]) -> str:
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    return ", ".join(f"{k}×{n}" if n > 1 else k for k, n in counts.items())


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _side_dict(side: CallSide) -> dict[str, Any]:
    return {
        "sid": side.sid,
        "assistant": side.assistant,
        "outcome": side.outcome,
        "duration_s": side.duration_s,
        "barge_in_ms": side.barge_in_ms,
        "faults": side.faults,
        "turns": [t.as_dict() for t in side.turns],
        "caller_turns": [t.as_dict() for t in side.caller_turns],
    }
