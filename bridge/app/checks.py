"""Operator checks behind ``chatbase-bridge check``: reach each service, say what is wrong.

Each check gives one ``CheckResult``; a result is either a settings mistake (``config``: the
operator must change a variable) or a failing service. Messages are plain sentences that name
the variable to fix and never carry a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.app.settings import Settings
from bridge.chatbase.client import ChatbaseClient
from bridge.chatbase.limiter import LocalLimiter
from bridge.core.errors import (
    ChatbaseAPIError,
    ChatbaseError,
    ChatbaseRateLimited,
    ConfigError,
    PlatformError,
    StoreError,
)
from bridge.store.embedded import EmbeddedRedis

__all__ = [
    "APPLICATION_PATH",
    "CHECK_TIMEOUT",
    "MESSAGE_CONTENT_FLAGS",
    "CheckResult",
    "DiscordApi",
    "Status",
    "exit_status",
    "run_checks",
]

# Long enough for a slow network, short enough that a black-holed host does not hang `check`.
CHECK_TIMEOUT = 10.0
# Application flags GATEWAY_MESSAGE_CONTENT (verified bots) and GATEWAY_MESSAGE_CONTENT_LIMITED
# (under 100 servers, toggled in the Developer Portal): either lets the gateway send content.
MESSAGE_CONTENT_FLAGS = (1 << 18) | (1 << 19)
# The bot's application with its flags: the read discord.py itself makes (application_info).
APPLICATION_PATH = "/oauth2/applications/@me"


class Status(StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str = ""
    config: bool = False  # a settings mistake (exit 2) rather than a failing service (exit 1)

    def line(self) -> str:
        return f"{self.name:<9} {self.status.value:<7} {self.detail}".rstrip()


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.OK, detail)


def _fail(name: str, detail: str, *, config: bool = False) -> CheckResult:
    return CheckResult(name, Status.FAIL, detail, config=config)


class _Refused(Exception):
    """A service answered, and said no; the message is the plain sentence to show.
    ``config``: it refused a credential, which the operator fixes in the settings."""

    def __init__(self, message: str, *, config: bool = False) -> None:
        super().__init__(message)
        self.config = config


def exit_status(results: Sequence[CheckResult]) -> int:
    """0 when everything passed, 2 when a setting must change, else 1."""
    failed = [r for r in results if r.status is Status.FAIL]
    if any(r.config for r in failed):
        return 2
    return 1 if failed else 0


async def run_checks(settings: Settings) -> list[CheckResult]:
    """Every check, concurrently; results in a fixed order."""
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        checks: list[Awaitable[CheckResult]] = [
            check_chatbase(settings, session),
            check_redis(settings),
            check_slack(settings, session),
            check_discord(settings, session),
        ]
        results = list(await asyncio.gather(*checks))
    if not settings.slack_enabled and not settings.discord_enabled:
        results.append(_fail(
            "platform",
            "no platform is configured: set SLACK_BOT_TOKEN and/or DISCORD_BOT_TOKEN.",
            config=True,
        ))
    return results


# ---------------------------------------------------------------------------- Chatbase


async def check_chatbase(settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
    name = "chatbase"
    missing = settings.missing_chatbase()
    if missing:
        return _fail(name, f"missing required setting(s) {' and '.join(missing)}.", config=True)
    api_key, agent_id = settings.require_chatbase()
    client = ChatbaseClient(
        session=session, api_key=api_key, agent_id=agent_id,
        base_url=settings.chatbase_api_base,
        limiter=LocalLimiter(limit=settings.chatbase_rate_limit,
                             window=settings.chatbase_rate_window),
        timeout=min(settings.chatbase_timeout, CHECK_TIMEOUT),
        idle_timeout=min(settings.stream_idle_timeout, CHECK_TIMEOUT),
        max_wait=min(settings.chatbase_max_wait, 5.0),
    )
    where = client.base_url
    try:
        health = await client.health()
    except ChatbaseAPIError as exc:
        return _fail(name, f"Chatbase's health check at {where} answered {exc.code} "
                           f"(HTTP {exc.status}); check CHATBASE_API_BASE.")
    except ChatbaseError as exc:
        return _fail(name, f"{exc}; check CHATBASE_API_BASE and the network.")
    if health.get("status") != "ok":
        return _fail(name, f"Chatbase at {where} reports its health as "
                           f"{health.get('status')!r}, not 'ok'.")
    # One authorised call proves the key, the plan's API access and the agent id together.
    pages = client.list_conversations(limit=1)
    try:
        await anext(pages, None)
    except ChatbaseAPIError as exc:
        # A refused key or an unknown agent is fixed in the settings, like the runtime says.
        refused = exc.code.startswith("AUTH_") or exc.code in _UNKNOWN_AGENT
        return _fail(name, _chatbase_refusal(exc, agent_id), config=refused)
    except ChatbaseError as exc:
        return _fail(name, f"Chatbase at {where} failed an authorised call: {exc}.")
    finally:
        aclose: Callable[[], Awaitable[None]] | None = getattr(pages, "aclose", None)
        if aclose is not None:
            await aclose()
    return _ok(name, f"agent {agent_id} answers at {where}")


_UNKNOWN_AGENT = frozenset({"AGENT_NOT_FOUND", "RESOURCE_NOT_FOUND"})


def _chatbase_refusal(exc: ChatbaseAPIError, agent_id: str) -> str:
    code = exc.code
    where = f" (request id {exc.request_id})" if exc.request_id else ""
    if code.startswith("AUTH_"):
        return (f"Chatbase refused the API key ({code}); check CHATBASE_API_KEY "
                "(Workspace Settings → API Keys).")
    if code in _UNKNOWN_AGENT:
        return (f"Chatbase has no agent {agent_id!r} for this API key ({code}); "
                "check CHATBASE_AGENT_ID.")
    if code in ("SUBSCRIPTION_API_RESTRICTED_PLAN", "PLAN_FEATURE_NOT_AVAILABLE"):
        return (f"the Chatbase workspace's plan has no API access ({code}); "
                "API v2 needs a Standard plan or above.")
    if isinstance(exc, ChatbaseRateLimited):
        return f"Chatbase is rate limiting this API key ({code}); try again shortly."
    return f"Chatbase answered {code} (HTTP {exc.status}): {exc.api_message}{where}."


# ---------------------------------------------------------------------------- Redis


def redis_address(url: str) -> str:
    """Where a Redis URL points, without its credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or url.split("?", 1)[0].removeprefix("unix://")
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{host}:{port}"


async def ping_redis(url: str) -> None:
    """PING the Redis at ``url`` once (no retries); ``StoreError`` names REDIS_URL."""
    address = redis_address(url)
    try:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=CHECK_TIMEOUT / 2, socket_timeout=CHECK_TIMEOUT / 2,
            retry=Retry(NoBackoff(), 0),
        )
    except (ValueError, RedisError) as exc:
        raise StoreError(f"REDIS_URL is not a usable Redis URL: {exc}.") from exc
    try:
        await client.ping()
    except AuthenticationError as exc:
        raise StoreError(f"Redis at {address} (REDIS_URL) refused the credentials in the URL: "
                         f"{exc}.") from exc
    except RedisTimeoutError as exc:
        raise StoreError(f"Redis at {address} (REDIS_URL) did not answer in time.") from exc
    except (RedisConnectionError, OSError) as exc:
        raise StoreError(f"cannot connect to Redis at {address} (REDIS_URL): "
                         f"{_redis_reason(exc)}.") from exc
    except RedisError as exc:
        raise StoreError(f"Redis at {address} (REDIS_URL) answered with an error: {exc}.") from exc
    finally:
        await client.aclose()


def _redis_reason(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "Error 111 " in str(seen):
            return "connection refused (is Redis running there, and is the port right?)"
        if isinstance(seen, socket.gaierror):
            return "the host name does not resolve"
        seen = seen.__cause__ or seen.__context__
    return str(exc).strip().rstrip(".") or type(exc).__name__


async def check_redis(settings: Settings) -> CheckResult:
    name = "redis"
    if settings.redis_url is not None:
        try:
            await ping_redis(settings.redis_url)
        except StoreError as exc:
            return _fail(name, str(exc))
        return _ok(name, f"{redis_address(settings.redis_url)} (REDIS_URL) answers PING")
    # A scratch folder, so a bridge already running on BRIDGE_DATA_DIR keeps its files alone.
    problem = _unwritable(settings.data_dir)
    if problem:
        return _fail(name, f"REDIS_URL is unset and BRIDGE_DATA_DIR {settings.data_dir} "
                           f"is not writable ({problem}).", config=True)
    with tempfile.TemporaryDirectory(prefix="cbb-check-") as scratch:
        embedded = EmbeddedRedis(Path(scratch))
        try:
            url = await embedded.start()
            await ping_redis(url)
        except StoreError as exc:
            return _fail(name, str(exc))
        finally:
            await embedded.stop()
    return _ok(name, "embedded Redis works (REDIS_URL unset: one process only; "
                     "set REDIS_URL to run several replicas)")


def _unwritable(folder: Path) -> str | None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


# ---------------------------------------------------------------------------- Slack

_SLACK_BAD_TOKEN = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "not_allowed_token_type",
})


async def check_slack(settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
    name = "slack"
    if settings.slack_bot_token is None:
        return CheckResult(name, Status.SKIPPED, "SLACK_BOT_TOKEN is unset")
    bot_token = settings.slack_bot_token.get_secret_value()
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    if not bot_token.startswith("xoxb-"):
        kind = " (it looks like a user token)" if bot_token.startswith("xoxp-") else ""
        if bot_token.startswith("xapp-"):
            kind = " (it looks like the app-level token; that one goes in SLACK_APP_TOKEN)"
        return _fail(name, f"SLACK_BOT_TOKEN must be a bot token starting with xoxb-{kind}; "
                           "copy the Bot User OAuth Token from OAuth & Permissions.",
                     config=True)
    if app_token and not app_token.startswith("xapp-"):
        return _fail(name, "SLACK_APP_TOKEN must be an app-level token starting with xapp- "
                           "(Basic Information → App-Level Tokens, scope connections:write).",
                     config=True)
    if not app_token and settings.slack_signing_secret is None:
        return _fail(name, "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET "
                           "(HTTP events); Slack cannot deliver events with neither.",
                     config=True)
    try:
        identity = await _slack_call(session, settings.slack_api_url, "auth.test", bot_token,
                                     "SLACK_BOT_TOKEN")
        if app_token:
            await _slack_call(session, settings.slack_api_url, "apps.connections.open",
                              app_token, "SLACK_APP_TOKEN")
    except _Refused as exc:
        return _fail(name, str(exc), config=exc.config)
    who = f"bot {identity.get('user') or identity.get('user_id') or '?'}"
    team = identity.get("team") or identity.get("team_id")
    if team:
        who += f" in {team}"
    if app_token:
        mode = "Socket Mode connection allowed"
    else:
        mode = (f"HTTP events: set the Request URL to https://<your host>/slack/events "
                f"(served on port {settings.http_port})")
    return _ok(name, f"{who}; {mode}")


async def _slack_call(
    session: aiohttp.ClientSession, api_url: str, method: str, token: str, variable: str
) -> dict[str, Any]:
    url = api_url.rstrip("/") + "/" + method
    try:
        async with session.post(url, headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status == 429:
                retry = response.headers.get("Retry-After", "a few")
                raise _Refused(f"Slack is rate limiting {method}; try again in {retry} seconds.")
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
    except aiohttp.ClientError as exc:
        raise _Refused(f"cannot reach Slack at {_host(url)} (SLACK_API_URL): "
                       f"{_client_reason(exc)}.") from exc
    except TimeoutError as exc:
        raise _Refused(f"Slack at {_host(url)} did not answer {method} within "
                       f"{CHECK_TIMEOUT:.0f}s.") from exc
    if not isinstance(body, dict):
        raise _Refused(f"Slack's {method} answered HTTP {response.status} without JSON; "
                       "check SLACK_API_URL.")
    if body.get("ok") is True:
        return body
    error = str(body.get("error") or "unknown_error")
    if error in _SLACK_BAD_TOKEN:
        hint = "it is wrong, revoked or belongs to another app"
        if error == "not_allowed_token_type":
            hint = "it is the wrong kind of token for this call"
        raise _Refused(f"Slack refused {variable} ({error}): {hint}.", config=True)
    if error == "missing_scope":
        needed = body.get("needed")
        raise _Refused(f"{variable} lacks a scope {method} needs"
                       + (f" ({needed})" if needed else "") + "; add it and reinstall the app.",
                       config=True)
    raise _Refused(f"Slack's {method} failed: {error}.")


# ---------------------------------------------------------------------------- Discord


class DiscordApi:
    """The two REST reads `check` and `discord-invite` make, as the bot (aiohttp only)."""

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
            raise _Refused(f"cannot reach Discord at {_host(url)} (DISCORD_API_BASE): "
                           f"{_client_reason(exc)}.") from exc
        except TimeoutError as exc:
            raise _Refused(f"Discord at {_host(url)} did not answer within "
                           f"{CHECK_TIMEOUT:.0f}s.") from exc
        if status == 401:
            raise _Refused("Discord refused DISCORD_BOT_TOKEN (401 Unauthorized): reset the "
                           "token under Bot in the Developer Portal and copy it again.",
                           config=True)
        if status == 429:
            raise _Refused(f"Discord is rate limiting this bot; try again in "
                           f"{retry_after or 'a few'} seconds.")
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            raise _Refused(f"Discord answered HTTP {status} to GET {path}"
                           + (f": {message}" if message else "") + ".")
        return body

    async def application_id(self) -> str:
        application = await self.get(APPLICATION_PATH)
        app_id = application.get("id")
        if not isinstance(app_id, str | int):
            raise _Refused(f"Discord's {APPLICATION_PATH} answer has no application id.")
        return str(app_id)


async def check_discord(settings: Settings, session: aiohttp.ClientSession) -> CheckResult:
    name = "discord"
    if settings.discord_bot_token is None:
        return CheckResult(name, Status.SKIPPED, "DISCORD_BOT_TOKEN is unset")
    token = settings.discord_bot_token.get_secret_value().strip()
    if token.lower().startswith("bot "):
        return _fail(name, "DISCORD_BOT_TOKEN must be the bare token, without the 'Bot ' "
                           "prefix.", config=True)
    problem = shard_problem(settings.discord_shard_ids, settings.discord_shard_count)
    if problem:
        return _fail(name, problem, config=True)
    api = DiscordApi(session=session, base_url=settings.discord_api_base, token=token)
    try:
        user = await api.get("/users/@me")
        application = await api.get(APPLICATION_PATH)
    except _Refused as exc:
        return _fail(name, str(exc), config=exc.config)
    who = f"bot {user.get('username', '?')} ({user.get('id', '?')})"
    flags = application.get("flags")
    content_on = isinstance(flags, int) and bool(flags & MESSAGE_CONTENT_FLAGS)
    if settings.discord_message_content and not content_on:
        # The gateway would close with 4014 (disallowed intents) at login.
        return _fail(name, f"{who}: BRIDGE_DISCORD_MESSAGE_CONTENT is on but the Message "
                           "Content intent is off for this application; enable it under "
                           "Bot → Privileged Gateway Intents in the Developer Portal, or turn "
                           "the setting off.")
    if settings.discord_message_content:
        intent = "Message Content intent enabled"
    else:
        intent = "answers mentions, DMs and commands (BRIDGE_DISCORD_MESSAGE_CONTENT off)"
    return _ok(name, f"{who}; {intent}")


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
        except _Refused as exc:
            if exc.config:
                raise ConfigError(str(exc)) from None
            raise PlatformError(str(exc)) from None


# ---------------------------------------------------------------------------- helpers


def _host(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        return parts.hostname or url
    return f"{parts.hostname}:{port}"


def _client_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or "connection failed"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    with contextlib.suppress(Exception):
        text = str(exc)
        if text:
            return text
    return type(exc).__name__
