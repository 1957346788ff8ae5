"""One exception family, so callers can catch ours without catching everything."""

from __future__ import annotations

__all__ = [
    "CallbridgeError",
    "ConfigError",
    "ProviderError",
    "TwilioProtocolError",
]


class CallbridgeError(Exception):
    """Base of every error callbridge raises on purpose."""


class ConfigError(CallbridgeError):
    """Settings or an assistant file are missing or malformed; the message names the field."""


class TwilioProtocolError(CallbridgeError):
    """The peer broke the Media Streams protocol (bad JSON, wrong order, bad field)."""


class ProviderError(CallbridgeError):
    """A vendor call failed; ``retryable`` says whether a retry with backoff can help."""

    def __init__(self, provider: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable
