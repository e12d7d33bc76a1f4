"""The benchmark's other process: the fake Chatbase and a minimal platform, on loopback.

Run as ``python -m tests.bench.chatbase_server``. It serves ``tests.fakes.chatbase.FakeChatbase``
(unchanged: same HTTP server, same SSE framing as the test suite) on an ephemeral port, plus
a small control app on another one, prints one JSON line with both URLs, and exits when its
standard input closes (so it never outlives the benchmark).

Control endpoints (JSON):

* ``POST /config`` — ``first_token_delay``, ``delta_delay`` (seconds) for every answer;
  ``hold_count`` answers that stop after ``hold_after`` deltas until ``POST /release``;
  ``platform_latency`` and ``platform_limit`` ([calls, seconds] per key) of the platform.
* ``POST /reset`` — forget recorded requests and conversations (keeps this process lean).
* ``GET /stats`` — stream counters and this process's CPU seconds.
* ``GET /requests`` — the chat requests since the last reset (headers, path, body fields), to
  check that the floor asks what the bridge asks.
* ``POST /platform/{op}`` — the platform a ``BenchSink`` writes to: answers after
  ``platform_latency`` with a message id, or 429 + ``retry_after`` when a key is over its
  limit (a fixed window, like Discord's per-channel write limit).

Running the fake here keeps its CPU out of the measured process: the bench process's
``time.process_time()`` is the bridge's (or the floor's) alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.bench.answers import answer_for
from tests.bench.procs import run_helper, until_released
from tests.fakes.chatbase import Answer, FakeChatbase, Gate


class Control:
    def __init__(self, fake: FakeChatbase) -> None:
        self.fake = fake
        self.gates: list[Gate] = []
        self.latency = 0.0
        self.limit: tuple[int, float] | None = None
        self.windows: dict[str, tuple[float, int]] = {}
        self.ids = itertools.count(1)
        self.platform_calls = 0
        self.platform_429 = 0
        self.first_token_delay = 0.0
        self.delta_delay = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/config", self.config)
        app.router.add_post("/release", self.release)
        app.router.add_post("/reset", self.reset)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/requests", self.requests)
        app.router.add_post("/platform/{op}", self.platform)
        return app

    async def config(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self.first_token_delay = float(body.get("first_token_delay", 0.0))
        self.delta_delay = float(body.get("delta_delay", 0.0))
        self.fake.default_answer = Answer(
            first_token_delay=self.first_token_delay, delta_delay=self.delta_delay
        )
        self.fake._script.clear()
        hold_count = int(body.get("hold_count", 0))
        hold_after = int(body.get("hold_after", 0))
        self.gates = []
        for _ in range(hold_count):
            gate = Gate()
            gate.release(hold_after)
            self.gates.append(gate)
            self.fake.script(Answer(gate=gate, first_token_delay=self.first_token_delay))
        self.latency = float(body.get("platform_latency", 0.0))
        limit = body.get("platform_limit")
        self.limit = (int(limit[0]), float(limit[1])) if limit else None
        self.windows.clear()
        return web.json_response({"ok": True})

    async def release(self, request: web.Request) -> web.Response:
        for gate in self.gates:
            gate.open()
        return web.json_response({"released": len(self.gates)})

    async def reset(self, request: web.Request) -> web.Response:
        fake = self.fake
        fake.requests.clear()
        fake.conversations.clear()
        fake.feedback_calls.clear()
        fake.tool_results.clear()
        self.platform_calls = self.platform_429 = 0
        self.windows.clear()
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        fake = self.fake
        return web.json_response({
            "streams_started": fake.streams_started,
            "streams_finished": fake.streams_finished,
            "streams_aborted": fake.streams_aborted,
            "held": sum(g.sent for g in self.gates),
            "platform_calls": self.platform_calls,
            "platform_429": self.platform_429,
            "cpu_seconds": time.process_time(),
        })

    async def requests(self, request: web.Request) -> web.Response:
        """The chat requests since the last reset as received: headers, path, body fields."""
        chat = [{"path": r.path, "headers": dict(r.headers),
                 "fields": list(r.body) if isinstance(r.body, dict) else None}
                for r in self.fake.requests if r.endpoint == "chat"]
        return web.json_response({"chat": chat})

    async def platform(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.platform_calls += 1
        key = str(body.get("key"))
        if self.limit is not None:
            calls, per = self.limit
            now = time.monotonic()
            start, used = self.windows.get(key, (now, 0))
            if now - start >= per:
                start, used = now, 0
            if used >= calls:
                self.platform_429 += 1
                return web.json_response(
                    {"ok": False, "retry_after": start + per - now}, status=429
                )
            self.windows[key] = (start, used + 1)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        message_id = body.get("id") or f"p{next(self.ids)}"
        return web.json_response({"ok": True, "id": message_id, "at": time.time()})


async def serve() -> None:
    fake = FakeChatbase()
    fake.answer_text_for = answer_for
    await fake.start()
    control = Control(fake)
    server = TestServer(control.app(), host="127.0.0.1", port=0)
    await server.start_server()
    print(json.dumps({
        "chatbase": fake.base_url,
        "control": str(server.make_url("")).rstrip("/"),
        "api_key": fake.api_key,
        "agent_id": fake.agent_id,
    }), flush=True)
    try:
        await until_released()
    finally:
        await server.close()
        await fake.close()


def main() -> None:
    run_helper(serve)


if __name__ == "__main__":
    main()
