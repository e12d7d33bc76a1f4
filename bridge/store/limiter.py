"""The Chatbase request limiter shared by every replica: a sliding window in a sorted set."""

from __future__ import annotations

import logging
import uuid

import redis.asyncio as aioredis

from bridge.chatbase.limiter import LocalLimiter
from bridge.core.clock import SystemClock
from bridge.core.errors import StoreError
from bridge.core.ports import Clock
from bridge.store.connection import Link, fmt, text

__all__ = ["RedisLimiter"]

log = logging.getLogger(__name__)

_LIMIT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - window))
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], string.format('%.17g', now), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return string.format('%.17g', tonumber(oldest[2]) + window - now)
"""


class RedisLimiter:
    """At most ``limit`` acquisitions in any ``window`` seconds, across all replicas.

    Times come from the injected clock (wall time in production, so replicas agree)."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        key: str,
        limit: int,
        window: float,
        clock: Clock | None = None,
        link: Link | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self._link = link if link is not None else Link(redis)
        self._key = key
        self._limit = limit
        self._window = window
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._script = redis.register_script(_LIMIT)
        self._local = LocalLimiter(limit=limit, window=window, clock=self._clock)

    async def try_acquire(self, now: float) -> float:
        """Take a place in the window at ``now`` if there is one (returns 0); otherwise
        returns how long until one frees up."""
        wait = await self._link.run(
            self._script, [self._key],
            [fmt(now), fmt(self._window), self._limit, uuid.uuid4().hex],
        )
        return float(text(wait))

    async def acquire(self) -> None:
        while True:
            try:
                wait = await self.try_acquire(self._clock.now())
            except StoreError as exc:
                # A Redis outage must not fail the request it was only meant to pace.
                log.warning("Chatbase request budget falls back to this process only: %s", exc)
                await self._local.acquire()
                return
            if wait <= 0:
                return
            await self._clock.sleep(wait)
