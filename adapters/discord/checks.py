"""Discord's preflight for ``chatbase-bridge check`` (the token, the Message Content intent,
the shard selection) and the application-id lookup behind ``discord-invite``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from bridge.app.checks import (
    CHECK_TIMEOUT,
    CheckResult,
    Refused,
    Status,
    client_reason,
    fail,
    host_of,
    ok,
)
from bridge.app.settings import Settings
from bridge.core.errors import ConfigError, PlatformError

__all__ = [
    "APPLICATION_PATH",
    "MESSAGE_CONTENT_FLAGS",
    "DiscordApi",
    "check_discord",
    "discord_application_id",
    "shard_problem",
]

NAME = "discord"
# Application flags GATEWAY_MESSAGE_CONTENT (verified bots) and GATEWAY_MESSAGE_CONTENT_LIMITED
# (under 100 servers, toggled in the Developer Portal): either lets the gateway send content.
MESSAGE_CONTENT_FLAGS = (1 << 18) | (1 << 19)
# The bot's application with its flags: the read discord.py itself makes (application_info).
APPLICATION_PATH = "/oauth2/applications/@me"


class DiscordApi:
    """The two REST reads `check` and `discord-invite` make, as the bot.

    Plain aiohttp rather than discord.py's HTTPClient: discord.py takes its API base from a
    class attribute of its ``Route`` and offers no per-client one, and DISCORD_API_BASE (a
    proxy, a test server) must be honoured without patching the library process-wide."""

    def __init__(self, *, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token = token

    async def get(self, path: str) -> dict[str, Any]:
        url = self._base + path
        headers = {
            "Authorization": f"Bot {self._token}",
            "User-Agent": "DiscordBot (https://github.com/chatbase-bridge, 0.1)",
        }
        try:
            async with self._session.get(url, headers=headers) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientError as exc:
            raise Refused(f"cannot reach Discord at {host_of(url)} (DISCORD_API_BASE): "
                           f"{client_reason(exc)}.") from exc
        except TimeoutError as exc:
            raise Refused(f"Discord at {host_of(url)} did not answer within "
                           f"{CHECK_TIMEOUT:.0f}s.") from exc
        if status == 401:
            raise Refused("Discord refused DISCORD_BOT_TOKEN (401 Unauthorized): reset the "
                           "token under Bot in the Developer Portal and copy it again.",
                           config=True)
        if status == 429:
            raise Refused(f"Discord is rate limiting this bot; try again in "
                           f"{retry_after or 'a few'} seconds.")
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            raise Refused(f"Discord answered HTTP {status} to GET {path}"
                           + (f": {message}" if message else "") + ".")
        return body

    async def application_id(self) -> str:
        application = await self.get(APPLICATION_PATH)
        app_id = application.get("id")
        if not isinstance(app_id, str | int):
            raise Refused(f"Discord's {APPLICATION_PATH} answer has no application id.")
        return str(app_id)


async def check_discord(settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
    if settings.discord_bot_token is None:
        return CheckResult(NAME, Status.SKIPPED, "DISCORD_BOT_TOKEN is unset")
    token = settings.discord_bot_token.get_secret_value().strip()
    if token.lower().startswith("bot "):
        return fail(NAME, "DISCORD_BOT_TOKEN must be the bare token, without the 'Bot ' "
                           "prefix.", config=True)
    problem = shard_problem(settings.discord_shard_ids, settings.discord_shard_count)
    if problem:
        return fail(NAME, problem, config=True)
    api = DiscordApi(session=session, base_url=settings.discord_api_base, token=token)
    try:
        user = await api.get("/users/@me")
        application = await api.get(APPLICATION_PATH)
    except Refused as exc:
        return fail(NAME, str(exc), config=exc.config)
    who = f"bot {user.get('username', '?')} ({user.get('id', '?')})"
    flags = application.get("flags")
    content_on = isinstance(flags, int) and bool(flags & MESSAGE_CONTENT_FLAGS)
    if settings.discord_message_content and not content_on:
        # The gateway would close with 4014 (disallowed intents) at login.
        return fail(NAME, f"{who}: BRIDGE_DISCORD_MESSAGE_CONTENT is on but the Message "
                           "Content intent is off for this application; enable it under "
                           "Bot → Privileged Gateway Intents in the Developer Portal, or turn "
                           "the setting off.")
    if settings.discord_message_content:
        intent = "Message Content intent enabled"
    else:
        intent = "answers mentions, DMs and commands (BRIDGE_DISCORD_MESSAGE_CONTENT off)"
    return ok(NAME, f"{who}; {intent}")


def shard_problem(shard_ids: Sequence[int], shard_count: int | None) -> str | None:
    """Why a shard selection cannot work, or None."""
    if not shard_ids:
        return None
    if shard_count is None:
        return "BRIDGE_DISCORD_SHARD_IDS needs BRIDGE_DISCORD_SHARD_COUNT (the total across " \
               "all processes)."
    bad = [i for i in shard_ids if not 0 <= i < shard_count]
    if bad:
        return (f"BRIDGE_DISCORD_SHARD_IDS has {', '.join(map(str, bad))}, outside 0 to "
                f"{shard_count - 1} (BRIDGE_DISCORD_SHARD_COUNT is {shard_count}).")
    return None


async def discord_application_id(settings: Settings) -> str:
    """The bot's application id, read with DISCORD_BOT_TOKEN."""
    if settings.discord_bot_token is None:
        raise ConfigError("Give --application-id or set DISCORD_BOT_TOKEN to look it up.")
    token = settings.discord_bot_token.get_secret_value().strip()
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        api = DiscordApi(session=session, base_url=settings.discord_api_base, token=token)
        try:
            return await api.application_id()
        except Refused as exc:
            if exc.config:
                raise ConfigError(str(exc)) from None
            raise PlatformError(str(exc)) from None
