"""Is what the caller said over the bot a backchannel ("uh-huh", "yeah", "okay")?

A listener says these to show they are following, not to take the turn; stopping the
bot for them is the most common complaint about voice agents. The judge is lexical and
deliberately narrow: every word must be a backchannel word of the call's language, and
a question mark makes it a question ("right?"), which does take the turn. How long the
caller spoke is judged by the engine (``backchannelMaxMs``), not here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["BackchannelJudge"]

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


class BackchannelJudge:
    """Built once per call from the assistant's list for its language."""

    def __init__(self, phrases: Iterable[str]) -> None:
        # Phrases are matched word by word: "uh huh" and "uh-huh" both count, however the
        # transcriber splits them.
        words: set[str] = set()
        for phrase in phrases:
            for word in _words(phrase):
                words.add(word)
                words.update(part for part in word.split("-") if part)
        self._words = frozenset(words)

    @classmethod
    def for_language(
        cls, table: Mapping[str, tuple[str, ...]], language: str
    ) -> BackchannelJudge:
        """``en-US`` falls back to ``en``; a language with no list filters nothing."""
        tag = language.lower()
        phrases = table.get(tag) or table.get(tag.split("-")[0]) or ()
        return cls(phrases)

    @property
    def enabled(self) -> bool:
        return bool(self._words)

    def judge(self, text: str) -> bool:
        """True when ``text`` has words and all of them are backchannel words."""
        if "?" in text:
            return False
        words = _words(text)
        return bool(words) and all(w in self._words for w in words)
