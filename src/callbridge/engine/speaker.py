"""What the bot says: the current reply (``replies.py``) and its pacing to the line
(``playout.py``), and ``barge_in``, the one way the bot goes quiet.

A reply's way out: the reply task posts its sentences and audio; ``Replies`` lays them
into the ``Playout`` as segments; ``pull`` sends 20 ms frames no further ahead of the
line than ``sendAheadMs``, with a mark after each segment; the marks coming back say what
the caller heard. ``barge_in`` (``clear``, drop what is queued, cancel the reply) is used
by every path that silences the bot: a caller talking over it, a key press, the call's
maximum length, a speculative answer dropped unheard, an operator's or a fault's
hang-up, and the VAPI bridge (``bridge.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callbridge.engine.config import TurnRules
from callbridge.engine.events import Command, SendClear
from callbridge.engine.playout import Playout
from callbridge.engine.replies import Replies, Reply

__all__ = ["Cut", "Speaker", "barge_in"]

_PULL_SLACK_S = 1e-9  # ``Playout.pull``'s own: a frame due at ``now`` goes now


@dataclass(frozen=True, slots=True)
class Cut:
    """What a silenced utterance had said, and what of it the caller heard."""

    spoken: str
    heard: str


def barge_in(
    playout: Playout, send: Callable[[SendClear], None], now: float, *, clear: bool
) -> Cut:
    """Stop the bot's audio at ``now``: ``clear`` to the line (when any of it may be
    there), and drop what was queued. Returns what was said and heard until then."""
    cut = Cut(playout.spoken_text(), playout.heard_text(now))
    if clear:
        send(SendClear())
    playout.clear(now)
    return cut


class Speaker:
    def __init__(self, rules: TurnRules, out: list[Command]) -> None:
        self.playout = Playout(send_ahead_ms=rules.send_ahead_ms, max_queued_s=rules.playout_max_s)
        self.replies = Replies(self.playout, out)
        self._out = out

    @property
    def reply(self) -> Reply | None:
        return self.replies.current

    def held(self) -> Reply | None:
        """The speculative answer, started before the endpoint and not to be played yet."""
        reply = self.replies.current
        return reply if reply is not None and reply.held else None

    def barge_in(self, now: float, *, clear: bool = True) -> tuple[Cut, Reply | None]:
        """Silence the bot and cancel its reply (the task is cancelled and waited for by
        the shell); returns what was cut and the reply it belonged to."""
        reply = self.replies.current
        cut = barge_in(self.playout, self._out.append, now, clear=clear)
        self.replies.cancel()
        return cut, reply

    def drop_held(self) -> None:
        """A held answer goes unheard: nothing of it was sent, so the line needs no clear."""
        self.barge_in(self.playout.play_end, clear=False)

    def pull(self, now: float) -> None:
        """Send what may go out now (the caller of this holds back a held answer).
        Asked after every event: most wake-ups have nothing due (``Playout.next_deadline``
        says when ``pull`` will next have something), and asking that is the cheaper."""
        playout = self.playout
        due = playout.next_deadline()
        if due is None or due > now + _PULL_SLACK_S:
            return
        sent = playout.pull(now)
        if sent:
            self._out.extend(sent)
            self.replies.note_sent(now)
