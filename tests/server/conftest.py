"""Fixtures for driving the real app over real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import twilio_stream as tw

from callbridge.settings import Settings, load_settings

AUTH_TOKEN = "a" * 32
ACCOUNT_SID = tw.ACCOUNT_SID


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings isolated from the developer's environment and .env."""
    monkeypatch.chdir(tmp_path)
    for var in (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "PUBLIC_URL",
        "TRUSTED_PROXIES",
        "CALLBRIDGE_STREAM_SECRET",
        "CALLBRIDGE_INSECURE_SKIP_SIGNATURE",
    ):
        monkeypatch.delenv(var, raising=False)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_token": AUTH_TOKEN,
            "account_sid": ACCOUNT_SID,
            "data_dir": tmp_path / "data",
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(base_url: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=base_url, trust_env=False)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()
