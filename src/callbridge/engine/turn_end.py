"""Does the caller's sentence sound finished? A lexical end-of-turn judge.

500 ms of silence is the safe endpoint when nothing knows whether the caller is done.
When the transcript reads as a finished sentence, a shorter silence is enough; when it
stops on a word that promises more ("I want to…", "my account and…", "um"), the full
silence is kept, so a caller who pauses mid-sentence is not cut off. A trained
end-of-turn model would judge better; this is what runs with no model at all.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["looks_finished"]

# Words a sentence does not end on: conjunctions, prepositions, articles, possessives,
# auxiliaries, fillers. Lower case, apostrophes kept.
_CONTINUES = frozenset(
    (  # noqa: SIM905 - a word list reads best as words
        "a an the and or but so because if then than that which who whom whose when where "
        "while to of for with in on at by from into about as like via per my your our their "
        "his her its this these those some any every each i i'm i'd i'll we you he she they "
        "it it's there there's is are was were be been am do does did have has had will "
        "would can could should shall may might must want need wanna gonna just also plus "
        "um uh er erm hmm well"
    ).split(" ")
)
_WORD = re.compile(r"[a-z']+")


@lru_cache(maxsize=256)
def looks_finished(text: str) -> bool:
    """True when ``text`` ends like a complete utterance. Remembered: each frame of a
    silence before the endpoint asks again about the same words."""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped[-1] in ".!?":
        return not stripped.endswith("...")
    if stripped[-1] in ",;:-–—":
        return False
    words = _WORD.findall(stripped.lower())
    return bool(words) and words[-1] not in _CONTINUES
