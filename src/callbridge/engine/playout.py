"""Paces the bot's audio to the line and knows which words the caller has heard.

How it works: TTS audio for each text segment is cut into 20 ms μ-law frames and queued,
followed by a mark. ``pull(now)`` sends frames only while the far end holds less than
``send_ahead_ms`` of unplayed audio: enough lead to absorb event-loop hiccups, little
enough that ``clear`` throws away little. The far end echoes each mark when the audio
before it has played; echoes plus the send clock place the play head inside the segment
in flight, which is what ``heard_text`` reports on barge-in.

A frame that is due goes out with the frames queued right behind it, up to
``FRAMES_PER_MESSAGE`` in one ``SendAudio`` (one ``media`` message; so the far end may
hold up to a frame more than the lead just after it), but never past a mark:
the message before a mark carries exactly the audio the mark follows, so echoes and
``heard_text`` are what they were with a message per frame. Nothing is held back for a
partner: a lone frame (the first of a reply while the TTS has sent no more, the odd one
before a mark, a reply's last) goes alone, at once.

The line is assumed to play audio in real time from the moment it arrives (Twilio does),
so ``play_end`` — when everything sent so far will have finished playing — is tracked
on the engine's clock, by ``audio.playhead.PlayHead`` (the model the recording and the
simulator's Twilio use too).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callbridge.audio.frames import FRAME_MS, ULAW_FRAME_BYTES, Framer
from callbridge.audio.playhead import PlayHead
from callbridge.engine.events import Command, SendAudio, SendMark

__all__ = ["FRAMES_PER_MESSAGE", "Playout", "SegmentKey"]

SegmentKey = tuple[int, int]  # (reply_id, segment index)
_FRAME_S = FRAME_MS / 1000

FRAMES_PER_MESSAGE = 2
"""Frames (20 ms each) per outbound ``media`` message at most: 40 ms. Every message costs
the server a command, a transport call and a ``send()`` syscall whatever its length
(issue 13's profile: the outbound chain was ~8 % of a busy core at 80 calls), and Twilio
plays any payload length, so two frames halve that. The message goes when its first frame
is due, so the lead never drops below what one frame a message kept; its second frame goes
20 ms early, well inside the 200 ms lead (``clear`` discards at most 20 ms more at the far
end, none of it heard). More frames would add little and hold more back per message."""


@dataclass(slots=True)
class _Segment:
    key: SegmentKey
    text: str
    mark: str
    framer: Framer  # holds audio shorter than a frame, waiting for more
    frames_queued: int = 0
    frames_sent: int = 0
    ended: bool = False
    played: bool = False
    play_start: float | None = None  # clock time its first frame starts playing


@dataclass(frozen=True, slots=True)
class _MarkItem:
    segment: _Segment


class Playout:
    def __init__(
        self,
        *,
        send_ahead_ms: int = 200,
        max_queued_s: float = 120.0,
        frames_per_message: int = FRAMES_PER_MESSAGE,
    ) -> None:
        if send_ahead_ms < FRAME_MS:
            raise ValueError(f"send_ahead_ms must be at least {FRAME_MS}, got {send_ahead_ms}")
        if frames_per_message < 1:
            raise ValueError(f"frames_per_message must be at least 1, got {frames_per_message}")
        self._lead_s = send_ahead_ms / 1000
        self._per_message = frames_per_message
        self._max_frames = max(1, int(max_queued_s / _FRAME_S))
        self._queue: deque[tuple[_Segment, bytes] | _MarkItem] = deque()
        self._frames_in_queue = 0
        self._segments: dict[SegmentKey, _Segment] = {}
        self._by_mark: dict[str, _Segment] = {}
        self._order: list[_Segment] = []  # segments of the current utterance, in order
        self._told = 0  # segments of _order already recorded as a turn (a failed reply)
        self._mark_counter = 0
        self._carry: Framer | None = None  # a sentence's last partial frame, for the next
        self._head = PlayHead(0.0)
        self.last_frame_end = 0.0  # when the last frame sent finishes playing
        self.dropped_frames = 0
        self.sent_frames = 0

    @property
    def play_end(self) -> float:
        """When everything sent so far will have finished playing (the far end's head)."""
        return self._head.end

    # ------------------------------------------------------------ filling

    def begin_segment(self, key: SegmentKey, text: str, *, before_unsent: bool = False) -> None:
        """``before_unsent``: a line said while the reply waits for its audio ("one
        moment") goes before the reply's segments that have no audio yet, as it is heard."""
        self._mark_counter += 1
        framer, self._carry = self._carry or Framer(ULAW_FRAME_BYTES), None
        segment = _Segment(key=key, text=text, mark=f"m{self._mark_counter}-r{key[0]}s{key[1]}",
                           framer=framer)
        self._segments[key] = segment
        self._by_mark[segment.mark] = segment
        at = len(self._order)
        if before_unsent:
            while at > 0 and self._order[at - 1].frames_queued == 0:
                at -= 1
        self._order.insert(at, segment)

    def add_audio(self, key: SegmentKey, ulaw: bytes) -> None:
        segment = self._segments.get(key)
        if segment is None or segment.ended:
            return
        frames = segment.framer.push(ulaw)
        for frame in frames:
            self._queue.append((segment, frame))
        segment.frames_queued += len(frames)
        self._frames_in_queue += len(frames)
        self._enforce_bound()

    def end_segment(self, key: SegmentKey, *, more_follows: bool = False) -> None:
        """No more audio for ``key``. Its last partial frame is padded with silence, unless
        ``more_follows``: then the next sentence's audio completes it, and the caller hears
        no inserted gap between sentences (up to 19 ms each)."""
        segment = self._segments.get(key)
        if segment is None or segment.ended:
            return
        if segment.framer.pending and more_follows:
            self._carry = segment.framer
        elif (padded := segment.framer.flush()) is not None:  # with μ-law silence
            self._queue.append((segment, padded))
            segment.frames_queued += 1
            self._frames_in_queue += 1
        segment.ended = True
        self._queue.append(_MarkItem(segment))

    # ------------------------------------------------------------ sending

    def pull(self, now: float) -> list[Command]:
        """Audio and marks that may go out now: a message as soon as its first frame is
        due (the far end holds less than the lead), with up to ``frames_per_message - 1``
        frames queued behind it, never past a mark."""
        queue = self._queue
        if not queue:
            return []  # (most wake-ups of a call: the bot is not talking)
        out: list[Command] = []
        head, per_message = self._head, self._per_message
        due_until = now + self._lead_s - _FRAME_S + 1e-9  # a frame starting by then is due
        while queue:
            item = queue[0]
            if isinstance(item, _MarkItem):
                queue.popleft()
                out.append(SendMark(item.segment.mark))
                continue
            if head.end > due_until:
                break  # not due (next_deadline): the far end holds a full lead
            parts: list[bytes] = []
            while True:  # ``item`` is a frame: into this message, with its accounting
                queue.popleft()
                segment, frame = item
                start = head.queue(now, _FRAME_S)  # the far end plays it on arrival if dry
                if segment.play_start is None:
                    segment.play_start = start
                segment.frames_sent += 1
                parts.append(frame)
                if len(parts) == per_message or not queue:
                    break
                item = queue[0]
                if isinstance(item, _MarkItem):
                    break  # the mark follows exactly this message's audio
            sent = len(parts)
            self._frames_in_queue -= sent
            self.sent_frames += sent
            self.last_frame_end = head.end
            out.append(SendAudio(parts[0] if sent == 1 else b"".join(parts)))
        return out

    def next_deadline(self) -> float | None:
        """When ``pull`` will next have something to send (None: nothing queued)."""
        if not self._queue:
            return None
        if type(self._queue[0]) is _MarkItem:  # (asked several times a frame)
            return 0.0
        return self._head.end + _FRAME_S - self._lead_s

    # ------------------------------------------------------------ what was heard

    def mark_played(self, name: str, now: float) -> bool:
        """Record a mark echo; False if it is not ours (stale, or from before a clear)."""
        segment = self._by_mark.pop(name, None)
        if segment is None:
            return False
        segment.played = True
        # The next segment cannot have started before this echo: correct our estimate.
        index = self._order.index(segment) if segment in self._order else -1
        if 0 <= index < len(self._order) - 1:
            following = self._order[index + 1]
            if following.play_start is not None and following.play_start < now:
                following.play_start = now
        return True

    def heard_text(self, now: float) -> str:
        """The words the caller has heard of the current utterance so far."""
        words: list[str] = []
        for segment in self._order[self._told :]:
            if segment.played:
                words.extend(segment.text.split())
                continue
            if segment.play_start is None or segment.frames_sent == 0:
                break
            duration = max(segment.frames_queued, segment.frames_sent) * _FRAME_S
            played_s = min(now, segment.play_start + segment.frames_sent * _FRAME_S)
            fraction = max(0.0, min(1.0, (played_s - segment.play_start) / duration))
            segment_words = segment.text.split()
            words.extend(segment_words[: int(fraction * len(segment_words) + 1e-9)])
            break
        return " ".join(words)

    def spoken_text(self) -> str:
        """Everything the current utterance was going to say."""
        return " ".join(segment.text for segment in self._order[self._told :])

    def mark_told(self) -> None:
        """What was said so far is on record (a reply that failed midway); what is said
        next in this utterance (the apology) is a turn of its own."""
        self._told = len(self._order)

    def busy(self) -> bool:
        """Audio still queued, or sent and not confirmed played (the bot is speaking)."""
        return bool(self._queue) or any(
            not s.played and (s.frames_queued > 0 or not s.ended) for s in self._order
        )

    def all_sent(self) -> bool:
        return not self._queue and all(s.ended for s in self._order)

    def clear(self, now: float) -> None:
        """The far end dropped its buffer: forget queued audio and pending marks."""
        self._queue.clear()
        self._frames_in_queue = 0
        self._segments.clear()
        self._by_mark.clear()
        self._order.clear()
        self._told = 0
        self._carry = None
        self._head.clear(now)

    def finish_utterance(self) -> None:
        """The utterance played out; start the next one's bookkeeping afresh."""
        for segment in self._order:
            self._segments.pop(segment.key, None)
            self._by_mark.pop(segment.mark, None)
        self._order.clear()
        self._told = 0
        self._carry = None

    def _enforce_bound(self) -> None:
        while self._frames_in_queue > self._max_frames:
            for i, item in enumerate(self._queue):
                if not isinstance(item, _MarkItem):
                    del self._queue[i]
                    self._frames_in_queue -= 1
                    self.dropped_frames += 1
                    break
