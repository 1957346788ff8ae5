"""``GET /readyz``: may a balancer send this instance a new call right now?

``/healthz`` says the process is alive (restart it if not); ``/readyz`` says it should
get new calls. It is not ready while draining, at ``CALLBRIDGE_MAX_CALLS``, without a
running store writer, or without its assistant's providers; a balancer that reads it
sends new calls elsewhere and leaves the live ones alone.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from callbridge.server.edge import Edge
from callbridge.store import Store

__all__ = ["readiness", "router"]

router = APIRouter()


def readiness(edge: Edge, store: Store | None, providers_ready: bool) -> dict[str, bool]:
    """Each condition by name; ready when all hold."""
    limit = edge.settings.max_calls
    return {
        "notDraining": not edge.drain.draining,
        "belowCallLimit": not limit or edge.stats.active_calls < limit,
        "store": store is None or store.writer.healthy,
        "providers": providers_ready,
    }


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    state = request.app.state
    edge: Edge = state.edge
    checks = readiness(edge, state.store, bool(getattr(state, "providers_ready", True)))
    ready = all(checks.values())
    return JSONResponse(
        {
            "status": "ready" if ready else "unavailable",
            "instance": edge.instance,
            "activeCalls": edge.stats.active_calls,
            "checks": checks,
        },
        status_code=200 if ready else 503,
    )
