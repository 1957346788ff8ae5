"""What the transcriber has heard of the turn the caller is speaking.

Final spans accumulate into the turn's text; the latest interim is kept only to know
that STT still owes a final. The same final reported twice within one speech run (a
transcriber flushing on ``Finalize``, say) counts once, so it yields one reply.
"""

from __future__ import annotations

import re

from callbridge.providers.base import TranscriptUpdate

__all__ = ["CallerWords", "same_words", "starts_with_words"]

_WORD = re.compile(r"[\w']+")


def starts_with_words(text: str, prefix: str) -> bool:
    """``prefix``'s words are the first words of ``text`` (case and punctuation aside)."""
    words, head = _WORD.findall(text.lower()), _WORD.findall(prefix.lower())
    return words[: len(head)] == head


def same_words(a: str, b: str) -> bool:
    """The same words, whatever the case and punctuation (interims are unpunctuated, a
    final is smart-formatted: "what is my balance" vs "What is my balance?")."""
    return _WORD.findall(a.lower()) == _WORD.findall(b.lower())


class CallerWords:
    def __init__(self) -> None:
        self.in_run: int | None = None  # words heard in the current speech run (None: none yet)
        self._run_finals = 0  # words of this run already finalised (a run can span finals)
        self._count_run = -1  # the speech run ``in_run`` counts
        self.interims_seen = False  # this transcriber streams interims (finals-only ones don't)
        self._parts: list[str] = []
        self._interim = ""
        self._last_final = ""
        self._final_run = 0  # the speech run the last final belonged to

    def hear(self, update: TranscriptUpdate, run_id: int, speaking: bool) -> bool:
        """Take one update; True when it added words to the turn."""
        text = update.text.strip()
        if not update.is_final:
            self.interims_seen = True
        if speaking:
            # Interims are cumulative within a span; a final closes the span, and the
            # run's count is its finalised words plus the open span's.
            if run_id != self._count_run or self.in_run is None:
                self._count_run, self._run_finals = run_id, 0
            words = len(text.split())
            self.in_run = self._run_finals + words
            if update.is_final:
                self._run_finals += words
        if not update.is_final:
            self._interim = text
            return False
        self._interim = ""
        if not text or (text == self._last_final and run_id == self._final_run):
            return False
        self._last_final, self._final_run = text, run_id
        self._parts.append(text)
        return True

    def owed(self) -> bool:
        """STT has heard speech it has not finalised, or nothing at all yet."""
        return bool(self._interim) or not self._parts

    def unfinished(self) -> bool:
        """STT is hearing words it has not finalised yet."""
        return bool(self._interim)

    @property
    def interim(self) -> str:
        """The newest words STT heard but has not finalised ("" when none)."""
        return self._interim

    def prepend(self, text: str) -> None:
        self._parts.insert(0, text)

    def text(self) -> str:
        return " ".join(self._parts).strip()

    def take(self) -> str:
        """The turn's text; the next turn starts empty."""
        text = " ".join(self._parts).strip()
        self._parts, self._interim = [], ""
        return text
