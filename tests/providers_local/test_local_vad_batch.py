"""Batched Silero: every call's frames of a tick in one run, the same numbers as one
call at a time, each call's recurrent state in order."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.audio import ulaw
from callbridge.clock import ManualClock
from callbridge.engine.metronome import Metronome
from callbridge.engine.transport import CallerAudio, Heard, Inbox, Line
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero_batch import BatchedSileroModel
from callbridge.providers.vad.silero_model import SileroModel


def _frames(text: str) -> list[bytes]:
    pcm = ulaw.decode(ulaw.encode(synthesize_pcm(text, 8000)))
    return [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]


def _tick(
    model: BatchedSileroModel, streams: list, chunks: list[list[bytes]]
) -> list[list[float]]:
    """One tick: each stream's frames of ``chunks``, joined as the metronome joins them."""
    pcm = np.frombuffer(b"".join(b"".join(c) for c in chunks), dtype="<i2")
    calls, first = [], 0
    for stream, chunk in zip(streams, chunks, strict=True):
        if chunk:
            calls.append((stream, first, len(chunk)))
        first += len(chunk)
    scored = model.score_frames(pcm, calls)
    out, first = [], 0
    for chunk in chunks:
        out.append(scored[first : first + len(chunk)])
        first += len(chunk)
    return out


@pytest.mark.parametrize("burst", [1, 3, 8])
def test_batched_ticks_match_each_call_frame_by_frame(burst: int) -> None:
    """Frames in bursts of ``burst`` per tick (a late loop): several windows of a call in
    one tick run as rounds, in order, and every frame gets the per-frame path's answer."""
    texts = ["stop please", "I would like to check my bill", "hello there", ""]
    feeds = [_frames(t) if t else [b"\0" * 320] * 40 for t in texts]
    batched = BatchedSileroModel()
    plain = SileroModel()
    streams = [batched.new_stream() for _ in texts]
    references = [plain.new_stream() for _ in texts]
    seen: list[list[float]] = [[] for _ in texts]
    expected: list[list[float]] = [[] for _ in texts]
    for start in range(0, max(len(f) for f in feeds), burst):
        chunks = [f[start : start + burst] for f in feeds]
        for i, got in enumerate(_tick(batched, streams, chunks)):
            seen[i].extend(got)
            expected[i].extend(references[i].speech_probability(frame) for frame in chunks[i])
    for i in range(len(texts)):
        np.testing.assert_allclose(seen[i], expected[i], atol=1e-5)
        np.testing.assert_allclose(streams[i]._state, references[i]._state, atol=1e-5)
    assert max(seen[1]) > 0.5 and max(seen[3]) < 0.1  # it heard the speech, not the silence
    assert batched.runs * 2 < batched.windows  # the calls shared their runs


def test_a_stream_fed_by_hand_answers_frame_by_frame() -> None:
    batched, plain = BatchedSileroModel(), SileroModel()
    stream, reference = batched.new_stream(), plain.new_stream()
    for frame in _frames("stop please"):
        assert stream.speech_probability(frame) == reference.speech_probability(frame)
    assert batched.runs == 0 and stream.batch_vad is batched


def test_a_stream_of_another_model_is_refused() -> None:
    batched, other = BatchedSileroModel(), BatchedSileroModel()
    with pytest.raises(TypeError):
        batched.score_frames(np.zeros(160, dtype=np.int16), [(other.new_stream(), 0, 1)])


def test_the_metronome_scores_every_call_with_one_run_per_tick() -> None:
    """Through the engine's metronome: each call's ``Heard`` carries the probabilities
    the per-frame path gives, and a tick with a window in each call is one model run."""
    texts = ["stop please", "I would like to check my bill", "hello there"]
    feeds = [[ulaw.encode(f) for f in _frames(t)] for t in texts]
    batched, plain = BatchedSileroModel(), SileroModel()
    metronome = Metronome(ManualClock(), autostart=False)
    lines, inboxes = [], []
    for _ in texts:
        line, inbox = Line(), Inbox[object]()
        inbox.attach(line, ticked=True)
        metronome.join(line, inbox.put_heard, vad=batched.new_stream())
        lines.append(line)
        inboxes.append(inbox)
    references = [plain.new_stream() for _ in texts]
    for step in range(max(len(f) for f in feeds)):
        runs = batched.runs
        for line, frames in zip(lines, feeds, strict=True):
            if step < len(frames):
                line.put_nowait(CallerAudio(frames[step]))
        metronome.tick()
        assert batched.runs - runs <= 1  # 20 ms a tick: at most one window of any call
        for inbox, frames, reference in zip(inboxes, feeds, references, strict=True):
            if step < len(frames):
                heard = inbox.get_nowait()
                assert isinstance(heard, Heard) and heard.probabilities is not None
                expected = reference.speech_probability(ulaw.decode(frames[step]))
                assert heard.probabilities[0] == pytest.approx(expected, abs=1e-5)
    assert batched.windows > 2 * batched.runs


def test_calls_that_leave_free_their_slot_for_the_next_without_leaking_state() -> None:
    """Calls come and go while others talk: a new call takes a slot a finished one left
    (its state zeroed: it starts as a fresh stream does), the slots in use never exceed
    the calls at once, and every call still gets the per-frame path's numbers."""
    texts = ["stop please", "I would like to check my bill", "hello there", "yes", "no"]
    feeds = [_frames(t) for t in texts]
    batched, plain = BatchedSileroModel(), SileroModel()
    live: list[tuple[object, object, list[bytes], list[float], list[float]]] = []
    finished = 0
    for tick in range(160):
        if tick % 12 == 0 and len(live) < 4:  # a call joins
            feed = feeds[tick % len(feeds)]
            live.append((batched.new_stream(), plain.new_stream(), feed, [], []))
        streams = [call[0] for call in live]
        chunks = [call[2][:1] for call in live]
        for call, got in zip(live, _tick(batched, streams, chunks), strict=True):
            call[3].extend(got)
            call[4].extend(call[1].speech_probability(f) for f in call[2][:1])  # type: ignore[attr-defined]
        still = []
        for stream, reference, feed, seen, expected in live:
            if len(feed) > 1:
                still.append((stream, reference, feed[1:], seen, expected))
                continue
            np.testing.assert_allclose(seen, expected, atol=1e-5)  # the call is over
            assert max(seen) > 0.5
            finished += 1
        del streams, stream, reference
        live = still
    assert finished >= 8
    assert batched.slots <= 4  # every call after the fourth reused a freed slot


def test_reset_zeroes_the_slot_state_and_the_carry_over() -> None:
    batched = BatchedSileroModel()
    stream, fresh = batched.new_stream(), batched.new_stream()
    speech = _frames("I would like to check my bill")
    for frame in speech:
        stream.speech_probability(frame)
    assert np.abs(stream._state).sum() > 0
    stream.reset()
    assert [stream.speech_probability(f) for f in speech] == [
        fresh.speech_probability(f) for f in speech
    ]
