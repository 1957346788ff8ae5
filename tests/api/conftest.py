"""A real server (uvicorn on 127.0.0.1) with a SQLite call record, for the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import twilio_stream as tw
from support.server import running_server

from callbridge.engine.transport import CallRunner
from callbridge.server.app import create_app
from callbridge.server.call_log import CallLog
from callbridge.settings import Settings, load_settings
from callbridge.store import Store
from callbridge.store.database import Database
from callbridge.telemetry.metrics import Metrics

AUTH_TOKEN = "b" * 32
API_TOKEN = "api-token-" + "k" * 22
ACCOUNT_SID = tw.ACCOUNT_SID

ENV_VARS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_PHONE_NUMBER",
    "TWILIO_API_BASE_URL",
    "PUBLIC_URL",
    "TRUSTED_PROXIES",
    "DATABASE_URL",
    "CALLBRIDGE_API_TOKEN",
    "CALLBRIDGE_STREAM_SECRET",
    "CALLBRIDGE_DATA_DIR",
    "CALLBRIDGE_RECORDINGS_DIR",
    "CALLBRIDGE_RECORDING_RETENTION_DAYS",
    "CALLBRIDGE_INSECURE_SKIP_SIGNATURE",
    "CALLBRIDGE_ASSISTANT",
)


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_token": AUTH_TOKEN,
            "account_sid": ACCOUNT_SID,
            "api_token": API_TOKEN,
            "data_dir": tmp_path / "data",
        }
        values.update(overrides)
        return load_settings(**values)

    return make


class Served:
    def __init__(self, base_url: str, store: Store, metrics: Metrics) -> None:
        self.base_url = base_url
        self.store = store
        self.metrics = metrics
        self.client = httpx.AsyncClient(
            base_url=base_url,
            trust_env=False,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )

    @property
    def database(self) -> Database:
        return self.store.database


@pytest.fixture
def serve() -> Callable[..., Any]:
    """``async with serve(settings, runner=…) as served:`` a server with its store."""

    @asynccontextmanager
    async def run(
        settings: Settings, *, runner: CallRunner | None = None, recording: bool = False
    ) -> AsyncIterator[Served]:
        metrics = Metrics()
        store = Store.from_settings(settings)
        call_log = CallLog(
            store.writer,
            assistant="api-test",
            recordings_dir=settings.recordings_path if recording else None,
            metrics=metrics,
        )
        wrapped = call_log.wrap(runner) if runner is not None else None
        app = create_app(settings, wrapped, store=store, metrics=metrics, call_log=call_log)
        async with running_server(app) as base_url:
            served = Served(base_url, store, metrics)
            try:
                yield served
            finally:
                await served.client.aclose()

    return run
