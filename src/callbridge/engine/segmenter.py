"""Cuts streamed model text into speakable segments, so the first sentence goes to TTS
while the model is still writing the rest (DESIGN.md §4, sentence streaming)."""

from __future__ import annotations

import re

__all__ = ["SentenceSegmenter"]

# A sentence ends at . ! ? (or a clause at ; :) followed by space; a lone "Dr." or "3.5"
# must not split, so an end needs whitespace after it and a few words before it.
_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e."})


class SentenceSegmenter:
    def __init__(self, min_chars: int = 12) -> None:
        self._buffer = ""
        self._min_chars = min_chars

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the segments it completed."""
        self._buffer += text
        segments: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            candidate = self._buffer[start : match.start()].strip()
            last_word = candidate.rsplit(" ", 1)[-1].lower()
            if len(candidate) < self._min_chars or last_word in _ABBREVIATIONS:
                continue
            segments.append(candidate)
            start = match.end()
        self._buffer = self._buffer[start:]
        return segments

    def flush(self) -> list[str]:
        """The stream ended: whatever is left is the last segment."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []
