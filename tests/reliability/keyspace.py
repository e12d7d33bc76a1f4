"""Waits on Redis keyspace notifications: the test learns that a replica queued for a turn
(an RPUSH on a turn queue) from Redis itself, instead of polling or sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError


class TurnQueueWatch:
    """Counts RPUSH events on the turn queues under one key prefix."""

    def __init__(self) -> None:
        self.pushes = 0
        self._changed = asyncio.Condition()

    async def _seen(self) -> None:
        async with self._changed:
            self.pushes += 1
            self._changed.notify_all()

    async def wait(self, pushes: int, *, within: float = 10.0) -> None:
        """Wait until ``pushes`` replicas in total have queued for a turn."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.pushes >= pushes)


@asynccontextmanager
async def turn_queue_watch(redis_url: str, prefix: str) -> AsyncIterator[TurnQueueWatch]:
    """Switches list keyspace events on for the test (and back off after it)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        try:
            before = (await client.config_get("notify-keyspace-events")).get(
                "notify-keyspace-events", "")
            await client.config_set("notify-keyspace-events", "Kl")
        except ResponseError:
            pytest.skip("this Redis does not allow CONFIG SET notify-keyspace-events")
        watch = TurnQueueWatch()
        pubsub = client.pubsub()
        await pubsub.psubscribe(f"__keyspace@*__:{prefix}turnq:*")

        async def listen() -> None:
            async for message in pubsub.listen():
                if message.get("type") == "pmessage" and message.get("data") in (
                        b"rpush", "rpush"):
                    await watch._seen()

        listener = asyncio.create_task(listen())
        try:
            yield watch
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await pubsub.aclose()
            await client.config_set("notify-keyspace-events", before or "")
    finally:
        await client.aclose()
