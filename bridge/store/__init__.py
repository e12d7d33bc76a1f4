"""Redis store: exactly-once claims, per-conversation turns, reply records, shared pacing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.app.settings import Settings
from bridge.chatbase.limiter import LocalLimiter
from bridge.core.clock import SystemClock
from bridge.core.errors import StoreError, TurnTimeout
from bridge.core.keys import Keys
from bridge.core.models import Platform, ReplyRecord
from bridge.core.ports import Clock
from bridge.store.embedded import EmbeddedRedis

log = logging.getLogger(__name__)

# How often a waiter looks at the queue when nobody wakes it: the longest a dead head (its
# lease lapsed) can hold up the waiters behind it beyond its lease.
_POLL = 1.0
# Lease given to a waiter at the moment it is handed the turn; it takes the full lease as
# soon as it wakes, so a waiter that died while queued costs the others only this long.
_HANDOFF = 5.0
# Extra life of keys that must outlive what they describe by a little (seconds).
_MARGIN = 60.0
# Connections one process may open to Redis (its default maxclients is 10,000), and how long
# a command waits for a free one before it fails as "Redis unreachable".
_MAX_CONNECTIONS = 1000
_POOL_WAIT = 20.0
# Pauses between attempts to release a turn while Redis does not answer (3.4 s in all).
_RELEASE_RETRIES = (0.1, 0.3, 1.0, 2.0)


def _fmt(value: float) -> str:
    """A float as text that Lua's tonumber reads back exactly."""
    return repr(float(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- Lua

# Numbers cross the Lua boundary as strings formatted with %.17g: a Lua number returned as
# such is truncated to an integer reply, and shorter formats lose the sub-millisecond part
# of a wall-clock time.

_CLAIM = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {0, 0, 0} end
if #KEYS < 2 then return {1, 0, 0} end
local n = redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {1, n, ttl}
"""

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
local action = ARGV[6]
if action == 'set' then
  redis.call('SET', KEYS[3], ARGV[7], 'EX', ARGV[8])
elseif action == 'del' then
  redis.call('DEL', KEYS[3])
end
for i = 4, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 6], 'EX', ARGV[9])
end
local owned = redis.call('GET', l) == token
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

_RESERVE = """
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local slot = math.max(now, nxt)
local free = slot + interval
local ttl = math.ceil((free - now + interval) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.17g', free), 'PX', ttl)
return string.format('%.17g', slot)
"""

_PUSH_BACK = """
local untl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if untl <= nxt then return 0 end
local ttl = math.ceil(math.max(untl - now, 0) * 1000) + 1000
local current = redis.call('PTTL', KEYS[1])
if current > ttl then ttl = current end
redis.call('SET', KEYS[1], string.format('%.17g', untl), 'PX', ttl)
return 1
"""

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


# --------------------------------------------------------------------------- edge


def redis_address(client: aioredis.Redis) -> str:
    """Where ``client`` connects, without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _scrub(text: str, client: aioredis.Redis) -> str:
    password = client.connection_pool.connection_kwargs.get("password")
    if password:
        text = text.replace(str(password), "***")
    return text


def translate(exc: BaseException, client: aioredis.Redis) -> StoreError:
    """A plain StoreError naming REDIS_URL and the address, never the password."""
    address = redis_address(client)
    reason = _scrub(str(exc) or type(exc).__name__, client)
    if isinstance(exc, AuthenticationError):
        return StoreError(f"Redis at {address} (REDIS_URL) refused the credentials: {reason}")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return StoreError(f"Cannot reach Redis at {address} (REDIS_URL): {reason}")
    return StoreError(f"Redis at {address} (REDIS_URL) answered with an error: {reason}")


class _Link:
    """One Redis client as the store uses it: counted round trips, translated errors."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.round_trips = 0

    @contextlib.contextmanager
    def trip(self) -> Iterator[None]:
        self.round_trips += 1
        try:
            yield
        except (RedisError, OSError) as exc:
            raise translate(exc, self.client) from exc

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, loading the script first when the server does not know it (a fresh or
        restarted Redis). Scripts are never queued in a pipeline: redis-py would then ask
        SCRIPT EXISTS before every pipeline, one more round trip each time."""
        with self.trip():
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                pass
        with self.trip():
            script.sha = await self.client.script_load(script.script)
        with self.trip():
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming an event: ``first`` is False for a redelivery. The quota
    fields count this user's claimed messages in the current window (0 when not asked)."""

    first: bool
    quota_count: int = 0
    quota_reset_in: float = 0.0


@dataclass(frozen=True, slots=True)
class ConversationState:
    """What the store keeps per conversation key. ``last_turn_at`` is wall-clock seconds."""

    conversation_id: str
    latest_message_id: str | None
    last_turn_at: float


def _dump_state(state: ConversationState) -> str:
    return json.dumps(
        {"c": state.conversation_id, "m": state.latest_message_id, "t": state.last_turn_at}
    )


def _load_state(raw: Any) -> ConversationState | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return ConversationState(
            conversation_id=str(data["c"]),
            latest_message_id=None if data.get("m") is None else str(data["m"]),
            last_turn_at=float(data.get("t", 0.0)),
        )
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring an unreadable conversation record")
        return None


def _dump_reply(record: ReplyRecord) -> str:
    data = asdict(record)
    data["platform"] = record.platform.value
    data["part_ids"] = list(record.part_ids)
    return json.dumps(data)


def _load_reply(raw: Any) -> ReplyRecord | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        data["platform"] = Platform(data["platform"])
        data["part_ids"] = tuple(data.get("part_ids", ()))
        return ReplyRecord(**data)
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring an unreadable reply record")
        return None


# --------------------------------------------------------------------------- turns


class Turn:
    """The held turn of one conversation. Writes are buffered and go out with the release,
    in the same round trip."""

    def __init__(self, *, state: ConversationState | None, clock: Clock) -> None:
        self.state = state
        self.lost = False  # set when the lease lapsed while held (another turn may have begun)
        self._clock = clock
        self._action: Literal["", "set", "del"] = ""
        self._value = ""
        self._replies: list[ReplyRecord] = []

    def remember(
        self, conversation_id: str, latest_message_id: str | None, reply: ReplyRecord | None
    ) -> None:
        """Keep ``conversation_id`` for this key (sliding TTL) and map every part of
        ``reply`` to it."""
        state = ConversationState(conversation_id, latest_message_id, self._clock.now())
        self._action, self._value = "set", _dump_state(state)
        if reply is not None:
            self._replies.append(reply)

    def forget(self) -> None:
        """Drop the conversation mapping; the next turn starts a new conversation."""
        self._action, self._value = "del", ""

    def _pending(self) -> tuple[Literal["", "set", "del"], str, tuple[ReplyRecord, ...]]:
        return self._action, self._value, tuple(self._replies)


class _TurnLock(AbstractAsyncContextManager[Turn]):
    """A FIFO lock per conversation shared by every replica (see ``_TURN_COMMON``)."""

    def __init__(
        self, store: Store, key: str, on_wait: Callable[[int], None] | None
    ) -> None:
        self._store = store
        self._key = key
        self._on_wait = on_wait
        self._token = uuid.uuid4().hex
        self._turn: Turn | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    def _keys(self) -> list[str]:
        keys = self._store.keys
        return [keys.turn_queue(self._key), keys.turn_lease(self._key),
                keys.conversation(self._key)]

    def _common_args(self) -> list[Any]:
        s = self._store
        return [self._token, s.keys.turn_notify_prefix(self._key), s.handoff_ms,
                s.notify_ttl_ms, s.queue_ttl_ms]

    async def _enter_once(self) -> tuple[bool, Any]:
        reply = await self._store.link.run(
            self._store.scripts["enter"], self._keys(),
            [*self._common_args(), self._store.lease_ms],
        )
        return bool(int(reply[0])), reply[1]

    async def __aenter__(self) -> Turn:
        store = self._store
        clock = store.clock
        deadline = clock.now() + store.lock_wait
        notify = store.keys.turn_notify(self._key, self._token)
        try:
            acquired, value = await self._enter_once()
            if not acquired and self._on_wait is not None:
                self._on_wait(int(value))
            while not acquired:
                remaining = deadline - clock.now()
                if remaining <= 0:
                    raise TurnTimeout(
                        f"Waited {store.lock_wait:g}s for the previous turn of this "
                        "conversation to finish."
                    )
                # Woken by the releaser; the timeout bounds how late a dead head is seen. Redis
                # reads a timeout under 1 ms as 0, which means "block forever".
                timeout = max(0.01, min(_POLL, remaining))
                with store.link.trip():
                    await store.link.client.blpop([notify], timeout=timeout)
                acquired, value = await self._enter_once()
        except BaseException:
            with contextlib.suppress(StoreError):
                await self._release(("", "", ()))
            raise
        self._turn = Turn(state=_load_state(value), clock=clock)
        self._heartbeat = asyncio.create_task(self._beat(self._turn), name="turn-heartbeat")
        return self._turn

    async def _beat(self, turn: Turn) -> None:
        store = self._store
        interval = store.lock_ttl / 3
        keys = self._keys()[:2]
        while True:
            await store.clock.sleep(interval)
            try:
                alive = await store.link.run(
                    store.scripts["heartbeat"], keys,
                    [self._token, store.lease_ms, store.queue_ttl_ms],
                )
            except StoreError as exc:
                log.warning("could not renew a conversation turn lock: %s", exc)
                continue
            if not int(alive):
                turn.lost = True
                log.warning("a conversation turn outlived its lock (BRIDGE_LOCK_TTL)")
                return

    async def _release(
        self, pending: tuple[str, str, tuple[ReplyRecord, ...]]
    ) -> None:
        store = self._store
        action, value, replies = pending
        keys = self._keys()
        values: list[str] = []
        for record in replies:
            body = _dump_reply(record)
            for part in record.part_ids:
                keys.append(store.keys.reply(record.platform.value, record.channel, part))
                values.append(body)
        await store.link.run(
            store.scripts["release"], keys,
            [*self._common_args(), action, value, store.conversation_ttl, store.reply_ttl,
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
            await self._store.clock.sleep(delay)
        await self._release(pending)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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


# --------------------------------------------------------------------------- store


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
        clock: Clock | None = None,
    ) -> None:
        self.link = _Link(redis)
        self.keys = Keys(prefix)
        self.conversation_ttl = conversation_ttl
        self.reply_ttl = reply_ttl
        self.dedup_ttl = dedup_ttl
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.lease_ms = max(1, math.ceil(lock_ttl * 1000))
        self.handoff_ms = max(1, math.ceil(min(lock_ttl, _HANDOFF) * 1000))
        self.notify_ttl_ms = math.ceil((_HANDOFF + _POLL + _MARGIN) * 1000)
        self.queue_ttl_ms = math.ceil((max(lock_ttl, lock_wait) + _MARGIN) * 1000)
        # register_script computes the SHA only; scripts reach the server on first use.
        self.scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source)
            for name, source in {
                "claim": _CLAIM,
                "enter": _TURN_ENTER,
                "release": _TURN_RELEASE,
                "heartbeat": _TURN_HEARTBEAT,
                "reserve": _RESERVE,
                "push_back": _PUSH_BACK,
            }.items()
        }

    @classmethod
    def from_settings(
        cls, redis: aioredis.Redis, settings: Settings, *, clock: Clock | None = None
    ) -> Store:
        return cls(
            redis=redis,
            prefix=settings.redis_prefix,
            conversation_ttl=settings.conversation_ttl,
            reply_ttl=settings.reply_ttl,
            dedup_ttl=settings.dedup_ttl,
            lock_ttl=settings.lock_ttl,
            lock_wait=settings.lock_wait,
            clock=clock,
        )

    @property
    def round_trips(self) -> int:
        """Network round trips made so far (a pipeline or a script call counts once)."""
        return self.link.round_trips

    @property
    def redis(self) -> aioredis.Redis:
        return self.link.client

    async def ping(self) -> None:
        with self.link.trip():
            await self.link.client.ping()

    # ---------------------------------------------------------------- events

    async def claim(
        self, event_id: str, *, quota_subject: str | None = None, quota_window: int = 3600
    ) -> Claim:
        """Claim a platform event once across replicas and redeliveries; when it is new and
        ``quota_subject`` is given, count it against that subject's window."""
        keys = [self.keys.event(event_id)]
        if quota_subject is not None:
            keys.append(self.keys.quota(quota_subject))
        first, count, ttl_ms = await self.link.run(
            self.scripts["claim"], keys, [self.dedup_ttl, max(1, quota_window) * 1000]
        )
        return Claim(bool(int(first)), int(count), int(ttl_ms) / 1000)

    # ---------------------------------------------------------------- conversations

    def turn(
        self, conversation_key: str, *, on_wait: Callable[[int], None] | None = None
    ) -> AbstractAsyncContextManager[Turn]:
        """Hold the turn of ``conversation_key``: one at a time across replicas, served in
        arrival order. ``on_wait`` is called with the queue position when the turn is
        busy. Raises ``TurnTimeout`` after ``lock_wait`` seconds of waiting."""
        return _TurnLock(self, conversation_key, on_wait)

    async def get_conversation(self, key: str) -> ConversationState | None:
        with self.link.trip():
            raw = await self.link.client.get(self.keys.conversation(key))
        return _load_state(raw)

    async def has_conversation(self, key: str) -> bool:
        with self.link.trip():
            return bool(await self.link.client.exists(self.keys.conversation(key)))

    async def forget_conversation(self, key: str) -> bool:
        with self.link.trip():
            return bool(await self.link.client.delete(self.keys.conversation(key)))

    # ---------------------------------------------------------------- replies

    async def find_reply(
        self, platform: Platform, channel: str, message_id: str
    ) -> ReplyRecord | None:
        with self.link.trip():
            raw = await self.link.client.get(self.keys.reply(platform.value, channel, message_id))
        return _load_reply(raw)

    async def update_reply(
        self, record: ReplyRecord, *, stale_part_ids: Iterable[str] = ()
    ) -> None:
        """Point every part of ``record`` at it (after a regenerate), and unmap parts the
        reply no longer has."""
        body = _dump_reply(record)
        stale = [p for p in stale_part_ids if p not in record.part_ids]
        if not record.part_ids and not stale:
            return
        pipe = self.link.client.pipeline(transaction=True)
        for part in record.part_ids:
            pipe.set(self.keys.reply(record.platform.value, record.channel, part), body,
                     ex=self.reply_ttl)
        for part in stale:
            pipe.delete(self.keys.reply(record.platform.value, record.channel, part))
        with self.link.trip():
            await pipe.execute()

    async def feedback_reactions(
        self, *, assistant_message_id: str, user: str, add: str | None, remove: str | None
    ) -> frozenset[str]:
        """Track which feedback values ``user`` has on an answer; returns them after the
        change."""
        key = self.keys.feedback(assistant_message_id, user)
        pipe = self.link.client.pipeline(transaction=True)
        if remove is not None:
            pipe.srem(key, remove)
        if add is not None:
            pipe.sadd(key, add)
        pipe.expire(key, self.reply_ttl)
        pipe.smembers(key)
        with self.link.trip():
            results = await pipe.execute()
        return frozenset(_text(member) for member in results[-1])

    # ---------------------------------------------------------------- pacing

    async def reserve(self, key: str, interval: float, now: float) -> float:
        """The time (in the caller's clock) at which this call may go out on bucket ``key``;
        the bucket's next free time moves ``interval`` past it."""
        slot = await self.link.run(
            self.scripts["reserve"], [self.keys.pace(key)], [_fmt(now), _fmt(interval)]
        )
        return float(_text(slot))

    async def push_back(self, key: str, until: float, *, now: float | None = None) -> None:
        """Move bucket ``key``'s next free time to at least ``until`` (after a 429)."""
        current = self.clock.now() if now is None else now
        await self.link.run(
            self.scripts["push_back"], [self.keys.pace(key)], [_fmt(until), _fmt(current)]
        )

    def limiter(self, name: str, *, limit: int, window: float) -> RedisLimiter:
        """A sliding-window limiter named ``name`` shared by every replica."""
        return RedisLimiter(
            redis=self.link.client, key=self.keys.limit(name), limit=limit, window=window,
            clock=self.clock, link=self.link,
        )


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
        link: _Link | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self._link = link if link is not None else _Link(redis)
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
            [_fmt(now), _fmt(self._window), self._limit, uuid.uuid4().hex],
        )
        return float(_text(wait))

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


# --------------------------------------------------------------------------- connecting


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A Redis client for REDIS_URL, or for an embedded server in BRIDGE_DATA_DIR when it is
    unset; both are closed on exit. Unreachable Redis: a plain StoreError."""
    embedded: EmbeddedRedis | None = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        embedded = EmbeddedRedis(settings.data_dir)
        url = await embedded.start()
    try:
        try:
            # redis-py's default pool refuses a 101st concurrent command ("Too many
            # connections") instead of waiting; answers in flight and queued turns (each
            # waiter holds a connection in BLPOP) pass 100 on a busy replica.
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=_MAX_CONNECTIONS, timeout=_POOL_WAIT,
                socket_connect_timeout=5.0, socket_timeout=30.0, health_check_interval=30,
            )
            client = aioredis.Redis.from_pool(pool)
        except ValueError as exc:
            # Not quoting the URL: it may carry the password.
            raise StoreError(f"REDIS_URL is not a valid Redis URL: {exc}") from exc
        try:
            with _Link(client).trip():
                await client.ping()
            yield client
        finally:
            await client.aclose()
    finally:
        if embedded is not None:
            await embedded.stop()
