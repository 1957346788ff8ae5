"""The FastAPI app factory and the uvicorn settings every way of serving it shares."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from callbridge.engine.transport import CallRunner
from callbridge.server import media, webhooks
from callbridge.server.edge import INSECURE_WARNING, Edge
from callbridge.server.loopback import loopback_runner
from callbridge.settings import Settings
from callbridge.telemetry.logging import log_event
from callbridge.twilio.rest import TwilioRest
from callbridge.twilio.security import WebhookValidator
from callbridge.twilio.tokens import StreamTokens

__all__ = ["WS_MAX_SIZE_BYTES", "create_app", "uvicorn_config"]

log = logging.getLogger(__name__)

WS_MAX_SIZE_BYTES = 1024 * 1024
"""The socket library's hard limit (it closes with 1009 above it). Kept well above the
codec's 64 KiB so an oversize frame reaches the handler, is counted and the call goes on."""


def create_app(settings: Settings, runner: CallRunner | None = None) -> FastAPI:
    """Build the app. ``runner`` serves each call; the loopback echo when None."""
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
    app = FastAPI(title="callbridge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.edge = Edge(
        settings=settings,
        tokens=StreamTokens(secret.get_secret_value()),
        validator=validator,
        runner=runner or loopback_runner,
        rest=rest,
    )
    app.include_router(webhooks.router)
    app.include_router(media.router)
    return app


def uvicorn_config(app: FastAPI, host: str, port: int, **overrides: object) -> uvicorn.Config:
    """One place for the serving knobs, so tests run exactly what production runs.

    - no permessage-deflate: compressing 20 ms audio frames costs CPU for nothing
      (DESIGN.md §9: ≈14 % of a core at 10 calls);
    - no proxy header rewriting in uvicorn: ``twilio/security.py`` decides which proxies
      to trust, in one place;
    - ``log_config=None``: uvicorn's loggers go through our handler (JSON lines).
    """
    options: dict[str, object] = {
        "host": host,
        "port": port,
        "ws_per_message_deflate": False,
        "ws_max_size": WS_MAX_SIZE_BYTES,
        "proxy_headers": False,
        "log_config": None,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]
