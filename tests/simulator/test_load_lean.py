"""The lean load caller gives the full simulator's verdicts and figures on the same input.

The reader is checked against ``wire.parse_server`` on the server's real encoder output
and on odd shapes; ``LeanPlayback`` against ``PlaybackBuffer`` booked by ``LiveCall``'s
own ``_apply`` on random seeded sequences; the script by driving a call by hand.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from callbridge.clock import ManualClock
from callbridge.errors import TwilioProtocolError
from callbridge.simulator import voice, wire
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, TwimlPlan
from callbridge.simulator.lean import (
    AT_CAPACITY,
    CLEAR,
    LeanCall,
    LeanPlayback,
    Script,
    ServerReader,
    fast_audible,
    fast_audible_frames,
)
from callbridge.simulator.loadworker import PHASE_S, Scheduler
from callbridge.simulator.metrics import TurnTracker
from callbridge.simulator.playback import audible_frames
from callbridge.twilio import codec

SID = "MZ" + "0" * 32
TONE = bytes([0x20, 0xA0] * 80)  # loud μ-law codes
HUSH = b"\xff" * 160


def full_read(text: bytes) -> object:
    message = wire.parse_server(text.decode(), SID)
    return message.ulaw if isinstance(message, wire.ServerMedia) else message


@pytest.mark.parametrize(
    "text",
    [
        codec.media(SID, TONE).encode(),
        codec.media(SID, b"\x00\x01\xfe" * 53).encode(),  # base64 with '+', '/', padding
        codec.clear(SID).encode(),
        codec.mark(SID, "seg-1").encode(),
        codec.mark(SID, 'odd "name" \u00e9').encode(),
        json.dumps({"streamSid": SID, "event": "media", "media": {"payload": "//8="}}).encode(),
        b'{"event":"media","streamSid":"' + SID.encode() + b'","media":{"payload":"//8="}}',
        json.dumps({"event": "clear", "streamSid": SID, "x": 1}).encode(),
        json.dumps({"event": "bogus", "streamSid": SID}).encode(),
    ],
)
def test_reader_agrees_with_the_strict_parser(text: bytes) -> None:
    assert ServerReader(SID).read(text) == full_read(text)


def test_reader_fast_path_hits_for_the_servers_own_encoding() -> None:
    reader = ServerReader(SID)
    assert reader.read(codec.media(SID, TONE).encode()) == TONE
    assert reader.read(codec.clear(SID).encode()) is CLEAR


@pytest.mark.parametrize(
    "text",
    [
        codec.media("MZ" + "1" * 32, TONE).encode(),  # another stream's media
        b'{"event":"media","streamSid":"' + SID.encode() + b'","media":{"payload":"@@@@"}}',
        b'{"event":"media","streamSid":"' + SID.encode() + b'","media":{"payload":"ab"}}',
        codec.clear("MZ" + "1" * 32).encode(),
        b"not json",
        b"[1, 2]",
    ],
)
def test_reader_refuses_what_the_strict_parser_refuses_with_its_words(text: bytes) -> None:
    with pytest.raises(TwilioProtocolError) as full:
        full_read(text)
    with pytest.raises(TwilioProtocolError) as lean:
        ServerReader(SID).read(text)
    assert str(lean.value) == str(full.value)


def test_reader_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(TwilioProtocolError, match="UTF-8"):
        ServerReader(SID).read(b'{"event":"\xff"}')


# ------------------------------------------------------------ playback equivalence


class FullSide:
    """The full simulator's booking: PlaybackBuffer events through LiveCall._apply."""

    def __init__(self, clock: ManualClock) -> None:
        plan = TwimlPlan("ws://127.0.0.1:9/media", {})
        self.call = LiveCall(plan, CallOptions("http://127.0.0.1:9", "t"), clock=clock)
        self.echoes: list[str] = []

    def book(self, events: list[object]) -> None:
        self.echoes += self.call._apply(events)  # type: ignore[arg-type]


def random_media(rng: random.Random) -> bytes:
    """A message of 0 to 10 frames, each speech or silence, sometimes a partial tail."""
    frames = rng.choice([1, 1, 1, 2, 2, 2, 3, 10, 0])
    audio = b"".join(TONE if rng.random() < 0.8 else HUSH for _ in range(frames))
    if rng.random() < 0.1:
        audio += (TONE if rng.random() < 0.5 else HUSH)[: rng.randint(1, 159)]
    return audio


@pytest.mark.parametrize("seed", range(4))
def test_the_fast_verdicts_per_slice_are_the_generic_ones(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        audio = random_media(rng)
        assert fast_audible_frames(audio) == audible_frames(audio, fast_audible)
        assert fast_audible_frames(audio) == audible_frames(audio, voice.is_audible)


def random_session(seed: int) -> tuple[FullSide, LeanPlayback, list[str]]:
    rng = random.Random(seed)
    clock = ManualClock(1000.0)
    full = FullSide(clock)
    tracker = TurnTracker()
    lean = LeanPlayback(tracker)
    lean_echoes: list[str] = []
    pb = full.call.playback
    marks = 0
    for _ in range(3000):
        clock.advance(rng.choice([0.0, 0.001, 0.005, 0.02, 0.02, 0.02, 0.05, 0.3, 0.7]))
        now = clock.now()
        roll = rng.random()
        if roll < 0.45:
            audio = random_media(rng)
            mask = audible_frames(audio, voice.is_audible)
            full.book(pb.receive_media(audio, audible_frames=mask))
            lean.receive_media(now, len(audio), fast_audible_frames(audio))
        elif roll < 0.55:
            marks += 1
            full.book(pb.receive_mark(f"m{marks}"))
            lean.receive_mark(now, f"m{marks}")
        elif roll < 0.58:
            full.call.tracker.clear_received(now)
            tracker.clear_received(now)
            full.book(pb.receive_clear())
            lean.receive_clear(now)
        elif roll < 0.63:
            label = f"u{rng.random():.3f}"
            full.call.tracker.speech_onset(now, label=label, bot_speaking=pb.speaking)
            tracker.speech_onset(now, label=label, bot_speaking=lean.speaking)
        elif roll < 0.68:
            full.call.tracker.speech_end(now)
            tracker.speech_end(now)
        else:
            full.book(pb.advance())
            lean.advance(now)
        lean_echoes += [name for name, _ in lean.echoes]
        lean.echoes.clear()
        assert lean.speaking == pb.speaking
        assert lean.reply_played_ms == pytest.approx(pb.reply_played_ms)
        assert lean.buffered_ms == pytest.approx(pb.buffered_ms)
    return full, lean, lean_echoes


@pytest.mark.parametrize("seed", range(8))
def test_lean_playback_books_the_same_metrics_as_the_full_one(seed: int) -> None:
    full, lean, lean_echoes = random_session(seed)
    call, pb = full.call, full.call.playback
    assert [t.as_dict() for t in lean.tracker.turns] == [t.as_dict() for t in call.tracker.turns]
    assert any(t.latency_ms is not None for t in call.tracker.turns)  # the input exercises
    assert any(t.bargein_ms is not None for t in call.tracker.turns)  # every metric
    assert any(t.stale_ms > 0 for t in call.tracker.turns)
    assert pb.underruns > 0
    assert (lean.underruns, lean.played_bytes, lean.cleared_bytes) == (
        pb.underruns,
        pb.played_bytes,
        pb.cleared_bytes,
    )
    assert lean.underrun_ms == pytest.approx(pb.underrun_ms)
    assert lean_echoes == full.echoes
    assert lean.speech_starts == call.bot_speech_starts
    assert lean.audible_bytes == call.audible_bytes
    assert lean.last_audible_end_s == call.last_audible_end_s


# ------------------------------------------------------------ the call's script


def utterance(label: str, voiced: int) -> voice.Utterance:
    frames = (HUSH, *([TONE] * voiced), HUSH)
    payloads = tuple(f"{label}{i}" for i in range(len(frames)))
    return voice.Utterance(label, frames, payloads, 1, voiced)


class Driver:
    """A 20 ms beat and a server that answers by hand; records what the caller sent."""

    def __init__(self, script: Script) -> None:
        self.call = LeanCall(
            script, stream_sid=SID, account_sid="AC1", call_sid="CA1", parameters={"a": "b"}
        )
        self.now = 50.0
        self.sent = self.call.opening(self.now)

    def beat(self, frames: int, bot: bytes | None = None) -> None:
        """``frames`` ticks; with ``bot``, the server sends one frame of it per tick."""
        for _ in range(frames):
            if self.call.done:
                return
            if bot is not None:
                self.sent += self.call.on_message(self.now, codec.media(SID, bot).encode())
            self.sent += self.call.tick(self.now)
            self.now += 0.020

    def payloads(self) -> list[str]:
        return [json.loads(t)["media"]["payload"] for t in self.sent if '"media"' in t]


def test_script_hears_the_greeting_then_asks_then_barges_in_on_the_next_reply() -> None:
    q, i = utterance("q", 3), utterance("i", 2)
    d = Driver(Script(q, i, duration_s=60.0))
    first, start = (json.loads(t) for t in d.sent[:2])
    assert first["event"] == "connected" and start["start"]["customParameters"] == {"a": "b"}
    d.beat(10)
    assert set(d.payloads()) == {voice.SILENCE.payloads[0]}  # waiting for the greeting
    d.beat(50, bot=TONE)  # 1 s of greeting
    d.beat(40)  # 0.8 s quiet: the caller asks
    asked = d.payloads()
    assert asked[-len(q.payloads) :] == list(q.payloads) or "q0" in asked
    d.beat(10)
    (turn,) = d.call.tracker.turns
    assert turn.label == "q" and not turn.barge_in and turn.end_s is not None
    d.beat(30, bot=TONE)  # the reply, then quiet
    d.beat(40)
    assert turn.latency_ms is not None and turn.latency_ms >= 0
    assert len(d.call.tracker.turns) == 2  # asked again: this time it will barge in
    d.beat(10)
    d.beat(39, bot=TONE)  # 780 ms of reply: not yet
    assert len(d.call.tracker.turns) == 2
    d.beat(5, bot=TONE)
    barge = d.call.tracker.turns[-1]
    assert barge.label == "i" and barge.barge_in
    d.sent += d.call.on_message(d.now, codec.clear(SID).encode())
    assert barge.bargein_ms is not None and 0 < barge.bargein_ms <= 100
    sequence = [int(json.loads(t)["sequenceNumber"]) for t in d.sent[1:]]
    assert sequence == list(range(1, len(sequence) + 1))  # one counter, no gap
    assert not d.call.protocol_errors and not d.call.done


def test_script_echoes_marks_when_played_and_hangs_up_after_its_duration() -> None:
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=0.5))
    d.beat(1)
    for _ in range(5):  # 100 ms sent ahead, then the mark behind it
        d.sent += d.call.on_message(d.now, codec.media(SID, TONE).encode())
    d.sent += d.call.on_message(d.now, codec.mark(SID, "seg-1").encode())
    assert not [t for t in d.sent if '"mark"' in t]  # 100 ms still queued ahead of it
    d.beat(10)
    (echo,) = [json.loads(t) for t in d.sent if '"mark"' in t]
    assert echo["mark"] == {"name": "seg-1"} and echo["streamSid"] == SID
    d.beat(500)
    assert d.call.done and d.call.ended_by == "caller"
    stop = json.loads(d.call.closing())
    assert stop["event"] == "stop" and stop["stop"]["callSid"] == "CA1"
    result = d.call.result()
    assert result["ok"] and result["turns"] == len(d.call.tracker.turns) >= 1


def test_result_says_why_a_call_failed() -> None:
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=1.0))
    d.call.on_message(d.now, b'{"event":"media","streamSid":"MZwrong","media":{"payload":""}}')
    d.call.end("server")
    result = d.call.result()
    assert not result["ok"]
    why = str(result["why"])
    assert "streamSid" in why and "server ended" in why and "no bot audio" in why


def test_send_lag_counts_how_late_each_frame_went_out() -> None:
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=9.0))
    d.call.tick(d.now)  # frame 0 due at 50.000
    d.call.tick(d.now + 0.027)  # frame 1 due at 50.020: 7 ms late
    assert d.call.send_lag_ms == pytest.approx([0.0, 7.0])
    assert d.call.next_due_s == pytest.approx(50.040)


def test_a_close_at_capacity_before_any_bot_audio_is_a_refusal_not_a_failure() -> None:
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=1.0))
    d.call.close_code = AT_CAPACITY
    d.call.end("server")
    refused = d.call.result()
    assert not refused["ok"] and refused["refused"] and "1013" in str(refused["why"])
    heard = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=1.0))
    heard.beat(5, bot=TONE)  # the call was served, then dropped: a failure, not a refusal
    heard.call.close_code = AT_CAPACITY
    heard.call.end("server")
    dropped = heard.call.result()
    assert not dropped["ok"] and not dropped["refused"] and "server ended" in str(dropped["why"])


# ------------------------------------------------------------ media of any whole number of frames


def bot_reply(
    d: Driver, frames: int, per_message: int, *, late: int | None = None, audio: bytes = b""
) -> None:
    """The server sends ``frames`` of reply (``audio``, 160 bytes a frame; TONE when not
    given) in messages of ``per_message`` frames, 200 ms ahead of the player as the real
    playout does; message ``late`` comes 60 ms after its audio was due instead."""
    audio = audio or TONE * frames
    starts = range(0, frames, per_message)
    send_at = {m: max(0, first - 10) for m, first in enumerate(starts)}
    if late is not None:  # it holds back the ones behind it too
        for m in range(late, len(starts)):
            send_at[m] = max(send_at[m], starts[late] + 3)
    for tick in range(frames + 10):
        for m, first in enumerate(starts):
            if send_at[m] == tick:
                chunk = audio[first * 160 : (first + per_message) * 160]
                d.sent += d.call.on_message(d.now, codec.media(SID, chunk).encode())
        d.sent += d.call.tick(d.now)
        d.now += 0.020


def heard(per_message: int, greeting: bytes = TONE * 48, reply: bytes = TONE * 60) -> Driver:
    """A greeting and one reply, in messages of ``per_message`` frames."""
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=60.0, barge_in=False))
    d.beat(5)
    bot_reply(d, len(greeting) // 160, per_message, audio=greeting)
    d.beat(40)  # quiet: the caller asks
    d.beat(10)
    bot_reply(d, len(reply) // 160, per_message, audio=reply)
    d.beat(40)
    return d


@pytest.mark.parametrize("per_message", [2, 3])
def test_media_of_several_frames_plays_counts_and_paces_as_its_frames_would(
    per_message: int,
) -> None:
    """20, 40 or 60 ms a message: the same audio heard, the same turn latency, no
    underrun and no jitter when the server keeps its lead."""
    one, d = heard(1), heard(per_message)
    call = d.call
    assert call.bot_audio_bytes == 108 * 160
    assert call.frames_received == 108  # frames, not messages
    assert call.playback.played_bytes == 108 * 160 and call.playback.underruns == 0
    assert max(call.pacing.samples_ms) == pytest.approx(0.0, abs=1e-6)
    assert [t.as_dict() for t in call.tracker.turns] == [
        t.as_dict() for t in one.call.tracker.turns
    ]
    assert any(t.latency_ms for t in call.tracker.turns)
    assert call.playback.speech_starts == one.call.playback.speech_starts


@pytest.mark.parametrize("per_message", [2, 3])
def test_silence_inside_a_message_is_heard_as_silence_whatever_the_message_size(
    per_message: int,
) -> None:
    """Replies that start, pause and end on odd frames: in 40 or 60 ms messages the bot
    starts speaking, falls quiet and is heard exactly when it is in 20 ms ones."""
    greeting = HUSH + TONE * 20 + HUSH + TONE * 26
    reply = HUSH * 3 + TONE * 30 + HUSH + TONE * 21 + HUSH * 5
    one, d = heard(1, greeting, reply), heard(per_message, greeting, reply)
    call, lean = d.call, d.call.playback
    assert call.frames_received == one.call.frames_received == 48 + 60
    assert [t.as_dict() for t in call.tracker.turns] == [
        t.as_dict() for t in one.call.tracker.turns
    ]
    assert one.call.tracker.turns[0].latency_ms is not None
    assert lean.speech_starts == pytest.approx(one.call.playback.speech_starts, abs=1e-9)
    assert lean.audible_bytes == one.call.playback.audible_bytes == (20 + 26 + 30 + 21) * 160
    assert lean.last_audible_end_s == pytest.approx(one.call.playback.last_audible_end_s)


def test_a_40_ms_message_of_silence_then_speech_starts_the_reply_20_ms_in() -> None:
    """Bot speech starts where its first audible 20 ms plays, not where its message does."""
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=60.0, barge_in=False))
    d.beat(5)
    arrived = d.now
    d.sent += d.call.on_message(d.now, codec.media(SID, HUSH + TONE).encode())
    d.beat(3)
    assert d.call.playback.speech_starts == [pytest.approx(arrived + 0.020)]
    assert d.call.frames_received == 2


def test_both_callers_count_frames_not_messages() -> None:
    clock = ManualClock(10.0)
    full = FullSide(clock)
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=60.0))
    for audio in (TONE, TONE + HUSH, HUSH * 3, TONE + HUSH[:80]):  # a partial tail is one
        full.book(full.call._media(clock.now(), audio))
        d.call.on_message(d.now, codec.media(SID, audio).encode())
    assert full.call.frames_received == d.call.frames_received == 1 + 2 + 3 + 2
    assert full.call.bot_audio_bytes == 0  # counted as it plays, not as it arrives
    clock.advance(1.0)
    full.book(full.call.playback.advance())
    assert full.call.bot_audio_bytes == d.call.bot_audio_bytes == 8 * 160 - 80


def test_a_40_ms_message_that_comes_late_is_one_underrun_and_its_jitter() -> None:
    d = Driver(Script(utterance("q", 2), utterance("i", 2), duration_s=60.0, barge_in=False))
    d.beat(5)
    bot_reply(d, 40, 2, late=10)  # the message due at 400 ms comes at 460 ms
    call = d.call
    assert call.playback.underruns == 1
    assert call.playback.underrun_ms == pytest.approx(60.0, abs=0.5)
    assert max(call.pacing.samples_ms) == pytest.approx(60.0 + 200.0, abs=0.5)
    assert call.playback.played_bytes == 40 * 160


# ------------------------------------------------------------ the worker's shared clock


class _StubCall:
    """What the scheduler sees of a ``LeanCall``: a media clock, ticks, an end."""

    def __init__(self, frames: int) -> None:
        self.frames, self.k, self.t0_s = frames, 0, 0.0
        self.ticks: list[tuple[float, float]] = []  # (due, sent)
        self.ended_by: str | None = None

    @property
    def next_due_s(self) -> float:
        return self.t0_s + self.k * 0.020

    @property
    def done(self) -> bool:
        return self.ended_by is not None

    def opening(self, now: float) -> list[str]:
        self.t0_s = now
        return ["opening"]

    def tick(self, now: float) -> list[str]:
        self.ticks.append((self.next_due_s, now))
        self.k += 1
        if self.k == self.frames:
            self.ended_by = "caller"
        return [f"frame {self.k}"]


class _StubConn:
    def __init__(self, call: _StubCall, over: list[_StubConn], all_over: asyncio.Event) -> None:
        self.call, self.sent = call, []
        self._over, self._all_over = over, all_over

    def send(self, texts: list[str]) -> None:
        self.sent += texts

    def finish(self) -> None:
        self._over.append(self)
        if len(self._over) == 7:
            self._all_over.set()


async def test_the_shared_clock_sends_every_frame_once_in_order_and_never_early() -> None:
    scheduler = Scheduler()
    runner = asyncio.create_task(scheduler.run())
    conns: list[_StubConn] = []
    over: list[_StubConn] = []
    all_over = asyncio.Event()
    try:
        for i in range(7):  # calls join at odd moments, on every phase of the beat
            conn = _StubConn(_StubCall(frames=8), over, all_over)
            scheduler.add(conn)  # type: ignore[arg-type]
            conns.append(conn)
            await asyncio.sleep(0.0037 * (i % 3))
        async with asyncio.timeout(5):
            await all_over.wait()
    finally:
        runner.cancel()
    assert sorted(map(id, over)) == sorted(map(id, conns))  # each finished once
    for conn in conns:
        call = conn.call
        assert conn.sent == ["opening", *(f"frame {k}" for k in range(1, 9))]
        assert abs(call.t0_s / PHASE_S - round(call.t0_s / PHASE_S)) < 1e-6  # on the grid
        assert all(sent >= due for due, sent in call.ticks)  # never early
        assert [due for due, _ in call.ticks] == [call.t0_s + k * 0.020 for k in range(8)]
    assert len({round(c.call.t0_s / PHASE_S) % 4 for c in conns}) > 1  # spread over phases
