"""``/dashboard``: the operator's pages, served by the same app (issue 15).

Server-rendered Jinja2 templates with a little JavaScript (the live table's event
stream, the player's waveform, the overview's charts); uPlot and wavesurfer.js are
vendored under ``static/vendor`` at pinned versions (``scripts/vendor-dashboard.sh``),
so nothing is loaded from elsewhere at run time.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from callbridge.server.dashboard import live, pages
from callbridge.server.dashboard.auth import SessionKeeper
from callbridge.server.dashboard.state import HERE, Dashboard
from callbridge.server.edge import Edge
from callbridge.server.live_board import LiveBoard

__all__ = ["install"]


def install(app: FastAPI, board: LiveBoard | None = None) -> None:
    """Mount the pages and their static files on ``app`` (after ``app.state.edge``)."""
    edge: Edge = app.state.edge

    def token() -> str | None:
        secret = edge.settings.api_token
        return secret.get_secret_value() if secret is not None else None

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["ms"] = _ms
    templates.env.filters["seconds"] = _seconds
    app.state.dashboard = Dashboard(
        keeper=SessionKeeper(token),
        templates=templates,
        board=board if board is not None else LiveBoard(),
    )
    app.mount(
        "/dashboard/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static"
    )
    app.include_router(pages.router)
    app.include_router(live.router)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}:{seconds:02d}"
