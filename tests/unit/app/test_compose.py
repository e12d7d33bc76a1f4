"""compose() wires the bridge, uses what it is given, and closes only what it opened."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.app.compose import compose
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.errors import ConfigError
from tests.fakes.clock import FakeClock


def settings(redis_url: str, prefix: str) -> Settings:
    return Settings(_env_file=None, CHATBASE_API_KEY="key", CHATBASE_AGENT_ID="agent",  # type: ignore[call-arg]
                    REDIS_URL=redis_url, BRIDGE_REDIS_PREFIX=prefix)


async def test_given_parts_are_used_and_left_open(redis_url: str, redis_prefix: str) -> None:
    clock, metrics = FakeClock(auto=True), Metrics()
    redis = aioredis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as session:
        async with compose(settings(redis_url, redis_prefix), redis=redis, session=session,
                           clock=clock, metrics=metrics) as bridge:
            assert (bridge.redis, bridge.session, bridge.clock, bridge.metrics) == (
                redis, session, clock, metrics)
            with pytest.raises(dataclasses.FrozenInstanceError):
                bridge.clock = clock  # type: ignore[misc]
        assert not session.closed
        assert await redis.ping()
    await redis.aclose()


async def test_what_it_opens_it_closes(redis_url: str, redis_prefix: str) -> None:
    async with compose(settings(redis_url, redis_prefix)) as bridge:
        await bridge.store.ping()
        session = bridge.session
        assert not session.closed
    assert session.closed


async def test_missing_chatbase_settings_open_nothing() -> None:
    with pytest.raises(ConfigError, match="CHATBASE_AGENT_ID"):
        async with compose(Settings(_env_file=None, CHATBASE_API_KEY="key")):  # type: ignore[call-arg]
            pass
