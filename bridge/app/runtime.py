"""The running bridge: the composed parts, the HTTP server and the platform adapters."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bridge.app.compose import Bridge, compose
from bridge.app.http import create_app
from bridge.app.metrics import Metrics
from bridge.app.platforms import Platform, credentials, discover, select
from bridge.app.settings import Settings
from bridge.chatbase.client import ChatbaseClient
from bridge.core.clock import SystemClock
from bridge.core.errors import ConfigError
from bridge.core.ports import Clock, PlatformAdapter
from bridge.core.service import RelayService
from bridge.store import Store

log = logging.getLogger(__name__)

# The garbage collector's thresholds once the bridge runs: a young collection after 50,000
# new container objects instead of 700, a middle one every 20 of those, a full one at most
# every 100 middle ones (and only when a quarter of the old generation is new, CPython's own
# rule). Measured with 1,000 answers in flight: 8 % less CPU and p99 added time to first
# text 15 ms instead of 70 ms (docs/performance.md).
GC_THRESHOLDS = (50_000, 20, 100)


class Runtime:
    """``async with Runtime(settings=...) as rt:`` gives a ready service; ``await rt.serve(stop)``
    runs the HTTP server and the platform adapters until ``stop`` is set, then shuts down
    gracefully (stop intake, drain answers in flight, close connections)."""

    def __init__(
        self,
        *,
        settings: Settings,
        platforms: tuple[str, ...] | None = None,
        clock: Clock | None = None,
        available: Sequence[Platform] | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.metrics = Metrics()
        self._names = platforms
        self._available = tuple(available) if available is not None else None
        self._stack = AsyncExitStack()
        self.adapters: list[PlatformAdapter] = []
        self.http_app: web.Application | None = None
        self.port: int | None = None
        self._bridge: Bridge | None = None

    # ------------------------------------------------------------------ resources

    async def __aenter__(self) -> Runtime:
        try:
            self._bridge = await self._stack.enter_async_context(
                compose(self.settings, clock=self.clock, metrics=self.metrics)
            )
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    @property
    def bridge(self) -> Bridge:
        if self._bridge is None:
            raise RuntimeError("enter the Runtime first (async with Runtime(...) as rt)")
        return self._bridge

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.bridge.session

    @property
    def redis(self) -> aioredis.Redis:
        return self.bridge.redis

    @property
    def store(self) -> Store:
        return self.bridge.store

    @property
    def chatbase(self) -> ChatbaseClient:
        return self.bridge.chatbase

    @property
    def service(self) -> RelayService:
        return self.bridge.service

    # ------------------------------------------------------------------ platforms

    def available_platforms(self) -> tuple[Platform, ...]:
        if self._available is None:
            self._available = discover()
        return self._available

    def enabled_platforms(self) -> tuple[Platform, ...]:
        return select(self.settings, self._names, self.available_platforms())

    async def readiness(self) -> dict[str, bool]:
        checks: dict[str, bool] = {}
        try:
            await self.store.ping()
            checks["redis"] = True
        except Exception:
            checks["redis"] = False
        for adapter in self.adapters:
            checks[adapter.name] = adapter.is_ready()
        return checks

    @staticmethod
    def prepare_heap() -> None:
        """Once start-up is done: take what it left alive out of the garbage collector's
        sight, and collect less often.

        Modules, SDK tables, clients and settings live as long as the process; left in the
        collected generations, every full collection walks them again (some 150,000 objects,
        up to hundreds of milliseconds in which no answer advances once many answers are in
        flight). With hundreds of answers in flight the default thresholds (700, 10, 10) run
        a young collection every few milliseconds and a full one every few seconds, each a
        pause for every answer; ``GC_THRESHOLDS`` makes both far rarer (docs/performance.md).
        """
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down gracefully."""
        platforms = self.enabled_platforms()
        if not platforms:
            raise ConfigError(
                "No platform is configured: set "
                f"{credentials(self.available_platforms())}."
            )
        app = create_app(metrics=self.metrics, readiness=self.readiness)
        self.http_app = app
        self.adapters = [p.adapter(self.bridge, http_app=app) for p in platforms]
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        # The stuck-answer watchdog runs while answers can be in flight, drain included.
        watchdog = asyncio.create_task(self.bridge.watchdog.run(), name="watchdog")
        try:
            await self._listen(runner)
            log.info("HTTP server listening on port %s (/healthz, /readyz, /metrics)", self.port)
            await self._run_adapters(stop)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await runner.cleanup()

    async def _listen(self, runner: web.AppRunner) -> None:
        host, port = self.settings.http_host, self.settings.http_port
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"BRIDGE_HTTP_PORT {port} is already in use; pick another port."
                ) from None
            raise ConfigError(
                f"Cannot listen on {host}:{port} (BRIDGE_HTTP_HOST/BRIDGE_HTTP_PORT): "
                f"{exc.strerror}."
            ) from None
        # The bound port (BRIDGE_HTTP_PORT=0 asks the system for a free one).
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    async def _run_adapters(self, stop: asyncio.Event) -> None:
        started: list[PlatformAdapter] = []
        try:
            for adapter in self.adapters:
                await adapter.start()
                started.append(adapter)
                log.info("%s connected", adapter.name)
            self.prepare_heap()
            await stop.wait()
            log.info("shutting down: no new messages; finishing answers in flight")
        finally:
            for adapter in started:
                try:
                    await adapter.stop_intake()
                except Exception as exc:
                    log.warning("stopping %s's intake failed: %s", adapter.name, exc)
            await self.service.drain(self.settings.shutdown_grace)
            for adapter in reversed(started):
                try:
                    await adapter.close()
                except Exception as exc:
                    log.warning("closing %s failed: %s", adapter.name, exc)
