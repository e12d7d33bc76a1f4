"""Several Slack bridge replicas (HTTP Events API) on one Redis, one fake Slack and one fake
Chatbase: each replica has its own bridge as ``compose`` builds it (Redis client, HTTP
session, service), SlackAdapter and HTTP server, as separate processes would. The clock is
the test's to choose."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.slack.adapter import EVENTS_PATH, SlackAdapter
from adapters.slack.sink import SlackPacing
from bridge.app.compose import compose
from bridge.app.settings import Settings
from bridge.core.clock import SystemClock
from bridge.core.ports import Clock
from bridge.core.service import RelayService
from tests.fakes import secrets
from tests.fakes.chatbase import FakeChatbase
from tests.fakes.harness import Replica, counter_value, roomy_limiter
from tests.fakes.slack import FakeSlack, Tiers
from tests.fakes.slack_stack import JITTER, SCALE, Delivery


@dataclass
class SlackRig:
    slack: FakeSlack
    chatbase: FakeChatbase
    settings: Settings
    replicas: list[Replica]
    session: aiohttp.ClientSession

    async def post(
        self, body: str, *, replica: int = 0, content_type: str = "application/json",
        headers: Mapping[str, str] | None = None, sign: bool = True,
        timestamp: int | None = None, secret: str | None = None,
    ) -> Delivery:
        sent = dict(self.slack.signed_headers(body, timestamp=timestamp, secret=secret)
                    if sign else {})
        sent["content-type"] = content_type
        sent.update(headers or {})
        server = self.replicas[replica].server
        assert server is not None
        url = server.make_url(EVENTS_PATH)
        started = time.perf_counter()
        async with self.session.post(url, data=body.encode(), headers=sent) as response:
            text = await response.text()
            return Delivery(response.status, text, time.perf_counter() - started)

    async def deliver(
        self, payload: Mapping[str, Any], *, replica: int = 0, retry_num: int | None = None,
        **kw: Any,
    ) -> Delivery:
        headers = dict(kw.pop("headers", {}) or {})
        if retry_num is not None:
            headers.update({"x-slack-retry-num": str(retry_num),
                            "x-slack-retry-reason": "http_timeout"})
        return await self.post(json.dumps(payload), replica=replica, headers=headers, **kw)

    async def idle(self) -> None:
        for replica in self.replicas:
            await replica.adapter.wait_idle()

    def count(self, outcome: str) -> float:
        return sum(counter_value(r.metrics, "bridge_answers", platform="slack", outcome=outcome)
                   for r in self.replicas)


@asynccontextmanager
async def slack_rig(
    redis_url: str,
    prefix: str,
    *,
    replicas: int = 1,
    clock: Clock | None = None,
    scale: float = SCALE,
    fake: Mapping[str, Any] | None = None,
    tiers: Tiers | None = None,
    **env: Any,
) -> AsyncIterator[SlackRig]:
    async with AsyncExitStack() as stack:
        slack = await stack.enter_async_context(FakeSlack(
            tiers=tiers or Tiers().scaled(scale, jitter=JITTER), **dict(fake or {})))
        chatbase = await stack.enter_async_context(FakeChatbase())
        values: dict[str, Any] = {
            "CHATBASE_API_KEY": chatbase.api_key, "CHATBASE_AGENT_ID": chatbase.agent_id,
            "CHATBASE_API_BASE": chatbase.base_url, "REDIS_URL": redis_url,
            "BRIDGE_REDIS_PREFIX": prefix, "BRIDGE_USER_QUOTA": "0",
            "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url,
            "SLACK_SIGNING_SECRET": slack.signing_secret,
        }
        values.update(env)
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        secrets.register_settings(settings)
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        built: list[Replica] = []
        for _ in range(replicas):
            replica_clock = clock or SystemClock()
            bridge = await stack.enter_async_context(compose(
                settings, clock=replica_clock, store_clock=SystemClock(),
                limiter=roomy_limiter(replica_clock),
            ))
            service, own = bridge.service, bridge.session
            app = web.Application()
            adapter = SlackAdapter(settings=settings, relay=service, metrics=bridge.metrics,
                                   http_app=app, session=own,
                                   pacing=SlackPacing().scaled(scale))
            server = TestServer(app, host="127.0.0.1", port=0)
            await server.start_server()
            stack.push_async_callback(server.close)

            async def shut_down(adapter: SlackAdapter = adapter,
                                service: RelayService = service) -> None:
                await adapter.stop_intake()
                await service.drain(5.0)
                await adapter.close()

            stack.push_async_callback(shut_down)
            await adapter.start()
            built.append(Replica(bridge, adapter=adapter, server=server))
        yield SlackRig(slack=slack, chatbase=chatbase, settings=settings, replicas=built,
                       session=session)
        cleaner = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in cleaner.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await cleaner.delete(*keys)
        finally:
            await cleaner.aclose()
