"""Turns: a FIFO lock per conversation across replicas (Lua, with lease and heartbeat)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Literal

from bridge.core.errors import StoreError, TurnTimeout
from bridge.core.keys import Keys
from bridge.core.models import ReplyRecord
from bridge.core.ports import Clock
from bridge.store.connection import Link
from bridge.store.records import ConversationState, dump_reply, dump_state, load_state

__all__ = ["Turn", "TurnLocks"]

log = logging.getLogger(__name__)

# How often a waiter looks at the queue when nobody wakes it: the longest a dead head (its
# lease lapsed) can hold up the waiters behind it beyond its lease.
_POLL = 1.0
# Lease given to a waiter at the moment it is handed the turn; it takes the full lease as
# soon as it wakes, so a waiter that died while queued costs the others only this long.
_HANDOFF = 5.0
# Extra life of keys that must outlive what they describe by a little (seconds).
_MARGIN = 60.0
# Pauses between attempts to release a turn while Redis does not answer (3.4 s in all).
_RELEASE_RETRIES = (0.1, 0.3, 1.0, 2.0)

# Shared by the turn scripts. Invariant: whenever the queue has a head, a lease was set for
# it when it became head. So a head without a lease is one whose lease lapsed: its process
# is gone, and it is dropped. Whoever makes a waiter the head hands it a short lease and
# wakes it through its notify list.
_TURN_COMMON = """
local q, l = KEYS[1], KEYS[2]
local token, wprefix = ARGV[1], ARGV[2]
local handoff, notify_ttl, queue_ttl = ARGV[3], ARGV[4], ARGV[5]
local function hand_to_head()
  local nxt = redis.call('LINDEX', q, 0)
  if nxt then
    redis.call('SET', l, nxt, 'PX', handoff)
    redis.call('RPUSH', wprefix .. nxt, '1')
    redis.call('PEXPIRE', wprefix .. nxt, notify_ttl)
  end
end
"""

_TURN_ENTER = _TURN_COMMON + """
local lease = ARGV[6]
if not redis.call('LPOS', q, token) then redis.call('RPUSH', q, token) end
while true do
  local head = redis.call('LINDEX', q, 0)
  if not head or redis.call('EXISTS', l) == 1 then break end
  if head == token then
    redis.call('SET', l, token, 'PX', lease)
    break
  end
  redis.call('LPOP', q)
  redis.call('DEL', wprefix .. head)
  hand_to_head()
end
redis.call('PEXPIRE', q, queue_ttl)
if redis.call('GET', l) == token then
  redis.call('PEXPIRE', l, lease)
  redis.call('DEL', wprefix .. token)
  return {1, redis.call('GET', KEYS[3])}
end
return {0, redis.call('LPOS', q, token)}
"""

_TURN_RELEASE = _TURN_COMMON + """
local holder = redis.call('GET', l)
local owned = holder == token
-- A turn whose lease lapsed while another turn began must not overwrite what that turn
-- remembers; its reply records map only its own messages and are always kept.
local action = ARGV[6]
if owned or not holder then
  if action == 'set' then
    redis.call('SET', KEYS[3], ARGV[7], 'EX', ARGV[8])
  elseif action == 'del' then
    redis.call('DEL', KEYS[3])
  end
end
for i = 4, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 6], 'EX', ARGV[9])
end
local was_head = redis.call('LINDEX', q, 0) == token
redis.call('LREM', q, 0, token)
redis.call('DEL', wprefix .. token)
if owned then redis.call('DEL', l) end
if (owned or was_head) and redis.call('EXISTS', l) == 0 then hand_to_head() end
if redis.call('EXISTS', q) == 1 then redis.call('PEXPIRE', q, queue_ttl) end
if owned then return 1 end
return 0
"""

_TURN_HEARTBEAT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class Turn:
    """The held turn of one conversation. Writes are buffered and go out with the release,
    in the same round trip."""

    def __init__(self, *, state: ConversationState | None, clock: Clock) -> None:
        self.state = state
        self.lost = False  # set when the lease lapsed while held (another turn may have begun)
        self._clock = clock
        self._action: Literal["", "set", "del"] = ""
        self._state_text = ""
        self._replies: list[ReplyRecord] = []

    def remember(
        self, conversation_id: str, latest_message_id: str | None, reply: ReplyRecord | None,
        *, agent: str | None = None,
    ) -> None:
        """Keep ``conversation_id`` (of ``agent``) for this key (sliding TTL) and map every
        part of ``reply`` to it."""
        state = ConversationState(conversation_id, latest_message_id, self._clock.now(), agent)
        self._action, self._state_text = "set", dump_state(state)
        if reply is not None:
            self._replies.append(reply)

    def forget(self) -> None:
        """Drop the conversation mapping; the next turn starts a new conversation."""
        self._action, self._state_text = "del", ""

    def _pending(self) -> tuple[Literal["", "set", "del"], str, tuple[ReplyRecord, ...]]:
        return self._action, self._state_text, tuple(self._replies)


class _TurnLock(AbstractAsyncContextManager[Turn]):
    """A FIFO lock per conversation shared by every replica (see ``_TURN_COMMON``)."""

    def __init__(
        self, locks: TurnLocks, key: str, on_wait: Callable[[int], None] | None
    ) -> None:
        self._locks = locks
        self._key = key
        self._on_wait = on_wait
        self._token = uuid.uuid4().hex
        self._turn: Turn | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # Set when the turn ends. The heartbeat checks it too, because a cancel that lands
        # inside a Redis call can be lost there (a timeout racing the cancel in redis-py on
        # Python 3.11), and the turn's exit would then wait for the heartbeat forever.
        self._ending = False

    def _keys(self) -> list[str]:
        keys = self._locks.keys
        return [keys.turn_queue(self._key), keys.turn_lease(self._key),
                keys.conversation(self._key)]

    def _common_args(self) -> list[Any]:
        locks = self._locks
        return [self._token, locks.keys.turn_notify_prefix(self._key), locks.handoff_ms,
                locks.notify_ttl_ms, locks.queue_ttl_ms]

    async def _enter_once(self) -> tuple[bool, Any]:
        reply = await self._locks.link.run(
            self._locks.scripts["enter"], self._keys(),
            [*self._common_args(), self._locks.lease_ms],
        )
        return bool(int(reply[0])), reply[1]

    async def __aenter__(self) -> Turn:
        locks = self._locks
        clock = locks.clock
        deadline = clock.now() + locks.lock_wait
        notify = locks.keys.turn_notify(self._key, self._token)
        try:
            acquired, value = await self._enter_once()
            if not acquired and self._on_wait is not None:
                self._on_wait(int(value))
            while not acquired:
                remaining = deadline - clock.now()
                if remaining <= 0:
                    raise TurnTimeout(
                        f"Waited {locks.lock_wait:g}s for the previous turn of this "
                        "conversation to finish."
                    )
                # Woken by the releaser; the timeout bounds how late a dead head is seen. Redis
                # reads a timeout under 1 ms as 0, which means "block forever". The wait
                # stays well within the round trip's own deadline (REDIS_TIMEOUT).
                timeout = max(0.01, min(_POLL, remaining, locks.link.timeout / 2))
                async with locks.link.trip():
                    await locks.link.client.blpop([notify], timeout=timeout)
                acquired, value = await self._enter_once()
        except BaseException:
            with contextlib.suppress(StoreError):
                await self._release(("", "", ()))
            raise
        self._turn = Turn(state=load_state(value), clock=clock)
        self._heartbeat = asyncio.create_task(self._beat(self._turn), name="turn-heartbeat")
        return self._turn

    async def _beat(self, turn: Turn) -> None:
        locks = self._locks
        interval = locks.lock_ttl / 3
        keys = self._keys()[:2]
        pause = interval
        while not self._ending:
            await locks.clock.sleep(pause)
            try:
                alive = await locks.link.run(
                    locks.scripts["heartbeat"], keys,
                    [self._token, locks.lease_ms, locks.queue_ttl_ms],
                )
            except StoreError as exc:
                if self._ending:
                    return
                # The lease is short: try again soon rather than a whole interval later.
                log.warning("could not renew a conversation turn lock: %s", exc)
                pause = min(1.0, interval)
                continue
            pause = interval
            if not int(alive):
                turn.lost = True
                log.warning("a conversation turn outlived its lock (BRIDGE_LOCK_TTL)")
                return

    async def _release(
        self, pending: tuple[str, str, tuple[ReplyRecord, ...]]
    ) -> None:
        locks = self._locks
        action, value, replies = pending
        keys = self._keys()
        values: list[str] = []
        for record in replies:
            body = dump_reply(record)
            for part in record.part_ids:
                keys.append(locks.keys.reply(record.platform.value, record.channel, part))
                values.append(body)
        await locks.link.run(
            locks.scripts["release"], keys,
            [*self._common_args(), action, value, locks.conversation_ttl, locks.reply_ttl,
             *values],
        )

    async def _release_retrying(
        self, pending: tuple[str, str, tuple[ReplyRecord, ...]]
    ) -> None:
        """A release lost to a Redis blip would leave the lease in place and hold the
        conversation's next turn for up to BRIDGE_LOCK_TTL; the release is idempotent, so
        it is tried again for a few seconds first."""
        for delay in _RELEASE_RETRIES:
            try:
                await self._release(pending)
                return
            except StoreError as exc:
                log.info("could not release a conversation turn (retrying in %gs): %s",
                         delay, exc)
            await self._locks.clock.sleep(delay)
        await self._release(pending)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ending = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        turn, self._turn = self._turn, None
        if turn is None:
            return
        # Buffered writes go out even when the body failed: what was remembered happened.
        try:
            await self._release_retrying(turn._pending())
        except StoreError as store_exc:
            if exc is None:
                raise
            # The body's own failure is the one to report.
            log.warning("could not release a conversation turn: %s", store_exc)


class TurnLocks:
    """Hands out the turn of a conversation; holds the lock's timings and scripts."""

    def __init__(
        self,
        *,
        link: Link,
        keys: Keys,
        clock: Clock,
        lock_ttl: float,
        lock_wait: float,
        conversation_ttl: int,
        reply_ttl: int,
    ) -> None:
        self.link = link
        self.keys = keys
        self.clock = clock
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self.conversation_ttl = conversation_ttl
        self.reply_ttl = reply_ttl
        self.lease_ms = max(1, math.ceil(lock_ttl * 1000))
        self.handoff_ms = max(1, math.ceil(min(lock_ttl, _HANDOFF) * 1000))
        self.notify_ttl_ms = math.ceil((_HANDOFF + _POLL + _MARGIN) * 1000)
        self.queue_ttl_ms = math.ceil((max(lock_ttl, lock_wait) + _MARGIN) * 1000)
        self.scripts = {
            "enter": link.script(_TURN_ENTER),
            "release": link.script(_TURN_RELEASE),
            "heartbeat": link.script(_TURN_HEARTBEAT),
        }

    def turn(
        self, conversation_key: str, *, on_wait: Callable[[int], None] | None = None
    ) -> AbstractAsyncContextManager[Turn]:
        """Hold the turn of ``conversation_key``: one at a time across replicas, served in
        arrival order. ``on_wait`` is called with the queue position when the turn is
        busy. Raises ``TurnTimeout`` after ``lock_wait`` seconds of waiting."""
        return _TurnLock(self, conversation_key, on_wait)
