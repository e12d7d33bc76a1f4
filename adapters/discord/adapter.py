"""The Discord bot: discord.py's sharded client wired to the core, its lifecycle and events.

Messages and reactions are taken from the raw gateway payloads (the same data discord.py's
``on_raw_*`` events carry, no message cache needed) and translated by the pure
``translate`` module; each is handled in a task the adapter owns, so shutdown can wait for
or cancel them. Slash commands and feedback buttons come through discord.py's command tree
and a persistent view.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket

from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.errors import BridgeError, ConfigError, PlatformError
from bridge.core.feedback import FeedbackPolicy
from bridge.core.models import (
    Feedback,
    InboundFeedbackButton,
    InboundMessage,
    Place,
    Platform,
    ReplyRecord,
)
from bridge.core.ports import Relay, ReplySink

from . import translate
from .checks import shard_problem
from .sink import DEFAULT_INTERVAL, NO_MENTIONS, ChannelSink, InteractionSink, ThreadRequest
from .translate import ChannelFacts, ChannelKind, Filters, ReplyMode
from .views import FeedbackView, layout_view

log = logging.getLogger(__name__)

# discord.py sleeps through rate limits inside a call; past this many seconds it raises
# ``discord.RateLimited`` instead (30 is the smallest value it accepts).
MAX_RATELIMIT_WAIT = 30.0
READY_TIMEOUT = 120.0

_MESSAGE_CONTENT_OFF = (
    "BRIDGE_DISCORD_MESSAGE_CONTENT is off: the bot answers mentions, DMs and slash commands; "
    "follow-ups in its threads need a new mention."
)


class _Client(discord.AutoShardedClient):
    """discord.py's sharded client, taking the gateway address from the REST API it uses."""

    def __init__(self, *, on_ready: Callable[[], None], **options: Any) -> None:
        super().__init__(**options)
        self._ready_callback = on_ready

    async def on_ready(self) -> None:
        self._ready_callback()

    async def launch_shards(self) -> None:
        # discord.py asks GET /gateway/bot only when it has to pick a shard count and
        # otherwise (and on every fresh reconnect) dials its built-in gateway address. Ask
        # always, so the REST base (DISCORD_API_BASE: a proxy, a test server) also decides
        # where the gateway is. The address is class-wide in discord.py, like Route.BASE.
        count, url, _ = await self.http.get_bot_gateway()
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        if self.shard_count is None:
            self.shard_count = count
        await super().launch_shards()


class DiscordAdapter:
    """The Discord side of the bridge (``bridge.core.ports.PlatformAdapter``)."""

    def __init__(
        self,
        *,
        settings: Settings,
        relay: Relay,
        metrics: Metrics,
        edit_interval: float = DEFAULT_INTERVAL,
        guild_ready_timeout: float = 2.0,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self._settings = settings
        self._relay = relay
        self._metrics = metrics
        self._interval = edit_interval
        self._guild_ready_timeout = guild_ready_timeout
        self._ready_timeout = ready_timeout
        self._filters = Filters.of(
            settings.discord_allowed_guilds, settings.discord_allowed_channels
        )
        # Only reactions that mean something reach the core (saves a thread lookup for
        # every other emoji); the core's own policy says which those are.
        self._reactions = FeedbackPolicy.from_settings(settings)
        self._client: _Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._intake = False
        self._bot_id = ""
        self._tree: app_commands.CommandTree[_Client] | None = None

    @property
    def name(self) -> str:
        return Platform.DISCORD.value

    @property
    def client(self) -> discord.Client | None:
        """The discord.py client once started (for the CLI's checks and for tests)."""
        return self._client

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        token = self._token()
        shard_ids, shard_count = self._shards()
        command_guilds = self._command_guilds()
        discord.http.Route.BASE = self._settings.discord_api_base.rstrip("/")
        if not self._settings.discord_message_content:
            log.info(_MESSAGE_CONTENT_OFF)
        if shard_ids is not None and 0 not in shard_ids:
            log.info("Discord DMs arrive on shard 0 only; this process does not run it.")

        self._ready = asyncio.Event()
        client = self._build_client(shard_ids, shard_count)
        self._client = client
        try:
            await self._login(client, token)
            if client.user is None:
                raise PlatformError("Discord login returned no bot user.")
            self._bot_id = str(client.user.id)
            await self._sync_commands(client, command_guilds)
            self._intake = True
            self._runner = asyncio.create_task(self._connect(client), name="discord-gateway")
            await self._await_ready()
        except BaseException:
            self._intake = False
            await self._shutdown_client()
            raise
        log.info("Discord connected as bot user %s.", self._bot_id)

    async def stop_intake(self) -> None:
        self._intake = False

    async def close(self) -> None:
        self._intake = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown_client()

    @property
    def handling(self) -> int:
        """Events being handled now (answers rendering, reactions, button presses)."""
        return sum(1 for task in self._tasks if not task.done())

    async def settled(self) -> None:
        """Wait until the events taken so far are fully handled (answers rendered and
        remembered); for tests and tools that need a quiet point."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def is_ready(self) -> bool:
        client = self._client
        return (
            client is not None
            and client.is_ready()
            and not client.is_closed()
            and self._runner is not None
            and not self._runner.done()
        )

    # ------------------------------------------------------------------ start-up steps

    def _token(self) -> str:
        secret = self._settings.discord_bot_token
        token = secret.get_secret_value().strip() if secret is not None else ""
        if not token:
            raise ConfigError("DISCORD_BOT_TOKEN is not set.")
        return token

    def _shards(self) -> tuple[list[int] | None, int | None]:
        ids = list(self._settings.discord_shard_ids) or None
        count = self._settings.discord_shard_count
        problem = shard_problem(ids or (), count)
        if problem:
            raise ConfigError(problem)
        return ids, count

    def _command_guilds(self) -> list[int]:
        guilds = []
        for value in self._settings.discord_command_guilds:
            guild = translate.snowflake(value)
            if guild is None:
                raise ConfigError(
                    f"BRIDGE_DISCORD_COMMAND_GUILDS: {value!r} is not a Discord server id."
                )
            guilds.append(int(guild))
        return guilds

    def _intents(self) -> discord.Intents:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        intents.guild_reactions = True
        intents.dm_reactions = True
        intents.message_content = self._settings.discord_message_content
        return intents

    def _build_client(self, shard_ids: list[int] | None, shard_count: int | None) -> _Client:
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._count_rate_limited)
        options: dict[str, Any] = {
            "intents": self._intents(),
            "allowed_mentions": NO_MENTIONS,
            "max_ratelimit_timeout": MAX_RATELIMIT_WAIT,
            "max_messages": None,
            "chunk_guilds_at_startup": False,
            "guild_ready_timeout": self._guild_ready_timeout,
            "http_trace": trace,
            "shard_count": shard_count,
        }
        if shard_ids is not None:
            options["shard_ids"] = shard_ids
        # The bridge never joins voice: discord.py's warnings about voice libraries would
        # only alarm operators.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        client = _Client(on_ready=self._ready.set, **options)
        tree: app_commands.CommandTree[_Client] = app_commands.CommandTree(client)
        self._add_commands(tree)
        self._tree = tree
        if self._settings.discord_feedback_buttons:
            client.add_view(FeedbackView(self._on_feedback_button))
        self._hook(client, "MESSAGE_CREATE", self._on_message_payload)
        self._hook(client, "MESSAGE_REACTION_ADD", lambda data: self._on_reaction(data, True))
        self._hook(client, "MESSAGE_REACTION_REMOVE", lambda data: self._on_reaction(data, False))
        return client

    def _hook(self, client: discord.Client, event: str, handler: Callable[[Any], None]) -> None:
        """Also hand a raw gateway dispatch to ``handler`` after discord.py parsed it."""
        parsers = client._connection.parsers
        original = parsers[event]

        def parse(data: Any) -> None:
            try:
                original(data)
            finally:
                try:
                    handler(data)
                except Exception:  # an exception here would end the shard's reader
                    log.exception("Discord %s handler failed", event)

        parsers[event] = parse

    async def _count_rate_limited(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if params.response.status == 429:
            self._metrics.platform_rate_limited.labels("discord").inc()

    async def _login(self, client: discord.Client, token: str) -> None:
        try:
            await client.login(token)
        except discord.LoginFailure as exc:
            raise ConfigError(
                "Discord refused DISCORD_BOT_TOKEN (401 Unauthorized): copy the token again "
                "from the Bot page of your application in the Developer Portal."
            ) from exc
        except discord.HTTPException as exc:
            raise PlatformError(
                f"Discord login failed at {discord.http.Route.BASE}: HTTP {exc.status}, "
                f"code {exc.code}."
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PlatformError(
                f"Could not reach Discord at {discord.http.Route.BASE} (DISCORD_API_BASE): "
                f"{type(exc).__name__}."
            ) from exc

    async def _sync_commands(self, client: discord.Client, guilds: list[int]) -> None:
        tree = self._tree
        if tree is None:
            return
        try:
            if guilds:
                for guild_id in guilds:
                    guild = discord.Object(id=guild_id)
                    tree.copy_global_to(guild=guild)
                    await tree.sync(guild=guild)
            else:
                await tree.sync()
        except discord.Forbidden as exc:
            log.warning(
                "Could not register the slash commands (HTTP 403, code %s): invite the bot "
                "with the applications.commands scope (chatbase-bridge discord-invite) and "
                "check BRIDGE_DISCORD_COMMAND_GUILDS lists servers the bot is in.",
                exc.code,
            )
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning("Could not register the slash commands: %s", type(exc).__name__)

    async def _connect(self, client: discord.Client) -> None:
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._ready.is_set():
                log.error("The Discord gateway connection ended: %s", _gateway_problem(exc))
            raise

    async def _await_ready(self) -> None:
        runner = self._runner
        assert runner is not None
        ready = asyncio.create_task(self._ready.wait(), name="discord-ready")
        try:
            done, _ = await asyncio.wait(
                {ready, runner}, timeout=self._ready_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        if ready in done and self._ready.is_set():
            return
        if runner in done:
            exc = runner.exception()
            if exc is None:
                raise PlatformError("The Discord gateway closed before the bot was ready.")
            problem = _gateway_problem(exc)
            if isinstance(problem, BridgeError):
                raise problem from exc
            raise PlatformError(f"Discord gateway failed: {problem}") from exc
        raise PlatformError(
            f"The Discord gateway did not become ready within {self._ready_timeout:.0f} s."
        )

    async def _shutdown_client(self) -> None:
        client, runner = self._client, self._runner
        self._runner = None
        if client is not None and not client.is_closed():
            with contextlib.suppress(Exception):
                await client.close()
        if runner is not None:
            if not runner.done():
                # close() ends connect() cleanly; a shard stuck reconnecting is cancelled.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait({runner}, timeout=5.0)
                runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner

    # ------------------------------------------------------------------ owned tasks

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(self._guarded(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(coro: Coroutine[Any, Any, None], name: str) -> None:
        # Event handlers run detached from the gateway reader: a failure is logged here
        # (without message text), never left as an unretrieved task exception.
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Discord %s failed", name)

    # ------------------------------------------------------------------ messages

    def _on_message_payload(self, data: Any) -> None:
        if self._intake:
            self._spawn(self._handle_message(data, time.monotonic()), "discord-message")

    def _facts(self, data: Any) -> ChannelFacts:
        client = self._client
        raw = data.get("channel_id") if isinstance(data, Mapping) else None
        channel_id = translate.snowflake(raw)
        guild_id = translate.guild_of(data)
        if client is None or channel_id is None or guild_id is None:
            return ChannelFacts(kind=ChannelKind.OTHER)
        guild = client.get_guild(int(guild_id))
        channel = guild.get_channel_or_thread(int(channel_id)) if guild is not None else None
        return _channel_facts(channel, guild)

    async def _handle_message(self, data: Any, received_at: float) -> None:
        decision = translate.message_decision(
            data,
            bot_id=self._bot_id,
            facts=self._facts(data),
            filters=self._filters,
            received_at=received_at,
        )
        if decision is None or (
            not decision.mentioned and not await self._relay.has_conversation(decision.message)
        ):
            self._metrics.events.labels(self.name, "ignored").inc()
            return
        sink = self._message_sink(decision)
        await self._answer(decision.message, sink)

    def _message_sink(self, decision: translate.MessageDecision) -> ChannelSink:
        place = decision.message.place
        if decision.mode is ReplyMode.OPEN_THREAD:
            assert decision.thread_name is not None
            return self._channel_sink(
                place.channel,
                open_thread=ThreadRequest(
                    parent_id=place.channel,
                    message_id=decision.message.message_id,
                    name=decision.thread_name,
                ),
            )
        if decision.mode is ReplyMode.INLINE:
            return self._channel_sink(place.channel, reply_to=decision.message.message_id)
        return self._channel_sink(decision.target_channel)

    def _channel_sink(
        self,
        channel_id: str,
        *,
        reply_to: str | None = None,
        open_thread: ThreadRequest | None = None,
    ) -> ChannelSink:
        assert self._client is not None
        return ChannelSink(
            http=self._client.http,
            metrics=self._metrics,
            channel_id=channel_id,
            interval=self._interval,
            reply_to=reply_to,
            open_thread=open_thread,
            view_factory=layout_view if self._settings.discord_feedback_buttons else None,
        )

    async def _answer(
        self, message: InboundMessage, sink: ChannelSink | InteractionSink
    ) -> None:
        # The one catch-all of this adapter: the core finishes every reply itself, so
        # anything reaching here is a bug; log it without the message text.
        try:
            await self._relay.handle_message(message, sink)
        except Exception:
            log.exception("Discord message %s could not be handled", message.event_id)
        finally:
            await sink.close()

    # ------------------------------------------------------------------ reactions

    def _on_reaction(self, data: Any, added: bool) -> None:
        if self._intake:
            self._spawn(self._handle_reaction(data, added, time.time()), "discord-reaction")

    async def _thread_parent(self, data: Any) -> str | None:
        """The parent channel when the reaction is inside a thread (from the cache, or one
        REST call for a thread the cache does not hold, e.g. archived before a restart)."""
        client = self._client
        guild_id = translate.guild_of(data)
        raw = data.get("channel_id") if isinstance(data, Mapping) else None
        channel_id = translate.snowflake(raw)
        if client is None or guild_id is None or channel_id is None:
            return None
        guild = client.get_guild(int(guild_id))
        channel: Any = guild.get_channel_or_thread(int(channel_id)) if guild else None
        if channel is None:
            try:
                channel = await client.fetch_channel(int(channel_id))
            except (discord.HTTPException, discord.InvalidData, discord.RateLimited) as exc:
                log.info("reaction in an unknown channel: %s", type(exc).__name__)
                return None
        return str(channel.parent_id) if isinstance(channel, discord.Thread) else None

    async def _handle_reaction(self, data: Any, added: bool, wall_time: float) -> None:
        reaction = translate.reaction_event(
            data, added=added, bot_id=self._bot_id, filters=self._filters,
            received_at=wall_time,
        )
        if reaction is None or self._reactions.meaning(reaction.emoji) is None:
            return
        parent = await self._thread_parent(data)
        if parent is not None:
            # The core files replies under the conversation's channel: a thread's parent.
            reaction = dataclasses.replace(reaction, channel=parent)
        # Every part of a reply sits in the channel (or thread) of the message reacted to.
        written_in = str(data["channel_id"])

        def open_sink(record: ReplyRecord) -> ReplySink:
            return self._channel_sink(written_in)

        try:
            await self._relay.handle_reaction(reaction, open_sink)
        except Exception:
            log.exception("Discord reaction on %s could not be handled", reaction.message_id)

    # ------------------------------------------------------------------ interactions

    def _add_commands(self, tree: app_commands.CommandTree[Any]) -> None:
        @app_commands.command(name="ask", description="Ask the assistant a question.")
        @app_commands.describe(question="What you want to know")
        async def ask(interaction: discord.Interaction[Any], question: str) -> None:
            await self._on_ask(interaction, question)

        @app_commands.command(
            name="reset", description="Start a new conversation with the assistant here."
        )
        async def reset(interaction: discord.Interaction[Any]) -> None:
            await self._on_reset(interaction)

        tree.add_command(ask)
        tree.add_command(reset)

    def _interaction_place(self, interaction: discord.Interaction[Any]) -> Place:
        guild_id = str(interaction.guild_id) if interaction.guild_id is not None else None
        channel = interaction.channel
        return translate.command_place(
            guild_id=guild_id,
            channel_id=str(interaction.channel_id),
            facts=_channel_facts(channel, interaction.guild),
        )

    async def _on_ask(self, interaction: discord.Interaction[Any], question: str) -> None:
        received_at = time.monotonic()
        place = self._interaction_place(interaction)
        if not self._intake:
            await _reply_ephemeral(interaction, "The assistant is restarting; ask again soon.")
            return
        if not self._filters.allows(
            place.workspace or None, place.thread or place.channel, place.channel
        ):
            await _reply_ephemeral(interaction, "The assistant does not answer in this channel.")
            return
        try:
            # Discord waits 3 s for an acknowledgement; everything slow comes after it.
            await interaction.response.defer(thinking=True)
        except discord.HTTPException as exc:
            # 40060: another process (same shard by mistake) acknowledged it first.
            log.info("could not defer /ask %s: code %s", interaction.id, exc.code)
            return
        message = translate.ask_message(
            interaction_id=str(interaction.id),
            user_id=str(interaction.user.id),
            question=question,
            place=place,
            received_at=received_at,
        )
        sink = InteractionSink(
            interaction=interaction,
            metrics=self._metrics,
            interval=self._interval,
            view_factory=layout_view if self._settings.discord_feedback_buttons else None,
        )
        self._spawn(self._answer(message, sink), "discord-ask")

    async def _on_reset(self, interaction: discord.Interaction[Any]) -> None:
        place = self._interaction_place(interaction)
        try:
            existed = await self._relay.reset(place, str(interaction.user.id))
        except Exception:
            log.exception("Discord /reset failed")
            await _reply_ephemeral(interaction, "Could not reset right now; try again shortly.")
            return
        text = (
            "Started a new conversation: your next question begins afresh."
            if existed
            else "There was no conversation to reset here; your next question starts one."
        )
        await _reply_ephemeral(interaction, text)

    async def _on_feedback_button(
        self, interaction: discord.Interaction[Any], feedback: Feedback
    ) -> None:
        if interaction.message is None:
            return
        try:
            # A silent acknowledgement: the press needs no visible answer.
            await interaction.response.defer()
        except discord.HTTPException as exc:
            log.info("could not acknowledge a feedback button: code %s", exc.code)
            return
        # Replies are filed under the conversation's channel: a thread's parent.
        place = self._interaction_place(interaction)
        press = InboundFeedbackButton(
            platform=Platform.DISCORD,
            workspace=place.workspace,
            channel=place.channel,
            message_id=str(interaction.message.id),
            user=str(interaction.user.id),
            feedback=feedback,
            event_id=str(interaction.id),
        )
        self._spawn(self._handle_press(press), "discord-feedback-button")

    async def _handle_press(self, press: InboundFeedbackButton) -> None:
        try:
            await self._relay.handle_feedback_button(press)
        except Exception:
            log.exception("Discord feedback button on %s could not be handled", press.message_id)


def _channel_facts(channel: Any, guild: discord.Guild | None) -> ChannelFacts:
    if isinstance(channel, discord.Thread):
        return ChannelFacts(kind=ChannelKind.THREAD, parent_id=str(channel.parent_id))
    if isinstance(channel, discord.TextChannel) and guild is not None and guild.me is not None:
        permissions = channel.permissions_for(guild.me)
        return ChannelFacts(
            kind=ChannelKind.TEXT,
            can_open_thread=permissions.create_public_threads
            and permissions.send_messages_in_threads,
        )
    if isinstance(channel, discord.TextChannel):
        return ChannelFacts(kind=ChannelKind.TEXT)
    return ChannelFacts(kind=ChannelKind.OTHER)


def _gateway_problem(exc: BaseException) -> BaseException:
    """A plain-words error for why the gateway would not (or no longer) take the bot."""
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return ConfigError(
            "Discord refused the Message Content intent: enable 'Message Content Intent' "
            "on the Bot page of your application in the Developer Portal, or unset "
            "BRIDGE_DISCORD_MESSAGE_CONTENT."
        )
    if isinstance(exc, discord.ConnectionClosed) and exc.code == 4004:
        return ConfigError(
            "The Discord gateway refused DISCORD_BOT_TOKEN (close code 4004): copy the token "
            "again from the Bot page in the Developer Portal."
        )
    if isinstance(exc, discord.ConnectionClosed) and exc.code in (4010, 4011):
        return ConfigError(
            f"The Discord gateway refused the sharding (close code {exc.code}): check "
            "BRIDGE_DISCORD_SHARD_IDS and BRIDGE_DISCORD_SHARD_COUNT."
        )
    if isinstance(exc, discord.ConnectionClosed) and exc.code in (4013, 4014):
        return ConfigError(f"The Discord gateway refused the intents (close code {exc.code}).")
    if isinstance(exc, discord.GatewayNotFound):
        return PlatformError(
            f"GET /gateway/bot failed at {discord.http.Route.BASE} (DISCORD_API_BASE)."
        )
    return exc


async def _reply_ephemeral(interaction: discord.Interaction[Any], text: str) -> None:
    try:
        await interaction.response.send_message(
            text, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
    except discord.HTTPException as exc:
        log.info("could not answer interaction %s: code %s", interaction.id, exc.code)
