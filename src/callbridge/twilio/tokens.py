"""Stream tokens: proof that a Media Streams socket belongs to a call we answered.

The webhook (signature-checked) mints a token bound to the CallSid and passes it in the
TwiML as a ``<Parameter>``; the socket's ``start`` message must carry it back before any
provider is touched. It is stateless (HMAC, not a table), so the socket may land on
another instance than the webhook did (DESIGN.md §10); the TTL is short because Twilio
opens the stream within a second or two of reading the TwiML.

Format: ``v1.<expiry unix s>.<assistant, base64url>.<HMAC-SHA256, base64url>``.

A token opens one stream, once: ``SpentTokens`` remembers each used token until it
expires (after that ``verify`` refuses it anyway), so memory is bounded by the tokens
minted in one TTL. It is per process; with several instances the set must live in the
shared store (an insert that fails on conflict), or a token could be replayed against
another instance within its 60 s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from callbridge.errors import CallbridgeError

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_SPENT_TOKENS",
    "SpentTokens",
    "StreamTokenError",
    "StreamTokens",
    "TokenClaims",
]

DEFAULT_TTL_S = 60
MAX_SPENT_TOKENS = 100_000
"""1 600 answered calls a second for a whole TTL; past it new streams are refused."""
_VERSION = "v1"


class StreamTokenError(CallbridgeError):
    """The token is missing, malformed, forged, for another call, or expired."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    call_sid: str
    expires_at: int
    assistant: str | None
    token_id: str = ""
    """The token's signature: unique per token, what ``SpentTokens`` remembers."""


class StreamTokens:
    """Mints and verifies tokens; ``now`` is wall-clock seconds (injectable for tests)."""

    def __init__(
        self,
        secret: str | bytes,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        now: Callable[[], float] = time.time,
    ) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ValueError("stream secret must be at least 16 bytes")
        self._key = key
        self._ttl_s = ttl_s
        self._now = now

    def mint(self, call_sid: str, assistant: str | None = None) -> str:
        expires_at = int(self._now()) + self._ttl_s
        name = _b64(assistant.encode("utf-8")) if assistant else ""
        sig = self._sign(call_sid, expires_at, name)
        return f"{_VERSION}.{expires_at}.{name}.{sig}"

    def verify(self, token: str, call_sid: str) -> TokenClaims:
        """Return the claims, or raise ``StreamTokenError`` saying what was wrong."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise StreamTokenError(f"expected a {_VERSION} stream token, got a malformed one")
        _, expiry_text, name, sig = parts
        if not (expiry_text.isascii() and expiry_text.isdigit() and len(expiry_text) <= 12):
            raise StreamTokenError("expected a numeric expiry in the stream token")
        expires_at = int(expiry_text)
        expected = self._sign(call_sid, expires_at, name)
        # Constant-time: a forger learns nothing from how long the comparison took.
        if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii", "replace")):
            raise StreamTokenError("stream token signature does not match this callSid")
        if self._now() >= expires_at:
            raise StreamTokenError(f"stream token expired at {expires_at}")
        try:
            assistant = base64.urlsafe_b64decode(_pad(name)).decode("utf-8") if name else None
        except (binascii.Error, ValueError) as exc:  # only reachable with the real secret
            raise StreamTokenError("stream token carries an unreadable assistant name") from exc
        return TokenClaims(
            call_sid=call_sid, expires_at=expires_at, assistant=assistant, token_id=sig
        )

    def _sign(self, call_sid: str, expires_at: int, name: str) -> str:
        msg = f"{_VERSION}\n{call_sid}\n{expires_at}\n{name}".encode()
        return _b64(hmac.new(self._key, msg, hashlib.sha256).digest())


class SpentTokens:
    """Verified tokens already used to open a stream, kept until they expire."""

    def __init__(
        self, *, now: Callable[[], float] = time.time, limit: int = MAX_SPENT_TOKENS
    ) -> None:
        self._now = now
        self.limit = limit
        self._ids: set[str] = set()
        self._by_expiry: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._ids)

    def spend(self, claims: TokenClaims) -> str | None:
        """Mark the token used; None if it was fresh, else why it may not open a stream."""
        self._forget_expired()
        if claims.token_id in self._ids:
            return "stream token already used"
        if len(self._ids) >= self.limit:
            return "too many stream tokens in flight"
        self._ids.add(claims.token_id)
        heapq.heappush(self._by_expiry, (claims.expires_at, claims.token_id))
        return None

    def _forget_expired(self) -> None:
        now = self._now()
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, token_id = heapq.heappop(self._by_expiry)
            self._ids.discard(token_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)
