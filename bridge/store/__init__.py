"""Redis store: exactly-once claims, per-conversation turns, reply records, shared pacing.

``Store`` is the facade the bridge uses; each concern lives in its own module: ``connection``
(connecting, round trips, errors), ``claims``, ``turns`` (the FIFO lock), ``records``,
``slots`` (pacing), ``limiter`` (the shared Chatbase limiter) and ``embedded`` (a local
Redis server when no REDIS_URL is set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import redis.asyncio as aioredis

from bridge.core.clock import SystemClock
from bridge.core.keys import Keys
from bridge.core.models import Platform, ReplyRecord
from bridge.core.ports import Clock
from bridge.store.claims import Claim, Claims
from bridge.store.connection import DEFAULT_TIMEOUT, Link, connect, redis_address, translate
from bridge.store.embedded import EmbeddedRedis
from bridge.store.limiter import RedisLimiter
from bridge.store.records import ConversationState, Records
from bridge.store.slots import Slots
from bridge.store.stops import StopChannel
from bridge.store.turns import Turn, TurnLocks

__all__ = [
    "Claim",
    "ConversationState",
    "EmbeddedRedis",
    "RedisLimiter",
    "StopChannel",
    "Store",
    "Turn",
    "connect",
    "redis_address",
    "translate",
]


class StoreSettings(Protocol):
    """The store's key prefix and lifetimes (``bridge.app.settings.Settings`` has these)."""

    @property
    def redis_prefix(self) -> str: ...
    @property
    def conversation_ttl(self) -> int: ...
    @property
    def reply_ttl(self) -> int: ...
    @property
    def dedup_ttl(self) -> int: ...
    @property
    def lock_ttl(self) -> int: ...
    @property
    def lock_wait(self) -> float: ...
    @property
    def redis_timeout(self) -> float: ...


class Store:
    """Everything the bridge keeps in Redis. Does not own (close) the client."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        prefix: str,
        conversation_ttl: int,
        reply_ttl: int,
        dedup_ttl: int,
        lock_ttl: float,
        lock_wait: float,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        self.link = Link(redis, timeout=timeout)
        self.keys = Keys(prefix)
        self.conversation_ttl = conversation_ttl
        self.reply_ttl = reply_ttl
        self.dedup_ttl = dedup_ttl
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self.clock: Clock = clock if clock is not None else SystemClock()
        link, keys = self.link, self.keys
        self._claims = Claims(link=link, keys=keys, dedup_ttl=dedup_ttl)
        self._turns = TurnLocks(
            link=link, keys=keys, clock=self.clock, lock_ttl=lock_ttl, lock_wait=lock_wait,
            conversation_ttl=conversation_ttl, reply_ttl=reply_ttl,
        )
        self._records = Records(link=link, keys=keys, reply_ttl=reply_ttl)
        self._slots = Slots(link=link, keys=keys, clock=self.clock)
        self.stops = StopChannel(link=link, channel=keys.stops())

    @classmethod
    def from_settings(
        cls, redis: aioredis.Redis, settings: StoreSettings, *, clock: Clock | None = None
    ) -> Store:
        return cls(
            redis=redis,
            prefix=settings.redis_prefix,
            conversation_ttl=settings.conversation_ttl,
            reply_ttl=settings.reply_ttl,
            dedup_ttl=settings.dedup_ttl,
            lock_ttl=settings.lock_ttl,
            lock_wait=settings.lock_wait,
            timeout=settings.redis_timeout,
            clock=clock,
        )

    async def aclose(self) -> None:
        """Give the store's shared Redis connection back to the client's pool (the client
        itself is the caller's to close)."""
        await self.link.aclose()

    @property
    def round_trips(self) -> int:
        """Network round trips made so far (a pipeline or a script call counts once)."""
        return self.link.round_trips

    @property
    def redis(self) -> aioredis.Redis:
        return self.link.client

    async def ping(self) -> None:
        async with self.link.trip():
            await self.link.client.ping()

    async def cached_history(self, key: str) -> str | None:
        return await self._records.cached_history(key)

    async def cache_history(self, key: str, page: str, ttl: float) -> None:
        await self._records.cache_history(key, page, ttl)

    async def announce_stop(self, handle: str) -> None:
        """Ask every replica to stop the answer running under ``handle``."""
        await self.stops.announce(handle)

    # ---------------------------------------------------------------- events

    async def claim(
        self, event_id: str, *, quota_subject: str | None = None, quota_window: int = 3600
    ) -> Claim:
        """Claim a platform event once across replicas and redeliveries; when it is new and
        ``quota_subject`` is given, count it against that subject's window."""
        return await self._claims.claim(
            event_id, quota_subject=quota_subject, quota_window=quota_window
        )

    # ---------------------------------------------------------------- conversations

    def turn(
        self, conversation_key: str, *, on_wait: Callable[[int], None] | None = None
    ) -> AbstractAsyncContextManager[Turn]:
        """Hold the turn of ``conversation_key``: one at a time across replicas, served in
        arrival order. ``on_wait`` is called with the queue position when the turn is
        busy. Raises ``TurnTimeout`` after ``lock_wait`` seconds of waiting."""
        return self._turns.turn(conversation_key, on_wait=on_wait)

    async def get_conversation(self, key: str) -> ConversationState | None:
        return await self._records.get_conversation(key)

    async def has_conversation(self, key: str) -> bool:
        return await self._records.has_conversation(key)

    async def forget_conversation(self, key: str) -> bool:
        return await self._records.forget_conversation(key)

    # ---------------------------------------------------------------- replies

    async def find_reply(
        self, platform: Platform, channel: str, message_id: str
    ) -> ReplyRecord | None:
        return await self._records.find_reply(platform, channel, message_id)

    async def update_reply(
        self, record: ReplyRecord, *, stale_part_ids: Iterable[str] = ()
    ) -> None:
        """Point every part of ``record`` at it (after a regenerate), and unmap parts the
        reply no longer has."""
        await self._records.update_reply(record, stale_part_ids=stale_part_ids)

    async def feedback_reactions(
        self, *, assistant_message_id: str, user: str, add: str | None, remove: str | None
    ) -> frozenset[str]:
        """Track which feedback values ``user`` has on an answer; returns them after the
        change."""
        return await self._records.feedback_reactions(
            assistant_message_id=assistant_message_id, user=user, add=add, remove=remove
        )

    # ---------------------------------------------------------------- pacing

    async def reserve(self, key: str, interval: float, now: float) -> float:
        """The time (in the caller's clock) at which this call may go out on bucket ``key``;
        the bucket's next free time moves ``interval`` past it."""
        return await self._slots.reserve(key, interval, now)

    async def push_back(self, key: str, until: float, *, now: float | None = None) -> None:
        """Move bucket ``key``'s next free time to at least ``until`` (after a 429)."""
        await self._slots.push_back(key, until, now=now)

    def limiter(self, name: str, *, limit: int, window: float) -> RedisLimiter:
        """A sliding-window limiter named ``name`` shared by every replica."""
        return RedisLimiter(
            redis=self.link.client, key=self.keys.limit(name), limit=limit, window=window,
            clock=self.clock, link=self.link,
        )
