"""The whole Slack path for integration tests: the fake Slack Web API (and Socket Mode), the
real SlackAdapter on slack-bolt, the bridge as ``compose`` builds it on real Redis, and the fake
Chatbase.

Pacing runs on real time with Slack's tiers shrunk by ``SCALE`` on both sides: the adapter's
budgets (``SlackPacing().scaled``) and the fake's enforced limits (``Tiers().scaled``), so
the per-minute behaviour is exercised ten times faster and a 429 from the fake is a real
pacing fault. The fake's windows are ``JITTER`` shorter than scaled: the milliseconds
between a call's paced slot and its arrival (a busy event loop on a small CI machine) do not
shrink with time: an unpaced burst is still refused at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from adapters.slack.adapter import EVENTS_PATH, SlackAdapter
from adapters.slack.sink import SlackPacing
from bridge.app.compose import compose
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.clock import SystemClock
from bridge.core.service import RelayService
from bridge.store import Store
from tests.fakes import secrets
from tests.fakes.chatbase import FakeChatbase
from tests.fakes.harness import roomy_limiter
from tests.fakes.slack import FakeSlack, Tiers

SCALE = 0.1
JITTER = 0.08


@dataclass
class Delivery:
    status: int
    body: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class SlackStack:
    slack: FakeSlack
    chatbase: FakeChatbase
    settings: Settings
    service: RelayService
    store: Store
    metrics: Metrics
    adapter: SlackAdapter
    session: aiohttp.ClientSession
    server: TestServer | None

    # ---------------------------------------------------------------- HTTP Events API

    async def post(
        self, body: str, *, content_type: str, headers: Mapping[str, str] | None = None,
        sign: bool = True, timestamp: int | None = None, secret: str | None = None,
    ) -> Delivery:
        assert self.server is not None, "not in HTTP mode"
        sent = dict(self.slack.signed_headers(body, timestamp=timestamp, secret=secret)
                    if sign else {})
        sent["content-type"] = content_type
        sent.update(headers or {})
        started = time.perf_counter()
        async with self.session.post(self.server.make_url(EVENTS_PATH), data=body.encode(),
                                     headers=sent) as response:
            text = await response.text()
            return Delivery(response.status, text, time.perf_counter() - started)

    async def deliver(
        self, payload: Mapping[str, Any], *, retry_num: int | None = None, **kw: Any
    ) -> Delivery:
        """An Events API request (JSON), signed unless told otherwise."""
        headers = {}
        if retry_num is not None:
            headers = {"x-slack-retry-num": str(retry_num), "x-slack-retry-reason": "timeout"}
        return await self.post(json.dumps(payload), content_type="application/json",
                               headers=headers, **kw)

    async def interact(self, payload: Mapping[str, Any]) -> Delivery:
        """An interactivity request (``payload=`` form field), signed."""
        return await self.post(urlencode({"payload": json.dumps(payload)}),
                               content_type="application/x-www-form-urlencoded")

    async def command(self, fields: Mapping[str, Any]) -> Delivery:
        """A slash command request (form fields), signed."""
        return await self.post(urlencode(fields),
                               content_type="application/x-www-form-urlencoded")

    # ---------------------------------------------------------------- Socket Mode

    async def dispatch_socket(
        self, payload: dict[str, Any], *, retry_num: int | None = None
    ) -> BoltResponse:
        """Hand a Socket Mode payload to Bolt the way the Socket Mode handler does."""
        headers: dict[str, str | Sequence[str]] | None = (
            {"x-slack-retry-num": str(retry_num)} if retry_num is not None else None)
        request = AsyncBoltRequest(mode="socket_mode", body=payload, headers=headers)
        return await self.adapter.app.async_dispatch(request)

    async def idle(self) -> None:
        """Wait until every answer, reaction and button press in flight is done."""
        await self.adapter.wait_idle()


@asynccontextmanager
async def slack_stack(
    redis_url: str,
    prefix: str,
    *,
    mode: Literal["http", "socket"] = "http",
    scale: float = SCALE,
    fake: Mapping[str, Any] | None = None,
    stream_clock: Callable[[], float] = time.monotonic,
    **env: Any,
) -> AsyncIterator[SlackStack]:
    """``stream_clock`` measures stream ages on both sides: the fake Slack that ends streams
    after ``stream_ttl`` and the adapter's sinks that roll them over before that."""
    async with AsyncExitStack() as stack:
        slack = await stack.enter_async_context(
            FakeSlack(tiers=Tiers().scaled(scale, jitter=JITTER), clock=stream_clock,
                      **dict(fake or {}))
        )
        chatbase = await stack.enter_async_context(FakeChatbase())
        values: dict[str, Any] = {
            "CHATBASE_API_KEY": chatbase.api_key,
            "CHATBASE_AGENT_ID": chatbase.agent_id,
            "CHATBASE_API_BASE": chatbase.base_url,
            "REDIS_URL": redis_url,
            "BRIDGE_REDIS_PREFIX": prefix,
            "BRIDGE_USER_QUOTA": "0",
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_URL": slack.api_url,
            "SLACK_SIGNING_SECRET": slack.signing_secret,
        }
        if mode == "socket":
            values["SLACK_APP_TOKEN"] = slack.app_token
        values.update(env)
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        secrets.register_settings(settings)
        clock = SystemClock()
        bridge = await stack.enter_async_context(
            compose(settings, clock=clock, limiter=roomy_limiter(clock))
        )
        service, store, metrics, session = (bridge.service, bridge.store, bridge.metrics,
                                            bridge.session)
        http_app = web.Application() if mode == "http" else None
        adapter = SlackAdapter(
            settings=settings, relay=service, metrics=metrics, http_app=http_app,
            session=session, pacing=SlackPacing().scaled(scale), stream_clock=stream_clock,
            history=bridge.history,
        )
        server = None
        if http_app is not None:
            server = TestServer(http_app, host="127.0.0.1", port=0)
            await server.start_server()
            stack.push_async_callback(server.close)
            slack.events_url = str(server.make_url(EVENTS_PATH))

        async def shut_down() -> None:
            await adapter.stop_intake()
            await service.drain(5.0)
            await adapter.close()

        stack.push_async_callback(shut_down)
        await adapter.start()
        yield SlackStack(slack=slack, chatbase=chatbase, settings=settings, service=service,
                         store=store, metrics=metrics, adapter=adapter, session=session,
                         server=server)
