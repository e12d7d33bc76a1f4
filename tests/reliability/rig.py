"""Builds the real relay service for fault tests with every knob the fault needs: the Chatbase
client's timeouts, a Chatbase address that refuses connections, a Redis reached through a
proxy, several replicas, and a log capture that keeps whole records."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from bridge.app.compose import compose
from bridge.app.logs import _STANDARD
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.clock import SystemClock
from bridge.core.ports import Clock
from bridge.core.service import RelayService
from bridge.store import Store
from tests.fakes import secrets
from tests.fakes.chatbase import FakeChatbase
from tests.fakes.clock import FakeClock
from tests.fakes.harness import Harness, Replica, counter_value
from tests.fakes.sink import RecordingSink, Shared


@dataclass
class Rig:
    fake: FakeChatbase
    settings: Settings
    clock: Clock
    replicas: list[Replica]
    shared: Shared = field(default_factory=Shared)

    @property
    def service(self) -> RelayService:
        return self.replicas[0].service

    @property
    def store(self) -> Store:
        return self.replicas[0].store

    @property
    def metrics(self) -> Metrics:
        return self.replicas[0].metrics

    def sink(self, **kw: Any) -> RecordingSink:
        kw.setdefault("clock", self.clock)
        kw.setdefault("shared", self.shared)
        return RecordingSink(**kw)

    message = staticmethod(Harness.message)

    def outcome(self, outcome: str, platform: str = "slack") -> float:
        """How many answers ended with ``outcome`` on every replica (Prometheus counter)."""
        return sum(counter_value(r.metrics, "bridge_answers", platform=platform,
                                 outcome=outcome)
                   for r in self.replicas)


@asynccontextmanager
async def rig(
    redis_url: str,
    prefix: str,
    *,
    replicas: int = 1,
    clock: Clock | None = None,
    store_clock: Clock | None = None,
    chatbase_url: str | None = None,
    api_key: str | None = None,
    agent_id: str | None = None,
    chatbase_timeout: float = 30.0,
    redis_urls: list[str] | None = None,
    **env: Any,
) -> AsyncIterator[Rig]:
    """A fake Chatbase and ``replicas`` relay services on one Redis under ``prefix``.

    ``chatbase_url``/``api_key``/``agent_id`` override what the clients are given (a dead
    port, a wrong key, an unknown agent); ``redis_urls`` gives each replica its own address
    of the same Redis (a proxy). Settings come from ``env`` (environment names).
    """
    clock = clock if clock is not None else FakeClock(auto=True)
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeChatbase())
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            CHATBASE_API_KEY=api_key or fake.api_key,
            CHATBASE_AGENT_ID=agent_id or fake.agent_id,
            CHATBASE_API_BASE=chatbase_url or fake.base_url,
            REDIS_URL=redis_url,
            BRIDGE_REDIS_PREFIX=prefix,
            BRIDGE_CHATBASE_TIMEOUT=chatbase_timeout,
            **env,
        )
        secrets.register_settings(settings)
        built = []
        for index in range(replicas):
            url = redis_urls[index] if redis_urls else redis_url
            redis = aioredis.Redis.from_url(url, socket_connect_timeout=2.0)
            stack.push_async_callback(redis.aclose)
            # As the runtime does, but for the Redis client (a proxy's address, a short
            # connect timeout); the Chatbase request budget is shared through Redis.
            bridge = await stack.enter_async_context(compose(
                settings, redis=redis, clock=clock, store_clock=store_clock or SystemClock(),
            ))
            built.append(Replica(bridge))
        yield Rig(fake=fake, settings=settings, clock=clock, replicas=built)
        cleaner = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in cleaner.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await cleaner.delete(*keys)
        finally:
            await cleaner.aclose()


# --------------------------------------------------------------------------- logs


class Records(logging.Handler):
    """Every record logged while installed, whatever its level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def find(self, *parts: str, level: int = logging.WARNING) -> list[logging.LogRecord]:
        """Records at ``level`` or above whose line (message plus the fields given with
        ``extra=``, as the bridge's formatters print them) contains every one of ``parts``."""
        return [r for r in self.records
                if r.levelno >= level and all(p in line(r) for p in parts)]


def line(record: logging.LogRecord) -> str:
    extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                      if k not in _STANDARD and not k.startswith("_"))
    return f"{record.getMessage()}  [{extras}]"


@contextmanager
def recording() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
