"""The whole Discord path for integration tests: fake Discord (REST + gateway), the real
DiscordAdapter on discord.py, the bridge as ``compose`` builds it on real Redis, and the fake
Chatbase.

Pacing runs on real time with the product's budget shrunk ten times (0.11 s between writes
per channel) against a fake whose write limit is shrunk the same way (5 per 0.5 s), so the
5-per-5-s behaviour is exercised ten times faster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.sink import DEFAULT_INTERVAL
from bridge.app.compose import compose
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.clock import SystemClock
from bridge.core.history import History
from bridge.core.service import RelayService
from bridge.store import Store
from tests.fakes import secrets
from tests.fakes.chatbase import FakeChatbase
from tests.fakes.discord_rest import Channel, FakeDiscord, Guild
from tests.fakes.harness import counter_value, roomy_limiter

RATE_WINDOW = 0.5
EDIT_INTERVAL = DEFAULT_INTERVAL * RATE_WINDOW / 5.0


@dataclass
class DiscordStack:
    discord: FakeDiscord
    chatbase: FakeChatbase
    settings: Settings
    service: RelayService
    store: Store
    metrics: Metrics
    guild: Guild
    channel: Channel
    adapters: list[DiscordAdapter] = field(default_factory=list)
    history: History | None = None

    @property
    def adapter(self) -> DiscordAdapter:
        return self.adapters[0]

    async def start_adapter(self, **settings: Any) -> DiscordAdapter:
        """Start one more bot process on the same fake (a restart, or a mistaken twin)."""
        adapter = DiscordAdapter(
            settings=self.settings.model_copy(update=settings) if settings else self.settings,
            relay=self.service,
            metrics=self.metrics,
            edit_interval=EDIT_INTERVAL,
            guild_ready_timeout=0.05,
            ready_timeout=10.0,
            connector=self.discord.connector,
            history=self.history,
        )
        await adapter.start()
        self.adapters.append(adapter)
        return adapter

    def rate_limited_count(self) -> float:
        return counter_value(self.metrics, "bridge_platform_rate_limited", platform="discord")


@asynccontextmanager
async def discord_stack(
    redis_url: str, prefix: str, *, start: bool = True, **env: Any
) -> AsyncIterator[DiscordStack]:
    async with AsyncExitStack() as stack:
        discord = await stack.enter_async_context(FakeDiscord(rate_window=RATE_WINDOW))
        chatbase = await stack.enter_async_context(FakeChatbase())
        values: dict[str, Any] = {
            "CHATBASE_API_KEY": chatbase.api_key,
            "CHATBASE_AGENT_ID": chatbase.agent_id,
            "CHATBASE_API_BASE": chatbase.base_url,
            "REDIS_URL": redis_url,
            "BRIDGE_REDIS_PREFIX": prefix,
            "DISCORD_BOT_TOKEN": discord.token,
            "BRIDGE_USER_QUOTA": "0",
        }
        values.update(env)
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        secrets.register_settings(settings)
        clock = SystemClock()
        bridge = await stack.enter_async_context(
            compose(settings, clock=clock, limiter=roomy_limiter(clock))
        )
        service, store, metrics = bridge.service, bridge.store, bridge.metrics
        guild = discord.add_guild("test guild")
        channel = discord.add_channel(guild, "general")
        built = DiscordStack(discord=discord, chatbase=chatbase, settings=settings,
                             service=service, store=store, metrics=metrics, guild=guild,
                             channel=channel, history=bridge.history)

        async def close_adapters() -> None:
            for adapter in built.adapters:
                await adapter.stop_intake()
            await service.drain(5.0)
            for adapter in built.adapters:
                await adapter.close()

        stack.push_async_callback(close_adapters)
        if start:
            await built.start_adapter()
        yield built
