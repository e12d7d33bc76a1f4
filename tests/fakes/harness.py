"""Builds the real relay service on a real Redis and the fake Chatbase, for tests and benches."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.chatbase.client import ChatbaseClient
from bridge.chatbase.limiter import LocalLimiter
from bridge.core.clock import SystemClock
from bridge.core.models import InboundMessage, InboundReaction, Place, Platform
from bridge.core.ports import Clock
from bridge.core.rendering.pacing import Pacer
from bridge.core.service import RelayService
from bridge.core.tools import ToolRegistry
from bridge.store import Store
from tests.fakes import secrets
from tests.fakes.chatbase import FakeChatbase
from tests.fakes.clock import FakeClock
from tests.fakes.sink import RecordingSink, Shared

_events = itertools.count(1)


@dataclass
class Replica:
    """One bridge process's worth of parts: its own Redis client, HTTP session, service."""

    service: RelayService
    store: Store
    chatbase: ChatbaseClient
    metrics: Metrics
    redis: aioredis.Redis


@dataclass
class Harness:
    fake: FakeChatbase
    settings: Settings
    clock: FakeClock
    replicas: list[Replica]
    shared: Shared = field(default_factory=Shared)

    @property
    def service(self) -> RelayService:
        return self.replicas[0].service

    @property
    def store(self) -> Store:
        return self.replicas[0].store

    def sink(self, **kw: Any) -> RecordingSink:
        kw.setdefault("clock", self.clock)
        kw.setdefault("shared", self.shared)
        return RecordingSink(**kw)

    @staticmethod
    def message(
        text: str,
        *,
        user: str = "U1",
        channel: str = "C1",
        thread: str | None = None,
        reply_thread: str | None = "1000.1",
        workspace: str = "T1",
        dm: bool = False,
        event_id: str | None = None,
        platform: Platform = Platform.SLACK,
    ) -> InboundMessage:
        n = next(_events)
        return InboundMessage(
            place=Place(platform=platform, workspace=workspace, channel=channel, thread=thread,
                        is_dm=dm),
            author=user,
            text=text,
            message_id=f"{n}.0",
            event_id=event_id or f"ev{n}",
            reply_thread=None if dm else reply_thread,
        )

    @staticmethod
    def reaction(
        message_id: str, emoji: str, *, user: str = "U1", added: bool = True,
        channel: str = "C1", platform: Platform = Platform.SLACK,
    ) -> InboundReaction:
        return InboundReaction(
            platform=platform, workspace="T1", channel=channel, message_id=message_id,
            user=user, emoji=emoji, added=added, event_id=f"r{next(_events)}",
        )


@asynccontextmanager
async def harness(
    redis_url: str,
    prefix: str,
    *,
    replicas: int = 1,
    clock: FakeClock | None = None,
    tools: ToolRegistry | None = None,
    store_clock: Clock | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A fake Chatbase and ``replicas`` services sharing one Redis (under ``prefix``)."""
    clock = clock or FakeClock(auto=True)
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeChatbase())
        settings = Settings(
            CHATBASE_API_KEY=fake.api_key,
            CHATBASE_AGENT_ID=fake.agent_id,
            CHATBASE_API_BASE=fake.base_url,
            REDIS_URL=redis_url,
            BRIDGE_REDIS_PREFIX=prefix,
            **overrides,
        )
        secrets.register_settings(settings)
        built = []
        for _ in range(replicas):
            redis = aioredis.Redis.from_url(redis_url)
            stack.push_async_callback(redis.aclose)
            session = aiohttp.ClientSession()
            stack.push_async_callback(session.close)
            # Turn leases and heartbeats run on real time; pacing and backoff on the test's.
            store = Store.from_settings(redis, settings, clock=store_clock or SystemClock())
            metrics = Metrics()
            chatbase = ChatbaseClient(
                session=session, api_key=fake.api_key, agent_id=fake.agent_id,
                base_url=fake.base_url, limiter=LocalLimiter(limit=1000, window=10, clock=clock),
                clock=clock, idle_timeout=settings.stream_idle_timeout,
                max_wait=settings.chatbase_max_wait, on_request=metrics.chatbase_request,
            )
            service = RelayService(
                settings=settings, store=store, chatbase=chatbase,
                pacer=Pacer(slots=store, clock=clock), clock=clock, metrics=metrics,
                tools=tools,
            )
            built.append(Replica(service, store, chatbase, metrics, redis))
        yield Harness(fake=fake, settings=settings, clock=clock, replicas=built)
        keys = [k async for k in built[0].redis.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await built[0].redis.delete(*keys)
