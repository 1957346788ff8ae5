"""Plays a scenario against a server and checks its assertions.

Caller speech is synthesized before the call is placed (espeak blocks), so the script
never stalls the send loop. A failed assertion is recorded and the script goes on, so
one run reports every problem; once the call has ended, the remaining steps that need
the line fail once and the script stops.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from callbridge.simulator import voice
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, CallRefused, dial
from callbridge.simulator.report import CallReport
from callbridge.simulator.scenario import (
    Dtmf,
    ExpectBotSays,
    ExpectBotSpeech,
    ExpectClear,
    ExpectHangup,
    ExpectNoClear,
    ExpectSilence,
    Hangup,
    Interrupt,
    MaxBargeinMs,
    MaxTurnLatencyMs,
    Pause,
    Play,
    Say,
    Scenario,
    Step,
    WaitForBotSpeech,
    WaitForSilence,
)

__all__ = ["BotTurns", "prepare_voices", "run_scenario"]

BotTurns = Callable[[str], Awaitable[list[str] | None]]
"""The bot's stored turn texts for a call SID (call-records API); None: no record."""


def prepare_voices(scenario: Scenario, base_dir: Path) -> dict[int, voice.Utterance]:
    """Blocking: synthesize or load every utterance, keyed by step index."""
    out: dict[int, voice.Utterance] = {}
    for i, step in enumerate(scenario.steps):
        if isinstance(step, Say):
            out[i] = voice.from_text(step.text, step.voice)
        elif isinstance(step, Interrupt) and step.play is not None:
            out[i] = voice.from_wav(base_dir / step.play)
        elif isinstance(step, Interrupt) and step.say is not None:
            out[i] = voice.from_text(step.say, step.voice)
        elif isinstance(step, Play):
            out[i] = voice.from_wav(base_dir / step.path)
    return out


async def run_scenario(
    scenario: Scenario,
    options: CallOptions,
    voices: dict[int, voice.Utterance],
    *,
    record_path: str | Path | None = None,
    on_call: Callable[[LiveCall], None] | None = None,
    bot_turns: BotTurns | None = None,
    http: httpx.AsyncClient | None = None,
) -> CallReport:
    """Place the call, play the steps, hang up if the server has not, and report."""
    try:
        plan = await dial(options, http)
    except (CallRefused, httpx.HTTPError) as exc:
        return _refused(scenario, options, str(exc))
    if plan.stream_url is None:
        said = " ".join(plan.says) or "no <Stream>"
        return _refused(scenario, options, f"TwiML did not connect a stream: {said}")
    call = LiveCall(plan, options, record=record_path is not None)
    failures: list[str] = []
    async with call:
        if on_call is not None:
            on_call(call)
        try:
            async with asyncio.timeout(scenario.timeout_s):
                await _play(scenario, call, voices, failures, bot_turns)
        except TimeoutError:
            failures.append(f"scenario timed out after {scenario.timeout_s:g} s")
    report = call.report(scenario.name)
    _check_limits(scenario, report, failures)
    failures.extend(f"protocol: {e}" for e in report.protocol_errors)
    report.failures = failures
    if record_path is not None and call.recorder is not None:
        call.recorder.write(record_path)
    return report


async def _play(
    scenario: Scenario,
    call: LiveCall,
    voices: dict[int, voice.Utterance],
    failures: list[str],
    bot_turns: BotTurns | None,
) -> None:
    for i, step in enumerate(scenario.steps):
        where = f"step {i + 1} (line {step.line}) {type(step).__name__}"
        if call.ended and not isinstance(step, _AFTER_END_OK):
            failures.append(f"{where}: the call ended (by {call.hangup_by}) before this step")
            return
        problem = await _run_step(step, call, voices.get(i), bot_turns)
        if problem:
            failures.append(f"{where}: {problem}")
        if isinstance(step, Hangup):
            return


async def _run_step(
    step: Step,
    call: LiveCall,
    utterance: voice.Utterance | None,
    bot_turns: BotTurns | None,
) -> str | None:
    """Do one step; return what went wrong, or None."""
    match step:
        case Say() | Play():
            assert utterance is not None
            await call.say(utterance)
        case Pause(ms=ms):
            await call.wait_until(lambda: False, ms / 1000.0)
        case Dtmf(digits=digits, gap_ms=gap_ms):
            for n, digit in enumerate(digits):
                if n:
                    await call.wait_until(lambda: False, gap_ms / 1000.0)
                await call.dtmf(digit)
        case Interrupt(after_bot_speech_ms=after, timeout_ms=timeout):
            assert utterance is not None
            reached = await call.wait_until(
                lambda: call.playback.reply_played_ms >= after, timeout / 1000.0
            )
            if not reached:
                return f"the bot never spoke for {after} ms within {timeout} ms"
            await call.say(utterance)
        case Hangup():
            await call.hangup()
        case WaitForBotSpeech(timeout_ms=ms) | ExpectBotSpeech(within_ms=ms):
            if not await call.wait_until(lambda: call.playback.speaking, ms / 1000.0):
                return f"no bot audio within {ms} ms"
        case WaitForSilence(ms=quiet, timeout_ms=timeout):
            quiet_s = quiet / 1000.0
            if not await call.wait_until(lambda: call.bot_silent_for_s() >= quiet_s, timeout / 1e3):
                return f"the bot did not stay silent for {quiet} ms within {timeout} ms"
        case ExpectSilence(for_ms=ms):
            before = call.audible_bytes
            await call.wait_until(lambda: call.ended, ms / 1000.0)
            if call.audible_bytes > before:
                heard = (call.audible_bytes - before) / 8.0
                return f"expected {ms} ms of silence, heard {heard:.0f} ms of bot audio"
        case MaxTurnLatencyMs(ms=limit):
            turn = next((t for t in reversed(call.tracker.turns) if t.end_s is not None), None)
            if turn is None or turn.latency_ms is None:
                return "no answered caller turn to measure"
            if turn.latency_ms > limit:
                return f"turn {turn.index} latency {turn.latency_ms:.0f} ms > {limit} ms"
        case MaxBargeinMs(ms=limit):
            turn = next((t for t in reversed(call.tracker.turns) if t.barge_in), None)
            if turn is None:
                return "no barge-in happened (the bot was not speaking at any caller onset)"
            if turn.bargein_ms is None:
                return f"turn {turn.index}: the server never sent clear"
            if turn.bargein_ms > limit:
                return f"turn {turn.index} barge-in {turn.bargein_ms:.0f} ms > {limit} ms"
        case ExpectClear(within_ms=ms):
            latest = call.tracker.current
            since = latest.onset_s if latest is not None else call.t0_s
            if not await call.wait_until(
                lambda: any(t >= since for t in call.clear_times), ms / 1000.0
            ):
                return f"no clear within {ms} ms"
        case ExpectNoClear(for_ms=ms):
            latest = call.tracker.current
            since = latest.onset_s if latest is not None else call.t0_s
            await call.wait_until(lambda: call.ended, ms / 1000.0)
            cleared = [t for t in call.clear_times if t >= since]
            if cleared:
                return f"the bot was stopped (clear {1000 * (cleared[0] - since):.0f} ms in)"
        case ExpectHangup(within_ms=ms):
            if not await call.wait_until(lambda: call.ended, ms / 1000.0):
                return f"the server did not hang up within {ms} ms"
            if call.hangup_by != "server":
                return f"expected the server to hang up, the {call.hangup_by} did"
        case ExpectBotSays(pattern=pattern):
            if bot_turns is None:
                return "expect_bot_says needs the server's call-records API (--api-token)"
            texts = await bot_turns(call.options.call_sid)
            if texts is None:
                return "the call record was not found"
            if not any(re.search(pattern, text, re.IGNORECASE) for text in texts):
                return f"no bot turn matches /{pattern}/ in {texts!r}"
        case _:
            raise AssertionError(f"unhandled step {step!r}")
    return None


# Steps that still make sense once the line is down.
_AFTER_END_OK = (ExpectHangup, ExpectBotSays, Hangup, MaxTurnLatencyMs, MaxBargeinMs)


def _check_limits(scenario: Scenario, report: CallReport, failures: list[str]) -> None:
    limits = scenario.limits
    for t in report.turns:
        max_latency, max_bargein = limits.max_turn_latency_ms, limits.max_bargein_ms
        if max_latency is not None and t.latency_ms is not None and t.latency_ms > max_latency:
            failures.append(
                f"limits: turn {t.index} latency {t.latency_ms:.0f} ms > {max_latency} ms"
            )
        if (
            max_bargein is not None
            and t.barge_in
            and (t.bargein_ms is None or t.bargein_ms > max_bargein)
        ):
            failures.append(f"limits: turn {t.index} barge-in {t.bargein_ms} ms > {max_bargein} ms")
        if limits.max_stale_ms is not None and t.barge_in and t.stale_ms > limits.max_stale_ms:
            failures.append(
                f"limits: turn {t.index} stale audio {t.stale_ms:.0f} ms > {limits.max_stale_ms} ms"
            )
    if limits.max_underruns is not None and report.underruns > limits.max_underruns:
        failures.append(f"limits: {report.underruns} underruns > {limits.max_underruns}")


def _refused(scenario: Scenario, options: CallOptions, why: str) -> CallReport:
    report = CallReport(
        name=scenario.name,
        call_sid=options.call_sid,
        stream_sid="",
        duration_s=0.0,
        turns=[],
        jitter_ms=[],
        frames_sent=0,
        frames_received=0,
        marks_received=0,
        marks_echoed_played=0,
        marks_echoed_cleared=0,
        clears=0,
        underruns=0,
        underrun_ms=0.0,
        cleared_ms=0.0,
        bot_audio_ms=0.0,
        hangup_by=None,
        refused=why,
    )
    report.failures = [f"call refused: {why}"]
    return report
