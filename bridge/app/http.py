"""The operations HTTP server: liveness, readiness and Prometheus metrics (Slack adds its route)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.app.metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["READINESS_TIMEOUT", "Readiness", "create_app"]

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[dict[str, bool]]]

# A check that hangs (a Redis behind a black-holed route) must answer "not ready" before the
# probe gives up on its own; deploy/kubernetes gives the probe 3 s.
READINESS_TIMEOUT = 2.0


def create_app(*, metrics: Metrics, readiness: Readiness) -> web.Application:
    """The aiohttp app serving ``/healthz``, ``/readyz`` and ``/metrics``.

    ``readiness`` returns one boolean per check (``{"redis": True, "slack": False}``); the
    process is ready when every one is true. Bodies carry check names only, never content.
    """

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READINESS_TIMEOUT):
                checks = dict(await readiness())
        except TimeoutError:
            log.warning("readiness checks did not answer within %.1fs", READINESS_TIMEOUT)
            checks = {"readiness": False}
        except Exception as exc:
            # A failing check is an answer ("not ready"), not a server error.
            log.warning("readiness checks failed: %s", type(exc).__name__)
            checks = {"readiness": False}
        ready = all(checks.values())
        return web.json_response(checks, status=200 if ready else 503)

    async def metrics_handler(request: web.Request) -> web.Response:
        # aiohttp's ``content_type=`` refuses parameters; Prometheus' type carries a version.
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics_handler, name="metrics")
    return app
