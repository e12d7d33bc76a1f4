"""One bridge replica for the replicas scenario, in a process of its own.

Run as ``python -m tests.bench.replica`` with a JSON object of settings (environment names, as
the product reads them) on its command line. It builds the bridge as the product does
(``bridge.app.compose.compose``: its aiohttp session, Redis client, store, the Redis-shared
Chatbase limiter) and the real ``SlackAdapter`` on the Slack HTTP Events API, listening on an
ephemeral loopback port. The one thing not the product's: Slack's pacing is scaled by
``BENCH_SCALE`` (``SlackPacing().scaled``), as the test stack and the 429 scenario scale it
against a fake whose windows are scaled alike — the product has no setting for that.

It prints one JSON line (``events`` URL, ``control`` URL) and exits, after finishing what is
in flight, when its standard input closes. Control: ``GET /bench/idle`` answers once every
answer in flight is done, with this process's CPU seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.slack.adapter import EVENTS_PATH, SlackAdapter
from adapters.slack.sink import SlackPacing
from bridge.app.compose import compose
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from tests.bench.procs import until_released


async def serve(values: dict[str, Any]) -> None:
    scale = float(values.pop("BENCH_SCALE", 1.0))
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    async with compose(settings) as bridge:
        http_app = web.Application()
        adapter = SlackAdapter(
            settings=settings, relay=bridge.service, metrics=bridge.metrics,
            http_app=http_app, session=bridge.session, pacing=SlackPacing().scaled(scale),
            history=bridge.history,
        )

        async def idle(request: web.Request) -> web.Response:
            await adapter.wait_idle()
            return web.json_response({"cpu_seconds": time.process_time()})

        http_app.router.add_get("/bench/idle", idle)
        server = TestServer(http_app, host="127.0.0.1", port=0)
        await server.start_server()
        await adapter.start()
        Runtime.prepare_heap()  # what Runtime.serve does once connected
        print(json.dumps({"events": str(server.make_url(EVENTS_PATH)),
                          "control": str(server.make_url("/bench"))}), flush=True)
        try:
            await until_released()
        finally:
            await adapter.stop_intake()
            await bridge.service.drain(5.0)
            await adapter.close()
            await server.close()


def main() -> None:
    asyncio.run(serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
