"""The lexical end-of-turn judge."""

from __future__ import annotations

import pytest

from callbridge.engine.turn_end import looks_finished


@pytest.mark.parametrize(
    "text",
    ["Check my bill.", "what is my balance", "Can you help me?", "no thanks!", "billing"],
)
def test_finished(text: str) -> None:
    assert looks_finished(text)


@pytest.mark.parametrize(
    "text",
    ["", "I want to", "my bill and", "the number is, ", "um", "So I was wondering...",
     "it's for my", "Hello -"],
)
def test_not_finished(text: str) -> None:
    assert not looks_finished(text)
