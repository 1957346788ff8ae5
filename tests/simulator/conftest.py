"""A real server on 127.0.0.1 (uvicorn, production socket settings) for the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.server import running_server

from callbridge.server.app import create_app
from callbridge.settings import load_settings
from callbridge.simulator import voice

AUTH_TOKEN = "test-auth-token-0123456789abcdef"


@pytest.fixture
async def loopback_url(tmp_path: Path) -> AsyncIterator[str]:
    """The server with its default runner: the loopback echo (no engine)."""
    settings = load_settings(
        auth_token=AUTH_TOKEN, stream_secret="s" * 32, data_dir=tmp_path, account_sid=""
    )
    async with running_server(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def hello() -> voice.Utterance:
    return voice.from_text("Hello, I would like to check my bill please.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engine: drives the real engine end to end, in real time (-m 'not engine' skips)"
    )
