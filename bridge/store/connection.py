"""Connecting to Redis: the one factory of every Redis client the bridge opens (a URL, or
Sentinel; TLS; ACL users), counted round trips and translated Redis errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
)
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.core.errors import ConfigError, StoreError
from bridge.store.shared import SharedConnection

__all__ = [
    "Connector",
    "Link",
    "Target",
    "connect",
    "fmt",
    "opened",
    "redis_address",
    "sibling",
    "text",
    "translate",
]

log = logging.getLogger(__name__)

# Connections one process may open to Redis (its default maxclients is 10,000), and how long
# a command waits for a free one before it fails as "Redis unreachable".
_MAX_CONNECTIONS = 1000
_POOL_WAIT = 20.0
# REDIS_TIMEOUT's default: the longest a round trip to Redis may take.
DEFAULT_TIMEOUT: Final = 30.0


def fmt(value: float) -> str:
    """A float as text that Lua's tonumber reads back exactly."""
    return repr(float(value))


def text(value: Any) -> str:
    """A Redis reply (bytes or not) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------- the target


class Secret(Protocol):
    def get_secret_value(self) -> str: ...


class RedisSettings(Protocol):
    """Where Redis is and how to reach it (``bridge.app.settings.Settings`` has these)."""

    @property
    def redis_url(self) -> str | None: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def redis_sentinels(self) -> Sequence[str]: ...
    @property
    def redis_sentinel_master(self) -> str | None: ...
    @property
    def redis_username(self) -> str | None: ...
    @property
    def redis_password(self) -> Secret | None: ...
    @property
    def redis_sentinel_username(self) -> str | None: ...
    @property
    def redis_sentinel_password(self) -> Secret | None: ...
    @property
    def redis_tls(self) -> bool: ...
    @property
    def redis_tls_ca_file(self) -> Path | None: ...
    @property
    def redis_tls_cert_file(self) -> Path | None: ...
    @property
    def redis_tls_key_file(self) -> Path | None: ...
    @property
    def redis_timeout(self) -> float: ...
    @property
    def redis_tls_check_hostname(self) -> bool: ...


def _secret(value: Secret | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _sentinel_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass(frozen=True)
class Target:
    """One Redis as the settings describe it: a URL, or sentinels and the name of the master
    they watch; the credentials and TLS to reach it with. Passwords stay out of ``repr``."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True
    timeout: float = DEFAULT_TIMEOUT  # the longest round trip (REDIS_TIMEOUT)

    @classmethod
    def from_settings(cls, settings: RedisSettings, *, url: str | None = None) -> Target:
        """The target of ``settings``; ``url`` stands in for REDIS_URL (the embedded
        server's socket)."""
        url = url or settings.redis_url
        sentinels = tuple(_sentinel_address(a) for a in settings.redis_sentinels)

        def path(value: Path | None) -> str | None:
            return str(value) if value is not None else None

        return cls(
            url=None if sentinels else url,
            sentinels=sentinels,
            master=settings.redis_sentinel_master or "",
            username=settings.redis_username,
            password=_secret(settings.redis_password),
            sentinel_username=settings.redis_sentinel_username,
            sentinel_password=_secret(settings.redis_sentinel_password),
            tls=settings.redis_tls or (url or "").startswith("rediss://"),
            ca_file=path(settings.redis_tls_ca_file),
            cert_file=path(settings.redis_tls_cert_file),
            key_file=path(settings.redis_tls_key_file),
            check_hostname=settings.redis_tls_check_hostname,
            timeout=settings.redis_timeout,
        )

    @property
    def setting(self) -> str:
        """The setting that says where Redis is."""
        return "REDIS_SENTINELS" if self.sentinels else "REDIS_URL"

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.sentinel_password) if s]

    def check_files(self) -> None:
        """Load the TLS files as the connections will, so that a file that is no CA bundle
        or no certificate/key pair is one plain ConfigError at start, not a handshake
        failure on every connection."""
        if not self.tls:
            return
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"REDIS_TLS_CA_FILE {self.ca_file} holds no usable CA "
                              f"certificate (PEM): {_ssl_reason(exc)}.") from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"REDIS_TLS_CERT_FILE {self.cert_file} and REDIS_TLS_KEY_FILE "
                    f"{self.key_file} are not a PEM certificate and its unencrypted private "
                    f"key: {_ssl_reason(exc)}.") from None


def _refused_credentials(exc: BaseException) -> bool:
    """Whether Redis (or a sentinel) refused the user or password."""
    return isinstance(exc, AuthenticationError) or str(exc).startswith(("WRONGPASS", "NOAUTH"))


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class _SentinelBlockingPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (it asks the sentinels for the primary on every new connection, and
    drops connections to a primary that was demoted) with the blocking pool's limit: a
    command waits for a free connection instead of failing ("Too many connections")."""


class Connector:
    """Makes every Redis client of the bridge from one ``Target``: the main pool, the stop
    listener's own connection, ``check``'s probe. Closes the sentinel clients it made."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._sentinel: Sentinel | None = None

    def _tls(self) -> dict[str, Any]:
        t = self.target
        return {"ssl_ca_certs": t.ca_file, "ssl_certfile": t.cert_file,
                "ssl_keyfile": t.key_file, "ssl_check_hostname": t.check_hostname,
                "ssl_cert_reqs": "required"}

    def _options(self, *, connect_timeout: float, socket_timeout: float | None,
                 health_check_interval: float) -> dict[str, Any]:
        t = self.target
        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": socket_timeout,
            "health_check_interval": health_check_interval,
            # READONLY means the command ran nowhere: a primary was demoted under this
            # connection (a failover behind a DNS name). Only that is retried, once, on a new
            # connection; a lost reply is never retried, since the command may have run
            # (a claim retried would read as a duplicate and drop the message).
            "retry": Retry(NoBackoff(), 1, supported_errors=(ReadOnlyError,)),
        }
        if t.username:
            options["username"] = t.username
        if t.password:
            options["password"] = t.password
        if t.tls:
            options.update(self._tls())
        return options

    def sentinel(self) -> Sentinel:
        """The sentinels of the target (made once; no I/O until used)."""
        if self._sentinel is None:
            t = self.target
            kwargs: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 5.0}
            if t.sentinel_username:
                kwargs["username"] = t.sentinel_username
            if t.sentinel_password:
                kwargs["password"] = t.sentinel_password
            if t.tls:
                kwargs.update(ssl=True, **self._tls())
            # The primary's connection options live in the Sentinel too, so every client
            # made from it (``sibling``) has the same credentials and TLS.
            self._sentinel = Sentinel(
                list(t.sentinels), sentinel_kwargs=kwargs, ssl=t.tls,
                **self._options(connect_timeout=5.0, socket_timeout=30.0,
                                health_check_interval=30),
            )
        return self._sentinel

    def client(
        self,
        *,
        max_connections: int = _MAX_CONNECTIONS,
        pool_wait: float | None = _POOL_WAIT,
        connect_timeout: float = 5.0,
        socket_timeout: float | None = None,
        health_check_interval: float = 30,
    ) -> aioredis.Redis:
        """A client with a pool of its own: at most ``max_connections`` connections, a
        command waiting up to ``pool_wait`` seconds for a free one. Without
        ``socket_timeout`` a reply is awaited as long as the caller allows: the store bounds
        every round trip itself (``Link``, REDIS_TIMEOUT)."""
        options = self._options(connect_timeout=connect_timeout, socket_timeout=socket_timeout,
                                health_check_interval=health_check_interval)
        t = self.target
        if t.sentinels:
            primary: aioredis.Redis = self.sentinel().master_for(
                t.master, connection_pool_class=_SentinelBlockingPool,
                max_connections=max_connections, timeout=pool_wait, **options,
            )
            return primary
        assert t.url is not None
        try:
            # redis-py's default pool refuses a 101st concurrent command ("Too many
            # connections") instead of waiting; answers in flight and queued turns (each
            # waiter holds a connection in BLPOP) pass 100 on a busy replica.
            pool = aioredis.BlockingConnectionPool.from_url(
                t.url, max_connections=max_connections, timeout=pool_wait,
                **(options if t.url.startswith("rediss://")
                   else {k: v for k, v in options.items() if not k.startswith("ssl_")}),
            )
        except ValueError as exc:
            # Not quoting the URL: it may carry the password.
            raise StoreError(f"REDIS_URL is not a valid Redis URL: {exc}") from exc
        return aioredis.Redis.from_pool(pool)

    async def aclose(self) -> None:
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            await sentinel.aclose()


def sibling(client: aioredis.Redis, **overrides: Any) -> aioredis.Redis:
    """A client of its own (a new pool, ``overrides`` applied) to the Redis ``client``
    reaches, the same way: through the same sentinels, with the same credentials and TLS.
    The caller closes it."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        own: aioredis.Redis = pool.sentinel_manager.master_for(pool.service_name, **overrides)
        return own
    kwargs = {**pool.connection_kwargs, **overrides}
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


# ---------------------------------------------------------------------------- errors


def redis_address(client: aioredis.Redis) -> str:
    """Where ``client`` connects, without credentials."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        found = pool.master_address
        where = f"{found[0]}:{found[1]}" if found else "unknown yet"
        return f"the primary of {pool.service_name!r} ({where})"
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _client_secrets(client: aioredis.Redis) -> list[str]:
    pool = client.connection_pool
    found = [pool.connection_kwargs.get("password")]
    if isinstance(pool, SentinelConnectionPool):
        found.append(pool.sentinel_manager.sentinel_kwargs.get("password"))
    return [str(s) for s in found if s]


def _scrub(message: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def tls_problem(exc: BaseException) -> str | None:
    """What a TLS failure in ``exc``'s chain means for the operator, or None."""
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or _ssl_reason(cause)
            if "hostname" in why.lower() or "ip address mismatch" in why.lower():
                return (f"Redis's TLS certificate does not name this host ({why}): connect by "
                        "a name the certificate lists (or, knowingly, "
                        "REDIS_TLS_CHECK_HOSTNAME=false)")
            return (f"Redis's TLS certificate was not accepted (certificate verify failed: "
                    f"{why}): set REDIS_TLS_CA_FILE to the CA that signed it")
        if isinstance(cause, ssl.SSLError):
            why = _ssl_reason(cause)
            if "certificate required" in why or "unknown ca" in why or "bad certificate" in why:
                return (f"Redis refused the client certificate ({why}): check "
                        "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE")
            if "wrong version number" in why or "record layer" in why or "packet length" in why:
                return (f"the TLS handshake failed ({why}): does that port serve TLS? "
                        "(rediss:// in REDIS_URL, REDIS_TLS)")
            return f"the TLS handshake failed ({why})"
    return None


def _unreachable_reason(exc: BaseException, tls: bool) -> str:
    problem = tls_problem(exc)
    if problem:
        return problem
    for cause in _chain(exc):
        if isinstance(cause, ConnectionRefusedError) or "Error 111 " in str(cause):
            return "connection refused (is Redis running there, and is the port right?)"
        if "Connection reset by peer" in str(cause) or isinstance(cause, ConnectionResetError):
            if tls:
                # TLS 1.3 finishes the client's side of the handshake before the server has
                # checked the client certificate, so a refusal may come as a bare reset.
                return ("Redis reset the TLS connection (a Redis that requires client "
                        "certificates does so without one: check REDIS_TLS_CERT_FILE and "
                        "REDIS_TLS_KEY_FILE)")
            return ("Redis reset the connection (a Redis that serves TLS drops plain "
                    "connections: rediss:// in REDIS_URL, REDIS_TLS)")
    return str(exc).strip().rstrip(".") or type(exc).__name__


class _Late(Exception):
    """A round trip to Redis that outlasted REDIS_TIMEOUT (the store's own deadline)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"did not answer within {timeout:g}s (REDIS_TIMEOUT)")


def explain(exc: BaseException, *, where: str, setting: str, tls: bool, master: str = "",
            credentials: str = "") -> str:
    """One plain sentence for a Redis failure: what is wrong and the setting to look at."""
    if isinstance(exc, MasterNotFoundError):
        return (f"no sentinel in REDIS_SENTINELS names a primary for master {master!r} "
                "(REDIS_SENTINEL_MASTER): none answered, or none knows that name, or the "
                "primary is down")
    if _refused_credentials(exc):
        fix = credentials or ("REDIS_USERNAME/REDIS_PASSWORD"
                              + (", or the user and password in REDIS_URL"
                                 if setting == "REDIS_URL" else ""))
        return f"Redis at {where} ({setting}) refused the credentials ({fix}): {exc}"
    if isinstance(exc, _Late):
        return (f"Redis at {where} ({setting}) {exc}: overloaded, paused, or unreachable "
                "without refusing")
    if isinstance(exc, ReadOnlyError):
        return (f"Redis at {where} ({setting}) is a read-only replica now (a failover?): "
                f"{exc}")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return f"Cannot reach Redis at {where} ({setting}): {_unreachable_reason(exc, tls)}"
    return f"Redis at {where} ({setting}) answered with an error: {exc}"


def _is_tls(client: aioredis.Redis) -> bool:
    return issubclass(client.connection_pool.connection_class, SSLConnection)


def translate(exc: BaseException, client: aioredis.Redis) -> StoreError:
    """A plain StoreError naming the setting and the address, never a password."""
    pool = client.connection_pool
    master = pool.service_name if isinstance(pool, SentinelConnectionPool) else ""
    message = explain(
        exc, where=redis_address(client), setting="REDIS_SENTINELS" if master else "REDIS_URL",
        tls=_is_tls(client), master=master,
    )
    return StoreError(_scrub(message, _client_secrets(client)))


class _Trip:
    """One store round trip: counted; bounded by the link's timeout (a pooled connection's
    wait, connecting and the reply: redis-py's own ``socket_timeout`` is off, since on Python
    3.11 it costs an ``asyncio.wait_for``, so a task, per command); a Redis error becomes one
    StoreError naming the setting to look at. A round trip cut short by the timeout closes
    its connection (redis-py drops a connection whose command was interrupted)."""

    __slots__ = ("_deadline", "_link", "_shared")

    def __init__(self, link: Link, *, shared: bool = False) -> None:
        self._link = link
        self._shared = shared
        self._deadline: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        link = self._link
        link.round_trips += 1
        self._deadline = asyncio.timeout(link.timeout)
        await self._deadline.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._deadline is not None
        try:
            await self._deadline.__aexit__(exc_type, exc, tb)
        except TimeoutError as late:
            overdue = _Late(self._link.timeout)
            if self._shared:
                # Redis may hang: the commands behind this one on the shared connection
                # would wait as long, so it is given up.
                self._link.shared.reset(overdue)
            raise translate(overdue, self._link.client) from late
        if isinstance(exc, RedisError | OSError):
            raise translate(exc, self._link.client) from exc


class Link:
    """One Redis client as the store uses it: counted round trips, each bounded by
    ``timeout`` (REDIS_TIMEOUT), translated errors. Scripts go over one connection shared
    by every task (``shared``); everything else through the client's pool."""

    def __init__(self, client: aioredis.Redis, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.client = client
        self.timeout = timeout
        self.round_trips = 0
        self.shared = SharedConnection(client)

    def trip(self, *, shared: bool = False) -> _Trip:
        """``async with link.trip():`` around one round trip to Redis (``shared``: over
        the shared connection)."""
        return _Trip(self, shared=shared)

    async def aclose(self) -> None:
        """Give the shared connection back to the pool (the client stays open)."""
        await self.shared.aclose()

    def script(self, source: str) -> AsyncScript:
        """Register a Lua script; this computes its SHA only, the server sees it on first
        use."""
        return self.client.register_script(source)

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA over the shared connection, loading the script first when the server
        does not know it (a fresh or restarted Redis, or a replica just promoted). Scripts
        are never queued in a redis-py pipeline: it would ask SCRIPT EXISTS before every
        pipeline, one more round trip each time."""
        async with self.trip(shared=True):
            try:
                return await self.shared.execute("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                pass
        async with self.trip(shared=True):
            # Over the connection the script will run on: after a failover the pool may
            # still hold connections to the demoted primary, which loads scripts as well.
            script.sha = text(await self.shared.execute("SCRIPT", "LOAD", script.script))
        async with self.trip(shared=True):
            return await self.shared.execute("EVALSHA", script.sha, len(keys), *keys, *args)


# ---------------------------------------------------------------------------- connect


@contextlib.asynccontextmanager
async def connect(settings: RedisSettings) -> AsyncIterator[aioredis.Redis]:
    """The bridge's Redis client: REDIS_URL, the sentinels of REDIS_SENTINELS, or an embedded
    server in BRIDGE_DATA_DIR when neither is set; closed on exit. A Redis that cannot be
    used: a plain StoreError (ConfigError for a TLS file that cannot be loaded)."""
    from bridge.store.embedded import EmbeddedRedis

    embedded: EmbeddedRedis | None = None
    url = None
    if not settings.redis_url and not settings.redis_sentinels:
        embedded = EmbeddedRedis(settings.data_dir)
        url = await embedded.start()
    try:
        target = Target.from_settings(settings, url=url)
        if target.tls and not target.check_hostname:
            log.warning("REDIS_TLS_CHECK_HOSTNAME=false: Redis's certificate is checked "
                        "against the CA but accepted for any host name")
        async with opened(target) as client:
            yield client
    finally:
        if embedded is not None:
            await embedded.stop()


@contextlib.asynccontextmanager
async def opened(target: Target, **options: Any) -> AsyncIterator[aioredis.Redis]:
    """A client of ``target`` (``Connector.client`` ``options``) that has answered PING;
    its TLS files are loaded first. Closed, with the sentinel clients, on exit."""
    target.check_files()
    connector = Connector(target)
    try:
        client = connector.client(**options)
        try:
            await ping(connector, client)
            yield client
        finally:
            await client.aclose()
    finally:
        await connector.aclose()


async def ping(connector: Connector, client: aioredis.Redis) -> None:
    """PING through ``client``; a failure is one StoreError naming what to fix (with
    Sentinel, what each sentinel said)."""
    target = connector.target
    try:
        async with asyncio.timeout(target.timeout):
            await client.ping()
    except (RedisError, OSError) as caught:
        exc = _Late(target.timeout) if isinstance(caught, TimeoutError) else caught
        if isinstance(exc, MasterNotFoundError):
            message = await sentinel_problem(connector)
        else:
            message = explain(exc, where=redis_address(client), setting=target.setting,
                              tls=target.tls, master=target.master,
                              credentials=_credentials(target))
        raise StoreError(_scrub(message, target.secrets())) from caught


def _credentials(target: Target) -> str:
    if target.password:
        return "REDIS_USERNAME/REDIS_PASSWORD"
    if target.url and "@" in target.url:
        return "the user and password in REDIS_URL"
    return "no password is set: REDIS_PASSWORD, or the user and password in REDIS_URL"


async def sentinel_problem(connector: Connector) -> str:
    """Ask each sentinel for the master's address and say plainly why no primary was
    found: every sentinel unreachable (each with its reason), credentials refused, or no
    sentinel knowing REDIS_SENTINEL_MASTER."""
    target = connector.target
    failures: list[str] = []
    unknown = 0
    for sentinel in connector.sentinel().sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        where = f"{kwargs.get('host')}:{kwargs.get('port')}"
        try:
            found: Any = await sentinel.sentinel_get_master_addr_by_name(target.master)
        except (RedisError, OSError) as exc:
            if _refused_credentials(exc):
                failures.append(f"{where} refused the credentials "
                                f"(REDIS_SENTINEL_USERNAME/REDIS_SENTINEL_PASSWORD): {exc}")
            else:
                failures.append(f"{where}: {_unreachable_reason(exc, target.tls)}")
            continue
        if not found:
            unknown += 1
        else:
            return (f"the sentinels name {text(found[0])}:{found[1]} as the primary of master "
                    f"{target.master!r}, but it is down or not yet confirmed (REDIS_SENTINELS)")
    if unknown:
        return (f"{'no' if unknown == len(target.sentinels) else 'a'} sentinel of "
                f"REDIS_SENTINELS knows a master named {target.master!r}: check "
                "REDIS_SENTINEL_MASTER (the name in `sentinel monitor <name> …`)"
                + (f"; and {'; '.join(failures)}" if failures else ""))
    return ("no sentinel in REDIS_SENTINELS could be asked for the primary: "
            + "; ".join(failures))
