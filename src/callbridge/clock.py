"""Time as a dependency, so turn-taking and pacing are testable without sleeping.

A module of its own, not the engine's: the engine, the server, the store's recordings and
the simulator all take a ``Clock``, and none of them should import another for it.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale; only differences mean anything."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock tests move by hand; it only moves forward."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "time only moves forward"
        self.t += seconds
