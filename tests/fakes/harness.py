"""Builds the real relay service on a real Redis and the fake Chatbase, for tests and benches."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from bridge.app.compose import Bridge, compose
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.chatbase.client import ChatbaseClient
from bridge.chatbase.limiter import LocalLimiter
from bridge.core.clock import SystemClock
from bridge.core.models import InboundMessage, InboundReaction, Place, Platform
from bridge.core.ports import ChatbaseLike, Clock
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
    """One bridge process's worth of parts: the bridge ``compose`` built (its own Redis
    client, HTTP session and service) and, where a test runs a platform, its adapter and
    HTTP server."""

    bridge: Bridge
    adapter: Any = None
    server: TestServer | None = None

    @property
    def service(self) -> RelayService:
        return self.bridge.service

    @property
    def store(self) -> Store:
        return self.bridge.store

    @property
    def chatbase(self) -> ChatbaseClient:
        return self.bridge.chatbase

    @property
    def metrics(self) -> Metrics:
        return self.bridge.metrics

    @property
    def redis(self) -> aioredis.Redis:
        return self.bridge.redis


def roomy_limiter(clock: Clock) -> LocalLimiter:
    """A Chatbase request budget no test meets, on the test's clock."""
    return LocalLimiter(limit=1000, window=10, clock=clock)


def counter_value(metrics: Metrics, name: str, **labels: str) -> float:
    """A counter's value through the registry's public sample API (0 when never counted)."""
    value = metrics.registry.get_sample_value(f"{name}_total", labels)
    return 0.0 if value is None else float(value)


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
    wrap_chatbase: Callable[[ChatbaseClient], ChatbaseLike] | None = None,
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
            bridge = await stack.enter_async_context(compose(
                settings, clock=clock,
                # Turn leases and heartbeats run on real time; pacing and backoff on the test's.
                store_clock=store_clock or SystemClock(),
                limiter=roomy_limiter(clock), tools=tools, wrap_chatbase=wrap_chatbase,
            ))
            built.append(Replica(bridge))
        yield Harness(fake=fake, settings=settings, clock=clock, replicas=built)
        keys = [k async for k in built[0].redis.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await built[0].redis.delete(*keys)
