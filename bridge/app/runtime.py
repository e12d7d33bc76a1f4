"""The composition root: opens and closes every shared resource and wires the parts."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
from contextlib import AsyncExitStack
from types import TracebackType

import aiohttp
from aiohttp import web

from bridge.app.http import create_app
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.chatbase.client import ChatbaseClient
from bridge.core.clock import SystemClock
from bridge.core.errors import ConfigError
from bridge.core.ports import Clock, PlatformAdapter
from bridge.core.rendering.pacing import Pacer
from bridge.core.service import RelayService
from bridge.core.tools import ToolRegistry
from bridge.store import Store, connect

log = logging.getLogger(__name__)

PLATFORMS = ("slack", "discord")


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
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.metrics = Metrics()
        self._platforms = platforms
        self._stack = AsyncExitStack()
        self.adapters: list[PlatformAdapter] = []
        self.http_app: web.Application | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ resources

    async def __aenter__(self) -> Runtime:
        try:
            await self._open()
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

    async def _open(self) -> None:
        settings = self.settings
        api_key, agent_id = settings.require_chatbase()
        # Every answer in flight holds one Chatbase connection for its whole stream; with
        # aiohttp's default cap of 100 connections, answer 101 would wait for one of them to
        # end (docs/performance.md). Platform calls are bounded by pacing, not by this.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._stack.push_async_callback(self.session.close)
        self.redis = await self._stack.enter_async_context(connect(settings))
        self.store = Store.from_settings(self.redis, settings, clock=self.clock)
        await self.store.ping()
        limiter = self.store.limiter(
            "chatbase", limit=settings.chatbase_rate_limit, window=settings.chatbase_rate_window
        )
        self.chatbase = ChatbaseClient(
            session=self.session,
            api_key=api_key,
            agent_id=agent_id,
            base_url=settings.chatbase_api_base,
            limiter=limiter,
            timeout=settings.chatbase_timeout,
            idle_timeout=settings.stream_idle_timeout,
            max_wait=settings.chatbase_max_wait,
            clock=self.clock,
            on_request=self.metrics.chatbase_request,
        )
        tools = ToolRegistry()
        tools.load(settings.tools_module)
        self.service = RelayService(
            settings=settings,
            store=self.store,
            chatbase=self.chatbase,
            pacer=Pacer(slots=self.store, clock=self.clock),
            clock=self.clock,
            metrics=self.metrics,
            tools=tools,
        )

    # ------------------------------------------------------------------ platforms

    def enabled_platforms(self) -> tuple[str, ...]:
        if self._platforms is not None:
            return self._platforms
        found = []
        if self.settings.slack_enabled:
            found.append("slack")
        if self.settings.discord_enabled:
            found.append("discord")
        return tuple(found)

    def _build_adapters(self, app: web.Application) -> list[PlatformAdapter]:
        adapters: list[PlatformAdapter] = []
        for name in self.enabled_platforms():
            if name == "slack":
                if not self.settings.slack_enabled:
                    raise ConfigError("--platform slack needs SLACK_BOT_TOKEN.")
                from adapters.slack.adapter import SlackAdapter

                adapters.append(SlackAdapter(
                    settings=self.settings, relay=self.service, metrics=self.metrics,
                    http_app=app, session=self.session,
                ))
            elif name == "discord":
                if not self.settings.discord_enabled:
                    raise ConfigError("--platform discord needs DISCORD_BOT_TOKEN.")
                from adapters.discord.adapter import DiscordAdapter

                adapters.append(DiscordAdapter(
                    settings=self.settings, relay=self.service, metrics=self.metrics,
                ))
            else:
                raise ConfigError(f"Unknown platform {name!r}: expected slack or discord.")
        return adapters

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
    def freeze_startup_objects() -> None:
        """Take what start-up left alive out of the garbage collector's sight.

        Modules, SDK tables, clients and settings live as long as the process; left in the
        collected generations, every full collection walks them again (some 150,000 objects,
        up to hundreds of milliseconds in which no answer advances once many answers are in
        flight; docs/performance.md)."""
        gc.collect()
        gc.freeze()

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down gracefully."""
        if not self.enabled_platforms():
            raise ConfigError(
                "No platform is configured: set SLACK_BOT_TOKEN and/or DISCORD_BOT_TOKEN."
            )
        app = create_app(metrics=self.metrics, readiness=self.readiness)
        self.http_app = app
        self.adapters = self._build_adapters(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
            try:
                await site.start()
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"BRIDGE_HTTP_PORT {self.settings.http_port} is already in use; "
                        "pick another port."
                    ) from None
                raise ConfigError(
                    f"Cannot listen on {self.settings.http_host}:{self.settings.http_port} "
                    f"(BRIDGE_HTTP_HOST/BRIDGE_HTTP_PORT): {exc.strerror}."
                ) from None
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
            log.info("HTTP server listening on port %s (/healthz, /readyz, /metrics)", self.port)
            started: list[PlatformAdapter] = []
            try:
                for adapter in self.adapters:
                    await adapter.start()
                    started.append(adapter)
                    log.info("%s connected", adapter.name)
                self.freeze_startup_objects()
                await stop.wait()
                log.info("shutting down: no new messages; finishing answers in flight")
            finally:
                for adapter in started:
                    with contextlib.suppress(Exception):
                        await adapter.stop_intake()
                await self.service.drain(self.settings.shutdown_grace)
                for adapter in reversed(started):
                    try:
                        await adapter.close()
                    except Exception as exc:
                        log.warning("closing %s failed: %s", adapter.name, exc)
        finally:
            await runner.cleanup()
