"""Connecting to Redis (or the embedded one), counted round trips and translated Redis errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.core.errors import StoreError
from bridge.store.embedded import EmbeddedRedis

__all__ = ["Link", "connect", "fmt", "redis_address", "text", "translate"]

# Connections one process may open to Redis (its default maxclients is 10,000), and how long
# a command waits for a free one before it fails as "Redis unreachable".
_MAX_CONNECTIONS = 1000
_POOL_WAIT = 20.0


def fmt(value: float) -> str:
    """A float as text that Lua's tonumber reads back exactly."""
    return repr(float(value))


def text(value: Any) -> str:
    """A Redis reply (bytes or not) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_address(client: aioredis.Redis) -> str:
    """Where ``client`` connects, without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _scrub(message: str, client: aioredis.Redis) -> str:
    password = client.connection_pool.connection_kwargs.get("password")
    if password:
        message = message.replace(str(password), "***")
    return message


def translate(exc: BaseException, client: aioredis.Redis) -> StoreError:
    """A plain StoreError naming REDIS_URL and the address, never the password."""
    address = redis_address(client)
    reason = _scrub(str(exc) or type(exc).__name__, client)
    if isinstance(exc, AuthenticationError):
        return StoreError(f"Redis at {address} (REDIS_URL) refused the credentials: {reason}")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return StoreError(f"Cannot reach Redis at {address} (REDIS_URL): {reason}")
    return StoreError(f"Redis at {address} (REDIS_URL) answered with an error: {reason}")


class Link:
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

    def script(self, source: str) -> AsyncScript:
        """Register a Lua script; this computes its SHA only, the server sees it on first
        use."""
        return self.client.register_script(source)

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


class RedisSettings(Protocol):
    """Where Redis is (``bridge.app.settings.Settings`` has these)."""

    @property
    def redis_url(self) -> str | None: ...
    @property
    def data_dir(self) -> Path: ...


@contextlib.asynccontextmanager
async def connect(settings: RedisSettings) -> AsyncIterator[aioredis.Redis]:
    """A Redis client for REDIS_URL, or for an embedded server in BRIDGE_DATA_DIR when it is
    unset; both are closed on exit. Unreachable Redis: a plain StoreError."""
    embedded: EmbeddedRedis | None = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        embedded = EmbeddedRedis(settings.data_dir)
        url = await embedded.start()
    try:
        client = _client(url)
        try:
            with Link(client).trip():
                await client.ping()
            yield client
        finally:
            await client.aclose()
    finally:
        if embedded is not None:
            await embedded.stop()


def _client(url: str) -> aioredis.Redis:
    try:
        # redis-py's default pool refuses a 101st concurrent command ("Too many
        # connections") instead of waiting; answers in flight and queued turns (each
        # waiter holds a connection in BLPOP) pass 100 on a busy replica.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=_MAX_CONNECTIONS, timeout=_POOL_WAIT,
            socket_connect_timeout=5.0, socket_timeout=30.0, health_check_interval=30,
        )
        return aioredis.Redis.from_pool(pool)
    except ValueError as exc:
        # Not quoting the URL: it may carry the password.
        raise StoreError(f"REDIS_URL is not a valid Redis URL: {exc}") from exc
