"""Reading keys and base URLs from the process environment mapping.

Keys come only from the mapping handed to ``build()`` (never ``os.environ`` behind the
caller's back), and a missing one is a start-up ``ConfigError`` that names the variable,
so the operator learns it before the first call rather than in the middle of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from callbridge.errors import ConfigError

__all__ = ["base_url", "optional_key", "require_key", "to_websocket_url"]


def require_key(env: Mapping[str, str], variable: str, provider: str) -> str:
    """The value of ``variable``; ``ConfigError`` naming it when unset or blank."""
    value = env.get(variable, "").strip()
    if not value:
        raise ConfigError(
            f"{provider} needs the environment variable {variable} (its API key); it is not set"
        )
    return value


def optional_key(env: Mapping[str, str], variable: str) -> str | None:
    value = env.get(variable, "").strip()
    return value or None


def base_url(
    block_value: str | None, env: Mapping[str, str], variable: str, default: str | None
) -> str:
    """The assistant's ``baseUrl`` wins over the process variable, which wins over the default.

    The per-assistant value is the more specific choice (one assistant on an EU endpoint,
    the rest on the default), so it takes precedence.
    """
    for candidate, origin in ((block_value, "baseUrl"), (env.get(variable), variable)):
        if candidate and candidate.strip():
            return _checked(candidate.strip(), origin)
    if default is None:
        raise ConfigError(f"a base URL is required: set baseUrl in the block or {variable}")
    return default


def to_websocket_url(url: str) -> str:
    """``http`` → ``ws`` and ``https`` → ``wss``; the fakes are reached over plain ``ws``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def _checked(url: str, origin: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ConfigError(f"{origin}: expected an http(s) URL, got {url!r}")
    return url.rstrip("/")
