"""What one authenticated Media Streams socket may cost us: budgets, with no I/O.

A valid stream token proves the socket belongs to a call we answered; it does not make
the peer well-behaved. Each event kind gets a budget matched to what Twilio really sends:

- DTMF: a person presses at most ~10 keys a second; a burst of 20 covers a pasted
  extension. Past the bucket, presses are dropped and counted (each one would be a
  stored turn and, with an LLM assistant, a model request).
- Marks: Twilio echoes each mark we sent, once. ``MarkLedger`` holds the names sent and
  not yet echoed; an echo of anything else is dropped and counted.
- Audio: Twilio sends 20 ms every 20 ms. ``AudioPacer`` says how long to wait before a
  frame may be processed so the caller's audio is never handled faster than real time
  (plus an allowance for a burst after a network stall); the socket adapter waits, TCP
  pushes back on the sender, and nothing is dropped.

Time is seconds from a monotonic clock the caller passes in, so tests use a manual one.
"""

from __future__ import annotations

__all__ = [
    "AUDIO_AHEAD_ALLOWANCE_S",
    "DTMF_BURST",
    "DTMF_PER_S",
    "MAX_OUTSTANDING_MARKS",
    "AudioPacer",
    "MarkLedger",
    "TokenBucket",
]

DTMF_PER_S = 10.0
DTMF_BURST = 20
MAX_OUTSTANDING_MARKS = 1000
"""Far above any reply's segment count; past it the oldest unechoed name is forgotten."""
AUDIO_AHEAD_ALLOWANCE_S = 2.0
"""How far the caller's audio may run ahead of the wall clock: a stall's catch-up burst."""
ULAW_BYTES_PER_S = 8000
_MIN_WAIT_S = 0.001  # below this a wait is rounding, not a peer ahead of the clock


class TokenBucket:
    """``take`` is True while the bucket has a token; it refills at ``rate_per_s``."""

    __slots__ = ("_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a bucket needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class MarkLedger:
    """The marks we sent and Twilio has not echoed yet (a multiset, oldest first)."""

    __slots__ = ("_pending", "limit")

    def __init__(self, limit: int = MAX_OUTSTANDING_MARKS) -> None:
        self.limit = limit
        self._pending: dict[str, int] = {}

    def sent(self, name: str) -> None:
        self._pending[name] = self._pending.get(name, 0) + 1
        if len(self._pending) > self.limit:
            del self._pending[next(iter(self._pending))]

    def echoed(self, name: str) -> bool:
        """True (and forgotten) if we sent ``name`` and it was not echoed yet."""
        count = self._pending.get(name, 0)
        if count == 0:
            return False
        if count == 1:
            del self._pending[name]
        else:
            self._pending[name] = count - 1
        return True


class AudioPacer:
    """How long to hold the caller's audio so it is processed no faster than real time."""

    __slots__ = ("_bytes", "_t0", "allowance_s")

    def __init__(self, allowance_s: float = AUDIO_AHEAD_ALLOWANCE_S) -> None:
        self.allowance_s = allowance_s
        self._t0: float | None = None
        self._bytes = 0  # whole bytes, so the sum of 20 ms frames does not drift

    def begin(self, now: float) -> None:
        """The stream started at ``now`` (Twilio's first frame follows ``start`` at once)."""
        self._t0 = now

    def wait_s(self, ulaw_bytes: int, now: float) -> float:
        """Seconds to wait before this frame (``ulaw_bytes`` long) may be processed."""
        if self._t0 is None:
            self._t0 = now
        self._bytes += ulaw_bytes
        ahead_s = self._bytes / ULAW_BYTES_PER_S - self.allowance_s - (now - self._t0)
        return ahead_s if ahead_s >= _MIN_WAIT_S else 0.0
