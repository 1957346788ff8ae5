"""The FastAPI app factory and the uvicorn settings every way of serving it shares."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from callbridge.engine.transport import CallRunner
from callbridge.server import api, api_control, dashboard, readiness, webhooks
from callbridge.server.call_log import CallLog, Providers
from callbridge.server.control import CallControl, ControlBus
from callbridge.server.edge import INSECURE_WARNING, Edge
from callbridge.server.live import instance_name
from callbridge.server.loopback import loopback_runner
from callbridge.server.media_socket import upgrade_protocol
from callbridge.server.status_capture import StatusCapture, status_ops
from callbridge.settings import Settings
from callbridge.store import Store
from callbridge.telemetry.logging import log_event
from callbridge.telemetry.metrics import Metrics
from callbridge.twilio.rest import TwilioRest
from callbridge.twilio.security import WebhookValidator
from callbridge.twilio.tokens import StreamTokens

__all__ = ["WS_MAX_SIZE_BYTES", "create_app", "serving_app", "uvicorn_config"]

log = logging.getLogger(__name__)

WS_MAX_SIZE_BYTES = 1024 * 1024
"""The socket library's hard limit (it closes with 1009 above it). Kept well above the
codec's 64 KiB so an oversize frame reaches the handler, is counted and the call goes on."""


def create_app(
    settings: Settings,
    runner: CallRunner | None = None,
    *,
    store: Store | None = None,
    metrics: Metrics | None = None,
    call_log: CallLog | None = None,
    instance: str | None = None,
) -> FastAPI:
    """Build the app. ``runner`` serves each call; the loopback echo when None.

    With a ``store`` the app migrates it and runs its writer for its lifetime, records
    status callbacks and serves ``/api``; ``call_log`` (which should already wrap
    ``runner``) and the metrics subscribe to every call's typed events (``edge.events``).
    """
    secret = settings.stream_secret
    if secret is None:
        raise ValueError("settings.stream_secret is unset: build settings with load_settings()")
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if settings.insecure_skip_signature:
        log.warning(INSECURE_WARNING)
        validator = None
    else:
        validator = WebhookValidator(token)
    if not settings.public_url:
        log_event(
            log,
            logging.WARNING,
            "settings.no_public_url",
            hint="webhook URLs are rebuilt from each request; set PUBLIC_URL to the https "
            "origin Twilio calls",
        )
    rest = None
    if settings.account_sid and token:
        rest = TwilioRest(settings.account_sid, token, base_url=settings.twilio_api_base_url)
    else:
        log_event(
            log, logging.WARNING, "settings.no_rest", hint="hang-up will only close the socket"
        )
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            await store.start()
        bus = await _start_control(app, store)
        try:
            yield
        finally:
            if bus is not None:
                await bus.close()
            if store is not None:
                await store.close()

    app = FastAPI(
        title="callbridge",
        summary="Call records and call control for a Twilio voice agent",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.edge = Edge(
        settings=settings,
        tokens=StreamTokens(secret.get_secret_value()),
        validator=validator,
        runner=runner or loopback_runner,
        rest=rest,
        instance=instance or instance_name(),
    )
    app.state.edge.events.subscribe(metrics.count_event)
    if call_log is not None:
        app.state.edge.events.subscribe(call_log.on_event)
    app.state.providers_ready = True  # the runner exists: its providers were built
    app.state.control = CallControl(app.state.edge.live, app.state.edge.instance, None, None)
    app.state.store = store
    app.state.metrics = metrics
    metrics.watch_edge(app.state.edge.stats)
    if store is not None:
        metrics.watch_store(store.writer)
    metrics.watch_drain(app.state.edge.drain, app.state.edge.instance)
    app.include_router(webhooks.router, include_in_schema=False)
    app.include_router(readiness.router, include_in_schema=False)
    app.include_router(api.router)
    app.include_router(api_control.router)
    app.include_router(api.metrics_router)
    dashboard.install(app, call_log.board if call_log is not None else None)
    if store is not None:
        writer = store.writer

        def record_status(params: dict[str, str]) -> None:
            for op in status_ops(params, datetime.now(UTC)):
                writer.submit(op)

        app.add_middleware(StatusCapture, on_status=record_status)
    return app


async def _start_control(app: FastAPI, store: Store | None) -> ControlBus | None:
    """With PostgreSQL, listen for other instances' commands (DESIGN.md §10)."""
    edge: Edge = app.state.edge
    if store is None:
        return None
    if store.database.is_sqlite:
        log_event(
            log,
            logging.INFO,
            "store.single_instance",
            hint="SQLite keeps one instance's calls; set DATABASE_URL to PostgreSQL "
            "to run several instances",
        )
        app.state.control = CallControl(edge.live, edge.instance, store.database, None)
        return None
    bus = ControlBus(store.database.url, edge.instance, edge.live)
    await bus.start()
    app.state.control = CallControl(edge.live, edge.instance, store.database, bus)
    return bus


def serving_app(settings: Settings, assistant_path: Path) -> FastAPI:
    """What ``callbridge serve`` runs: the assistant's engine, recorded into the store."""
    from callbridge.assistant import load_assistant
    from callbridge.voice_agent import build_runner

    config = load_assistant(assistant_path)
    metrics = Metrics()
    instance = instance_name()
    store = Store.from_settings(settings, on_drop=lambda _: metrics.store_dropped.inc())
    call_log = CallLog(
        store.writer,
        assistant=config.name,
        recordings_dir=settings.recordings_path if config.recording_enabled else None,
        metrics=metrics,
        providers=Providers(
            stt=str(config.transcriber.get("provider", "")),
            llm=str(config.model.get("provider", "")),
            tts=str(config.voice.get("provider", "")),
        ),
        instance=instance,
    )
    runner = build_runner(
        assistant_path,
        on_turn=call_log.on_turn,
        on_end=call_log.on_end,
    )
    return create_app(
        settings,
        call_log.wrap(runner),
        store=store,
        metrics=metrics,
        call_log=call_log,
        instance=instance,
    )


def uvicorn_config(app: FastAPI, host: str, port: int, **overrides: object) -> uvicorn.Config:
    """One place for the serving knobs, so tests run exactly what production runs.

    - no permessage-deflate: compressing 20 ms audio frames costs CPU for nothing
      (DESIGN.md §9: ≈14 % of a core at 10 calls);
    - no proxy header rewriting in uvicorn: ``twilio/security.py`` decides which proxies
      to trust, in one place;
    - ``log_config=None``: uvicorn's loggers go through our handler (JSON lines);
    - ``ws``: ``/media`` is served outside ASGI (``server/media_socket.py``); other
      WebSocket paths still reach the app through uvicorn's own protocol.
    """
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "ws_per_message_deflate": False,
        "ws_max_size": WS_MAX_SIZE_BYTES,
        "proxy_headers": False,
        "log_config": None,
        "lifespan": "on",
        "ws": upgrade_protocol(app.state.edge),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]
