"""A fake Discord: the REST API discord.py 2.7 uses and its gateway, on aiohttp TestServers.

discord.py reaches it through its public ``connector`` option: ``fake.connector()`` makes an
aiohttp connector whose resolver sends ``discord.com`` and the gateway hosts to the fake's
HTTPS listener, trusting a certificate authority made in memory for this fake (``trustme``),
so discord.py keeps its own ``https://discord.com/api/v10`` and ``wss://`` addresses. The
same API also answers over plain HTTP at ``fake.api_base``, for the bridge's own REST reads
(``DISCORD_API_BASE`` for ``check``) and for tests that call it directly. It records every REST
call (method, route template, channel, JSON body, status), keeps the messages it was sent,
enforces Discord's 2,000-character content limit and a per-channel message write limit
(5 per 5 s by default, shared by POST/PATCH/DELETE on a channel's messages) with 429s and
``X-RateLimit-*`` headers, opens threads (id = starter message id, announced with
THREAD_CREATE; a thread started without a message gets its own id and a "started a thread"
system message in its parent), and answers interaction callbacks and the interaction webhook
(a component's deferred update makes the message it is on the "original response", as
Discord does). Messages keep the ``components`` (action rows of buttons) they are posted or
edited with; an edit without the field leaves them, an empty list removes them, like
Discord. Component interactions carry the presser's channel permissions as
``member.permissions``. Edits of a
message named in ``old_messages`` fail like edits of a message older than an hour whose edit
cap is spent (400, code 30046), on the channel and the interaction webhook alike.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from tests.fakes import secrets
from tests.fakes.discord_gateway import FakeGateway, Session

DISCORD_EPOCH_MS = 1420070400000
API_PREFIX = "/api/v10"
# The hosts discord.py dials: its REST base, its built-in gateway (used when the shard count
# is given) and the gateway this fake advertises in GET /gateway/bot and READY.
API_HOST = "discord.com"
BUILT_IN_GATEWAY_HOST = "gateway.discord.gg"
FAKE_GATEWAY_HOST = "gateway.fake-discord.test"
FAKE_HOSTS = frozenset({API_HOST, BUILT_IN_GATEWAY_HOST, FAKE_GATEWAY_HOST})


@functools.cache
def _authority() -> tuple[trustme.CA, trustme.LeafCert]:
    """One test CA and certificate per test process (made in memory, never written)."""
    ca = trustme.CA()
    return ca, ca.issue_cert(*sorted(FAKE_HOSTS))


class FakeResolver(AbstractResolver):
    """Resolves the Discord hosts to the fake's HTTPS port and nothing else (no network)."""

    def __init__(self, port: int) -> None:
        self._port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in FAKE_HOSTS:
            raise OSError(f"the fake Discord does not serve {host}")
        return [ResolveResult(hostname=host, host="127.0.0.1", port=self._port,
                              family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None

# Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
READ_MESSAGE_HISTORY = 1 << 16
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)
THREAD_PERMISSIONS = CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS

TEXT_CHANNEL = 0
DM_CHANNEL = 1
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_CREATED_MESSAGE = 18

_counter = itertools.count(1)


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py decodes a body only when Content-Type is exactly "application/json".
    return web.Response(body=json.dumps(data).encode(), status=status,
                        content_type="application/json")


def snowflake() -> str:
    """Increasing ids shaped like Discord's (milliseconds since 2015 << 22)."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_counter) & 0x3FFFFF))


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user_payload(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": user_id, "username": name, "global_name": name, "discriminator": "0",
        "avatar": None, "bot": bot, "public_flags": 0, "flags": 0,
    }


@dataclass
class Call:
    method: str
    path: str
    template: str
    channel_id: str | None
    body: Any
    status: int
    at: float
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Channel:
    id: str
    guild_id: str | None
    name: str
    type: int = TEXT_CHANNEL
    parent_id: str | None = None
    threads_allowed: bool = True
    owner_id: str | None = None
    archived: bool = False
    locked: bool = False

    def payload(self, everyone_role: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "type": self.type, "name": self.name, "position": 0,
            "permission_overwrites": [], "nsfw": False, "topic": None,
            "last_message_id": None, "rate_limit_per_user": 0, "parent_id": self.parent_id,
        }
        if self.guild_id is not None:
            data["guild_id"] = self.guild_id
        if not self.threads_allowed and everyone_role is not None:
            data["permission_overwrites"] = [{
                "id": everyone_role, "type": 0, "allow": "0", "deny": str(THREAD_PERMISSIONS),
            }]
        if self.type == PUBLIC_THREAD:
            data.update({
                "owner_id": self.owner_id, "message_count": 0, "member_count": 1,
                "total_message_sent": 0, "flags": 0,
                "thread_metadata": {
                    "archived": self.archived, "auto_archive_duration": 1440,
                    "archive_timestamp": now_iso(), "locked": False,
                },
            })
        return data


@dataclass
class Guild:
    id: str
    name: str
    channels: dict[str, Channel] = field(default_factory=dict)


@dataclass
class Interaction:
    id: str
    token: str
    channel_id: str
    guild_id: str | None
    acknowledged: bool = False
    # The callback's response type (4 message, 5 deferred message, 6 deferred update, ...)
    # and its flags (64: ephemeral).
    response_type: int | None = None
    response_flags: int = 0
    original_id: str | None = None
    followups: list[str] = field(default_factory=list)
    kind: int = 2  # 2 application command, 3 message component
    message_id: str | None = None  # a component's message


class FakeDiscord:
    """``async with FakeDiscord() as fake:`` then ``fake.api_base`` for DISCORD_API_BASE."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        rate_limit: int = 5,
        rate_window: float = 5.0,
    ) -> None:
        self.token = token
        secrets.register(token)
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.bot_id = snowflake()
        self.application_id = self.bot_id  # a bot user's id is its application's id
        self.owner_id = snowflake()
        self.bot = user_payload(self.bot_id, "bridge", bot=True)
        self.guilds: dict[str, Guild] = {}
        self.dm_channels: dict[str, Channel] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.rate_limited: list[Call] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.interactions: dict[str, Interaction] = {}
        # Messages whose edits Discord refuses with 30046 (older than an hour, cap spent);
        # ``refuse_edits_after`` makes every new bot message one after that many edits.
        self.old_messages: set[str] = set()
        self.refuse_edits_after: int | None = None
        self._edits: dict[str, int] = {}
        self._windows: dict[str, tuple[float, int]] = {}
        self._changed = asyncio.Condition()
        self._change_pending = False
        self.gateway = FakeGateway(
            token=token,
            ready_payload=self._ready_payload,
            guild_payloads=self._guild_payloads,
            on_change=self._notify_soon,
        )
        self._plain: TestServer | None = None
        self._tls: TestServer | None = None
        self._users: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ setup

    async def __aenter__(self) -> FakeDiscord:
        self._plain = TestServer(self._app(), host="127.0.0.1", port=0)
        await self._plain.start_server()
        _, cert = _authority()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._tls = TestServer(self._app(), host="127.0.0.1", port=0)
        await self._tls.start_server(ssl=context)
        self.gateway.url = f"wss://{FAKE_GATEWAY_HOST}/"
        return self

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.gateway.handle)  # wss://gateway.discord.gg/?v=10&...
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._dispatch_rest)
        return app

    async def __aexit__(self, *exc: object) -> None:
        await self.gateway.close_all()
        for listener in (self._tls, self._plain):
            if listener is not None:
                await listener.close()

    def connector(self) -> aiohttp.TCPConnector:
        """A connector for discord.py (``Client(connector=...)``, ``HTTPClient``) that
        reaches this fake at Discord's own addresses; a fresh one per client, which closes
        it."""
        assert self._tls is not None and self._tls.port is not None
        ca, _ = _authority()
        trust = ssl.create_default_context()
        ca.configure_trust(trust)
        return aiohttp.TCPConnector(limit=0, resolver=FakeResolver(self._tls.port), ssl=trust)

    @property
    def api_base(self) -> str:
        """The same REST API over plain HTTP, for callers given a base URL."""
        assert self._plain is not None
        return f"http://127.0.0.1:{self._plain.port}{API_PREFIX}"

    def add_guild(self, name: str = "guild") -> Guild:
        guild = Guild(id=snowflake(), name=name)
        self.guilds[guild.id] = guild
        return guild

    def add_channel(self, guild: Guild, name: str = "general", *,
                    threads_allowed: bool = True) -> Channel:
        channel = Channel(id=snowflake(), guild_id=guild.id, name=name,
                          threads_allowed=threads_allowed)
        guild.channels[channel.id] = channel
        return channel

    def add_dm(self, user_id: str) -> Channel:
        channel = Channel(id=snowflake(), guild_id=None, name="", type=DM_CHANNEL)
        self.dm_channels[channel.id] = channel
        return channel

    def user(self, name: str) -> dict[str, Any]:
        data = user_payload(snowflake(), name)
        self._users[data["id"]] = data
        return data

    def channel(self, channel_id: str) -> Channel | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return self.dm_channels.get(channel_id)

    # ------------------------------------------------------------------ waiting

    def _notify_soon(self) -> None:
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every call and gateway change)."""
        async def wait() -> Any:
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    await self._changed.wait()

        return await asyncio.wait_for(wait(), within)

    def calls_to(self, method: str, template: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.template == template]

    def message_calls(self, channel_id: str | None = None) -> list[Call]:
        """POST/PATCH/DELETE calls on channel messages (what the write limit counts)."""
        return [
            c for c in self.calls
            if c.template.startswith("/channels/{channel_id}/messages")
            and not c.template.endswith("/threads")
            and c.method in ("POST", "PATCH", "DELETE")
            and (channel_id is None or c.channel_id == channel_id)
        ]

    def messages_in(self, channel_id: str) -> list[dict[str, Any]]:
        found = [m for m in self.messages.values() if m["channel_id"] == channel_id]
        return sorted(found, key=lambda m: int(m["id"]))

    # ------------------------------------------------------------------ gateway helpers

    def interaction(self, interaction_id: str) -> Interaction:
        """The interaction of that id (to read how it was answered)."""
        (found,) = [i for i in self.interactions.values() if i.id == interaction_id]
        return found

    def _ready_payload(self, session: Session) -> dict[str, Any]:
        shard_id, count = session.shard
        return {
            "v": 10,
            "user": self.bot,
            "guilds": [
                {"id": g.id, "unavailable": True} for g in self.guilds.values()
                if self.gateway.shard_of(g.id, count) == shard_id
            ],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway.url,
            "shard": [shard_id, count],
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }

    def _guild_payloads(self, session: Session) -> list[dict[str, Any]]:
        shard_id, count = session.shard
        return [self.guild_payload(g) for g in self.guilds.values()
                if self.gateway.shard_of(g.id, count) == shard_id]

    def guild_payload(self, guild: Guild) -> dict[str, Any]:
        return {
            "id": guild.id, "name": guild.name, "icon": None, "owner_id": self.owner_id,
            "member_count": 2, "large": False, "unavailable": False, "features": [],
            "roles": [{
                "id": guild.id, "name": "@everyone", "permissions": str(EVERYONE_PERMISSIONS),
                "position": 0, "color": 0, "hoist": False, "managed": False,
                "mentionable": False, "flags": 0,
            }],
            "channels": [c.payload(guild.id) for c in guild.channels.values()
                         if c.type == TEXT_CHANNEL],
            # Like Discord: active threads only; archived ones the bot must fetch.
            "threads": [c.payload(guild.id) for c in guild.channels.values()
                        if c.type == PUBLIC_THREAD and not c.archived],
            "members": [self.member_payload(self.bot)],
            "emojis": [], "stickers": [], "voice_states": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "joined_at": now_iso(), "premium_tier": 0, "preferred_locale": "en-US",
        }

    @staticmethod
    def member_payload(user: dict[str, Any]) -> dict[str, Any]:
        return {
            "user": user, "roles": [], "joined_at": now_iso(), "deaf": False, "mute": False,
            "flags": 0, "pending": False, "nick": None, "avatar": None,
        }

    # ------------------------------------------------------------------ injecting events

    async def send_message(
        self,
        author: dict[str, Any],
        channel: Channel,
        content: str,
        *,
        mention_bot: bool = False,
        mentions: list[dict[str, Any]] | None = None,
        mention_everyone: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """A person posts a message: it is stored and dispatched as MESSAGE_CREATE."""
        if mention_bot:
            content = f"<@{self.bot_id}> {content}"
            mentions = [*(mentions or []), self.bot]
        message = self._message(channel, author, content, mentions=mentions or [],
                                mention_everyone=mention_everyone)
        message.update(extra)
        if channel.guild_id is not None:
            message["member"] = {k: v for k, v in self.member_payload(author).items()
                                 if k != "user"}
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def react(self, user: dict[str, Any], message: dict[str, Any], emoji: str, *,
                    added: bool = True) -> int:
        data: dict[str, Any] = {
            "user_id": user["id"], "channel_id": message["channel_id"],
            "message_id": message["id"], "emoji": {"id": None, "name": emoji},
            "type": 0, "burst": False,
        }
        if message.get("guild_id"):
            data["guild_id"] = message["guild_id"]
        if added:
            data["message_author_id"] = message["author"]["id"]
            data["burst_colors"] = []
            if message.get("guild_id"):
                data["member"] = self.member_payload(user)
        event = "MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE"
        return await self.dispatch(event, data)

    def interaction_payload(
        self,
        user: dict[str, Any],
        channel: Channel,
        *,
        kind: int,
        data: dict[str, Any],
        message: dict[str, Any] | None = None,
        permissions: int = EVERYONE_PERMISSIONS,
    ) -> dict[str, Any]:
        """``permissions``: the user's resolved permissions in the channel (Discord sends
        them as ``member.permissions`` on every guild interaction)."""
        interaction = Interaction(id=snowflake(), token=f"tok-{snowflake()}",
                                  channel_id=channel.id, guild_id=channel.guild_id, kind=kind,
                                  message_id=message["id"] if message is not None else None)
        self.interactions[interaction.token] = interaction
        payload: dict[str, Any] = {
            "id": interaction.id, "application_id": self.application_id, "type": kind,
            "data": data, "token": interaction.token, "version": 1,
            "channel_id": channel.id,
            "channel": channel.payload(channel.guild_id),
            "app_permissions": str(EVERYONE_PERMISSIONS), "locale": "en-US",
            "attachment_size_limit": 8 * 1024 * 1024, "entitlements": [],
            "authorizing_integration_owners": {}, "context": 0 if channel.guild_id else 1,
        }
        if channel.guild_id is not None:
            payload["guild_id"] = channel.guild_id
            payload["guild_locale"] = "en-US"
            payload["member"] = {**self.member_payload(user), "permissions": str(permissions)}
        else:
            payload["user"] = user
        if message is not None:
            payload["message"] = message
        return payload

    async def slash(self, user: dict[str, Any], channel: Channel, name: str,
                    **options: str) -> dict[str, Any]:
        command_id = next((c["id"] for cmds in self.commands.values() for c in cmds
                           if c["name"] == name), snowflake())
        data = {
            "id": command_id, "name": name, "type": 1,
            "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
        }
        payload = self.interaction_payload(user, channel, kind=2, data=data)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def press(self, user: dict[str, Any], message: dict[str, Any],
                    custom_id: str, *, permissions: int = EVERYONE_PERMISSIONS
                    ) -> dict[str, Any]:
        """``user`` presses the button ``custom_id`` of ``message`` (as it is now)."""
        channel = self.channel(message["channel_id"])
        assert channel is not None
        payload = self.interaction_payload(
            user, channel, kind=3, data={"custom_id": custom_id, "component_type": 2},
            message=json.loads(json.dumps(message)), permissions=permissions,
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        sent = await self.gateway.dispatch(event, data)
        return sent

    # ------------------------------------------------------------------ REST

    _ROUTES: ClassVar[tuple[tuple[str, str], ...]] = (
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("GET", "/gateway/bot"),
        ("PUT", "/applications/{application_id}/commands"),
        ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"),
        ("GET", "/channels/{channel_id}"),
        ("POST", "/channels/{channel_id}/typing"),
        ("POST", "/channels/{channel_id}/messages/{message_id}/threads"),
        ("POST", "/channels/{channel_id}/threads"),
        ("POST", "/channels/{channel_id}/messages"),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
        ("DELETE", "/channels/{channel_id}/messages/{message_id}"),
        ("POST", "/interactions/{interaction_id}/{token}/callback"),
        ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}"),
        ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}"),
        ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}"),
        ("POST", "/webhooks/{application_id}/{token}"),
    )

    @staticmethod
    def _match(template: str, path: str) -> dict[str, str] | None:
        pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"
        found = re.match(pattern, path)
        return found.groupdict() if found else None

    async def _dispatch_rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        for method, template in self._ROUTES:
            if method != request.method:
                continue
            params = self._match(template, path)
            if params is None:
                continue
            call = Call(method=method, path=path, template=template,
                        channel_id=params.get("channel_id"), body=body, status=0,
                        at=time.monotonic(), query=dict(request.query))
            self.calls.append(call)
            if request.headers.get("Authorization") != f"Bot {self.token}" and not (
                template.startswith(("/interactions", "/webhooks"))
            ):
                response = self._error(401, 0, "401: Unauthorized")
            else:
                response = await self._route(call, params)
            call.status = response.status
            await self._notify()
            return response
        self.calls.append(Call(method=request.method, path=path, template="?", channel_id=None,
                               body=body, status=404, at=time.monotonic()))
        await self._notify()
        return self._error(404, 0, "404: Not Found")

    async def _route(self, call: Call, params: dict[str, str]) -> web.StreamResponse:
        t = call.template
        if t == "/users/@me":
            return _json(self.bot)
        if t == "/oauth2/applications/@me":
            return _json(self._application())
        if t == "/gateway/bot":
            return _json({
                "url": self.gateway.url, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999,
                                        "reset_after": 0, "max_concurrency": 1},
            })
        if t.endswith("/commands"):
            return self._sync_commands(call, params)
        if t == "/channels/{channel_id}":
            found = self.channel(params["channel_id"])
            if found is None:
                return self._error(404, 10003, "Unknown Channel")
            return _json(found.payload(found.guild_id))
        if t == "/channels/{channel_id}/typing":
            return web.Response(status=204)
        if t == "/channels/{channel_id}/threads":
            return await self._start_thread(call, params)
        if t.endswith("/threads"):
            return await self._open_thread(call, params)
        if t.startswith("/channels/{channel_id}/messages"):
            response = self._limited(call, params["channel_id"],
                                     self._channel_message(call, params))
            if call.method == "POST" and response.status == 200:
                # Like Discord, the bot sees its own messages arrive on the gateway too.
                assert isinstance(response, web.Response) and response.body is not None
                await self.dispatch("MESSAGE_CREATE", json.loads(bytes(response.body)))
            return response
        if t.startswith("/interactions"):
            return self._callback(call, params)
        if t.startswith("/webhooks"):
            return self._webhook(call, params)
        return self._error(404, 0, "404: Not Found")

    def _application(self) -> dict[str, Any]:
        return {
            "id": self.application_id, "name": "bridge", "icon": None, "description": "",
            "bot_public": True, "bot_require_code_grant": False,
            "owner": user_payload(self.owner_id, "owner"), "team": None,
            "verify_key": "0" * 64, "flags": 0, "summary": "", "bot": self.bot,
            "interactions_endpoint_url": None, "redirect_uris": [],
        }

    def _sync_commands(self, call: Call, params: dict[str, str]) -> web.Response:
        scope = params.get("guild_id", "global")
        synced = []
        for command in call.body or []:
            synced.append({
                **command, "id": snowflake(), "application_id": self.application_id,
                "version": snowflake(), "default_member_permissions": None,
                **({"guild_id": scope} if scope != "global" else {}),
            })
        self.commands[scope] = synced
        return _json(synced)

    # ------------------------------------------------------------------ channel messages

    def _limited(self, call: Call, channel_id: str, handler: Callable[[], web.Response]
                 ) -> web.Response:
        now = time.monotonic()
        start, used = self._windows.get(channel_id, (now, 0))
        if now - start >= self.rate_window:
            start, used = now, 0
        reset_after = max(0.0, start + self.rate_window - now)
        if used >= self.rate_limit:
            self.rate_limited.append(call)
            response = _json(
                {"message": "You are being rate limited.", "retry_after": reset_after,
                 "global": False, "code": 20028},
                status=429,
            )
            remaining = 0
            response.headers["Retry-After"] = str(max(1, round(reset_after)))
            response.headers["Via"] = "1.1 google"
            response.headers["X-RateLimit-Scope"] = "user"
        else:
            used += 1
            self._windows[channel_id] = (start, used)
            remaining = self.rate_limit - used
            response = handler()
        response.headers["X-RateLimit-Limit"] = str(self.rate_limit)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset-After"] = f"{reset_after:.3f}"
        response.headers["X-RateLimit-Reset"] = f"{time.time() + reset_after:.3f}"
        response.headers["X-RateLimit-Bucket"] = "fake-channel-messages"
        return response

    def _channel_message(self, call: Call, params: dict[str, str]) -> Callable[[], web.Response]:
        def handle() -> web.Response:
            channel_id = params["channel_id"]
            channel = self.channel(channel_id)
            if channel is None:
                return self._error(404, 10003, "Unknown Channel")
            if channel.locked:
                return self._error(403, 160005, "Thread is locked")
            if call.method == "POST":
                return self._post_message(channel, call.body or {})
            message = self.messages.get(params["message_id"])
            if message is None or message["channel_id"] != channel_id:
                return self._error(404, 10008, "Unknown Message")
            if call.method == "DELETE":
                del self.messages[message["id"]]
                return web.Response(status=204)
            return self._edit_message(message, call.body or {})

        return handle

    def _post_message(self, channel: Channel, body: dict[str, Any]) -> web.Response:
        content = body.get("content") or ""
        if len(content) > 2000:
            return self._too_long()
        message = self._message(channel, self.bot, content)
        reference = body.get("message_reference")
        if reference:
            message["type"] = 19
            message["message_reference"] = {
                "message_id": reference.get("message_id"),
                "channel_id": channel.id,
                **({"guild_id": channel.guild_id} if channel.guild_id else {}),
            }
        if body.get("components"):
            message["components"] = body["components"]
        self.messages[message["id"]] = message
        return _json(message)

    def _edit_message(self, message: dict[str, Any], body: dict[str, Any]) -> web.Response:
        done = self._edits.get(message["id"], 0)
        if self.refuse_edits_after is not None and done >= self.refuse_edits_after:
            self.old_messages.add(message["id"])
        if message["id"] in self.old_messages:
            return self._error(400, 30046, "Maximum number of edits to messages older than "
                                           "1 hour reached. Try again later.")
        self._edits[message["id"]] = done + 1
        if "content" in body:
            content = body["content"] or ""
            if len(content) > 2000:
                return self._too_long()
            message["content"] = content
        if "components" in body:
            message["components"] = body["components"]
        message["edited_timestamp"] = now_iso()
        return _json(message)

    def _message(self, channel: Channel, author: dict[str, Any], content: str, *,
                 mentions: list[dict[str, Any]] | None = None,
                 mention_everyone: bool = False) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": snowflake(), "channel_id": channel.id, "author": author,
            "content": content, "timestamp": now_iso(), "edited_timestamp": None,
            "tts": False, "mention_everyone": mention_everyone, "mentions": mentions or [],
            "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
            "type": 0, "flags": 0, "components": [],
        }
        if channel.guild_id is not None:
            message["guild_id"] = channel.guild_id
        return message

    async def _open_thread(self, call: Call, params: dict[str, str]) -> web.StreamResponse:
        channel = self.channel(params["channel_id"])
        if channel is None or channel.guild_id is None:
            return self._error(404, 10003, "Unknown Channel")
        if not channel.threads_allowed:
            return self._error(403, 50013, "Missing Permissions")
        message_id = params["message_id"]
        guild = self.guilds[channel.guild_id]
        if message_id in guild.channels:
            return self._error(400, 160004, "A thread has already been created for this message")
        name = (call.body or {}).get("name") or ""
        if not 1 <= len(name) <= 100:
            return self._error(400, 50035, "Invalid Form Body")
        thread = Channel(id=message_id, guild_id=guild.id, name=name, type=PUBLIC_THREAD,
                         parent_id=channel.id, owner_id=self.bot_id)
        guild.channels[thread.id] = thread
        payload = thread.payload(guild.id)
        await self.dispatch("THREAD_CREATE", {**payload, "newly_created": True})
        return _json(payload, status=201)

    async def _start_thread(self, call: Call, params: dict[str, str]) -> web.StreamResponse:
        """A thread without a starter message: its own id; Discord defaults the type to a
        private thread, which needs Create Private Threads (not granted here)."""
        channel = self.channel(params["channel_id"])
        if channel is None:
            return self._error(404, 10003, "Unknown Channel")
        if channel.guild_id is None:
            return self._error(400, 50003, "Cannot execute action on a DM channel")
        if channel.type != TEXT_CHANNEL:
            return self._error(400, 50024, "Cannot execute action on this channel type")
        body = call.body or {}
        if not channel.threads_allowed or body.get("type", PRIVATE_THREAD) != PUBLIC_THREAD:
            return self._error(403, 50013, "Missing Permissions")
        name = body.get("name") or ""
        if not 1 <= len(name) <= 100:
            return self._error(400, 50035, "Invalid Form Body")
        guild = self.guilds[channel.guild_id]
        thread = Channel(id=snowflake(), guild_id=guild.id, name=name, type=PUBLIC_THREAD,
                         parent_id=channel.id, owner_id=self.bot_id)
        guild.channels[thread.id] = thread
        payload = thread.payload(guild.id)
        await self.dispatch("THREAD_CREATE", {**payload, "newly_created": True})
        started = self._message(channel, self.bot, name)
        started["type"] = THREAD_CREATED_MESSAGE
        started["message_reference"] = {"channel_id": thread.id, "guild_id": guild.id}
        self.messages[started["id"]] = started
        await self.dispatch("MESSAGE_CREATE", started)
        return _json(payload, status=201)

    # ------------------------------------------------------------------ interactions

    def _callback(self, call: Call, params: dict[str, str]) -> web.Response:
        interaction = self.interactions.get(params["token"])
        if interaction is None or interaction.id != params["interaction_id"]:
            return self._error(404, 10062, "Unknown interaction")
        if interaction.acknowledged:
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        interaction.acknowledged = True
        body = call.body or {}
        kind = body.get("type")
        data = body.get("data") or {}
        interaction.response_type = kind
        interaction.response_flags = int(data.get("flags") or 0)
        response: dict[str, Any] = {
            "interaction": {"id": interaction.id, "type": interaction.kind},
        }
        if kind in (6, 7) and interaction.message_id is not None:
            # DEFERRED_UPDATE_MESSAGE / UPDATE_MESSAGE: the component's message is the one
            # "@original" edits from now on.
            interaction.original_id = interaction.message_id
            if kind == 7 and interaction.message_id in self.messages:
                self._edit_message(self.messages[interaction.message_id], data)
        if kind in (4, 5):
            channel = self.channel(interaction.channel_id)
            assert channel is not None
            message = self._message(channel, self.bot, data.get("content") or "")
            message["flags"] = int(data.get("flags") or 0) | (128 if kind == 5 else 0)
            message["components"] = data.get("components") or []
            message["interaction_metadata"] = {"id": interaction.id, "type": interaction.kind,
                                               "user": self.bot}
            message["webhook_id"] = self.application_id
            self.messages[message["id"]] = message
            interaction.original_id = message["id"]
            response["interaction"]["response_message_id"] = message["id"]
            response["interaction"]["response_message_loading"] = kind == 5
            response["interaction"]["response_message_ephemeral"] = bool(
                int(data.get("flags") or 0) & 64
            )
            response["resource"] = {"type": kind, "message": message}
        if "with_response" not in call.query:
            return web.Response(status=204)
        return _json(response)

    def _webhook(self, call: Call, params: dict[str, str]) -> web.Response:
        interaction = self.interactions.get(params["token"])
        if interaction is None:
            return self._error(401, 50027, "Invalid Webhook Token")
        message_id = params.get("message_id")
        if message_id == "@original":
            message_id = interaction.original_id
        channel = self.channel(interaction.channel_id)
        assert channel is not None
        body = call.body or {}
        if call.method == "POST":
            content = body.get("content") or ""
            if len(content) > 2000:
                return self._too_long()
            message = self._message(channel, self.bot, content)
            message["webhook_id"] = self.application_id
            message["components"] = body.get("components") or []
            message["flags"] = int(body.get("flags") or 0)  # 64: ephemeral
            self.messages[message["id"]] = message
            interaction.followups.append(message["id"])
            return _json(message)
        message = self.messages.get(message_id or "")
        if message is None:
            return self._error(404, 10008, "Unknown Message")
        if call.method == "GET":
            return _json(message)
        if call.method == "DELETE":
            del self.messages[message["id"]]
            return web.Response(status=204)
        response = self._edit_message(message, body)
        if response.status == 200:
            message["flags"] = int(message.get("flags") or 0) & ~128
        return response

    # ------------------------------------------------------------------ errors

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return _json({"code": code, "message": message}, status=status)

    def _too_long(self) -> web.Response:
        return _json({
            "code": 50035, "message": "Invalid Form Body",
            "errors": {"content": {"_errors": [{
                "code": "BASE_TYPE_MAX_LENGTH",
                "message": "Must be 2000 or fewer in length.",
            }]}},
        }, status=400)
