"""The model's connection is warmed when a caller starts a turn (off the turn path), once
per turn: by the endpoint an idle kept-alive connection is waiting."""

from __future__ import annotations

import asyncio

from engine_harness import Harness

from callbridge.engine.events import WarmUp
from callbridge.engine.warm import warm_up


def test_a_turn_asks_for_a_warm_connection_once_when_it_starts() -> None:
    h = Harness(speculate_ms=0)
    h.speak(100)
    assert h.count(WarmUp) == 0  # not speech yet (startMs)
    h.speak(200)
    assert h.count(WarmUp) == 1
    h.silence(100)
    h.speak(400)  # a pause inside the same turn
    assert h.count(WarmUp) == 1
    h.silence(600)
    h.answer_latest("Sure.")
    h.silence(800)
    h.speak(400)  # the next turn
    assert h.count(WarmUp) == 2


async def test_warm_up_skips_models_without_a_connection() -> None:
    warm_up(object())  # a scripted agent: nothing to warm, no error


async def test_warm_up_runs_the_models_warm_in_the_background() -> None:
    class Model:
        warmed = asyncio.Event()

        async def warm(self) -> None:
            self.warmed.set()

    model = Model()
    warm_up(model)
    await asyncio.wait_for(model.warmed.wait(), 1)
