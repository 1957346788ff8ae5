"""Where a real-time player is in the audio queued to it: the one play-head model.

Twilio plays the bot's audio at its natural rate from the moment it arrives, or from
when the audio before it ends, whichever is later; ``clear`` throws away what has not
played. Three places need that arithmetic and keep one ``PlayHead`` each: playout (when
may the next frame go, which words were heard), the call recording (where the bot's
audio goes on the timeline) and the simulator's Twilio (what the caller hears when).

The unit is the owner's, as long as it is one: seconds on the clock (playout, the
simulator) or samples (the recording, which indexes a buffer with it).
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["PlayHead"]

N = TypeVar("N", int, float)


class PlayHead(Generic[N]):
    """``end``: when everything queued so far will have finished playing."""

    __slots__ = ("end",)

    def __init__(self, start: N) -> None:
        self.end: N = start

    def queue(self, now: N, length: N) -> N:
        """Audio of ``length`` arrives at ``now``; returns when it starts playing."""
        start = max(self.end, now)
        self.end = start + length
        return start

    def ahead(self, now: N) -> N:
        """How much queued audio has not played by ``now`` (0 when the player is dry)."""
        return max(self.end, now) - now

    def clear(self, now: N) -> N:
        """The player drops what has not played; returns how much that was."""
        dropped = self.ahead(now)
        self.end = now
        return dropped
