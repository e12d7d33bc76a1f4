"""Discord as the application shell sees it (``bridge.app.platforms.Platform``)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.app.platforms import Command
from bridge.app.settings import Settings
from bridge.core.ports import PlatformAdapter

if TYPE_CHECKING:
    from bridge.app.checks import CheckResult
    from bridge.app.compose import Bridge


class DiscordPlatform:
    """Discord on discord.py: the gateway, plus the ``discord-invite`` command."""

    name = "discord"
    rank = 20
    credential = "DISCORD_BOT_TOKEN"

    def enabled(self, settings: Settings) -> bool:
        return settings.discord_enabled

    def adapter(self, bridge: Bridge, *, http_app: web.Application) -> PlatformAdapter:
        # Imported here: the CLI loads every platform to list its commands, and discord.py
        # is needed only by `run`.
        from adapters.discord.adapter import DiscordAdapter

        return DiscordAdapter(
            settings=bridge.settings, relay=bridge.service, metrics=bridge.metrics,
            history=bridge.history,
        )

    async def check(self, settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
        from adapters.discord.checks import check_discord

        return await check_discord(settings, session)

    def commands(self) -> Sequence[Command]:
        return (Command(
            name="discord-invite",
            help="print the link that adds the Discord bot to a server",
            description="Print the OAuth2 URL with the scopes and permissions the bot uses. "
            "The application id comes from --application-id or is looked up with "
            "DISCORD_BOT_TOKEN.",
            arguments=_invite_arguments,
            run=_invite,
        ),)


def _invite_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--application-id", metavar="ID",
                        help="the application id (Developer Portal → General Information)")


def _invite(args: argparse.Namespace, load_settings: Callable[[], Settings]) -> int:
    from adapters.discord.checks import discord_application_id
    from adapters.discord.invite import invite_url

    application_id: str | None = args.application_id
    if application_id is None:
        application_id = asyncio.run(discord_application_id(load_settings()))
    print(invite_url(application_id))
    return 0
