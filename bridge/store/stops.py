"""Stop requests between replicas: Redis pub/sub on one channel per key prefix.

A stop (Slack's stop button, Discord's Stop button) reaches whichever replica received the
event; the answer may be streaming on another. The receiving replica stops what it runs
itself and publishes the answer's handle; every replica listens and stops what it runs
under that handle. Pub/sub delivers to the replicas connected at that moment, which is what
a stop needs: an answer in flight belongs to a running replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from bridge.store.connection import Link, sibling, translate

log = logging.getLogger(__name__)

# Waits between attempts to (re)subscribe while Redis is unreachable.
RETRY_FIRST = 0.5
RETRY_MAX = 15.0


class StopChannel:
    """Publishes stop requests and, in ``listen``, hands those of every replica to a
    callback."""

    def __init__(self, *, link: Link, channel: str) -> None:
        self._link = link
        self._channel = channel
        self.ready = asyncio.Event()  # set while subscribed (tests wait for it)

    async def announce(self, handle: str) -> None:
        async with self._link.trip():
            await self._link.client.publish(self._channel, handle)

    async def listen(self, on_stop: Callable[[str], object]) -> None:
        """Subscribe and call ``on_stop(handle)`` for each request, until cancelled;
        re-subscribes after Redis comes back."""
        wait = RETRY_FIRST
        warned = False
        while True:
            try:
                await self._listen_once(on_stop)
            except (RedisError, OSError) as exc:
                self.ready.clear()
                if not warned:
                    log.warning("stop requests from other replicas are not received "
                                "until Redis answers again: %s",
                                translate(exc, self._link.client))
                    warned = True
                await asyncio.sleep(wait)
                wait = min(RETRY_MAX, wait * 2)
                continue
            wait, warned = RETRY_FIRST, False

    async def _listen_once(self, on_stop: Callable[[str], object]) -> None:
        # A connection of its own, outside the shared pool: it waits for messages for as
        # long as the replica runs, so the pool's read timeout must not apply to it.
        # Made like the shared client (same address or sentinels, credentials, TLS), so
        # after a failover it subscribes on the new primary.
        client = sibling(self._link.client, socket_timeout=None)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            self.ready.set()
            log.debug("listening for stop requests")
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data = message.get("data")
                handle = data.decode() if isinstance(data, bytes) else str(data)
                on_stop(handle)
        finally:
            self.ready.clear()
            await pubsub.aclose()
            await client.aclose()
