"""The Discord bot: discord.py's sharded client wired to the core, its lifecycle and events.

Messages and reactions come through discord.py's public events (``on_message``, which fires
for every message whether or not its channel is cached, and ``on_raw_reaction_add``/
``remove``, which need no message cache), are turned into the gateway payload's fields and
translated by the pure ``translate`` module; each is handled in a task the adapter owns
(``adapters.common.EventTasks``), so shutdown can wait for or cancel them. Slash commands,
feedback buttons and Stop buttons come through discord.py's command tree, a persistent view
and ``on_interaction`` (``adapters.discord.views``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
from discord import app_commands

from adapters.common import SOMETHING_WENT_WRONG, EventTasks, apologise
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.errors import BridgeError, ConfigError, PlatformError
from bridge.core.feedback import FeedbackPolicy
from bridge.core.history import History
from bridge.core.identity import event_handle
from bridge.core.models import (
    Feedback,
    InboundFeedbackButton,
    InboundMessage,
    InboundReaction,
    Place,
    Platform,
    ReplyRecord,
)
from bridge.core.ports import Relay, ReplySink

from . import translate
from .checks import shard_problem
from .history import HistoryCommand, Where
from .replies import defer, edit_response, follow_up_ephemeral, reply_ephemeral
from .sink import (
    DEFAULT_INTERVAL,
    NO_MENTIONS,
    ChannelSink,
    InteractionSink,
    ThreadRequest,
    ViewFactory,
)
from .translate import ChannelFacts, ChannelKind, Filters, ReplyMode
from .views import FeedbackView, layout_view, parse_stop, stop_view

log = logging.getLogger(__name__)

# discord.py sleeps through rate limits inside a call; past this many seconds it raises
# ``discord.RateLimited`` instead (30 is the smallest value it accepts).
MAX_RATELIMIT_WAIT = 30.0
READY_TIMEOUT = 120.0
# discord.py always talks to Discord's own REST API and gateway: its only way to another
# base is a class attribute of discord.http shared by every client in the process, which
# the bridge never sets. Tests reach a fake through the public ``Client(connector=...)``
# ("setting a dns resolver or sslcontext", discord.py's Client documentation) instead.
DISCORD_API = "https://discord.com/api/v10"

ONLY_ASKER_MAY_STOP = "Only the person who asked, or a moderator, can stop this answer."

_MESSAGE_CONTENT_OFF = (
    "BRIDGE_DISCORD_MESSAGE_CONTENT is off: the bot answers mentions, DMs and slash commands; "
    "follow-ups in its threads need a new mention."
)


class _VoiceNoise(logging.Filter):
    """Drops discord.py's start-up warnings about missing voice libraries: the bridge never
    joins voice, so they would only alarm operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


logging.getLogger("discord.client").addFilter(_VoiceNoise())


class _Client(discord.AutoShardedClient):
    """discord.py's sharded client, handing its public events to the adapter."""

    def __init__(self, *, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self._adapter = adapter

    async def on_ready(self) -> None:
        self._adapter._ready.set()

    async def on_message(self, message: discord.Message) -> None:
        self._adapter._on_message(message)

    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        self._adapter._on_reaction(event, added=True)

    async def on_raw_reaction_remove(self, event: discord.RawReactionActionEvent) -> None:
        self._adapter._on_reaction(event, added=False)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        # Stop buttons are routed by parsing their custom id, whatever the message shows
        # now: a press that races the answer's last edit (which removes the button) still
        # arrives and must be acknowledged. A persistent view needs fixed custom ids, and
        # discord.py's dynamic items look the button up in the pressed message's current
        # components, so they would drop that press
        # (https://discordpy.readthedocs.io/en/stable/api.html#discord.on_interaction).
        if interaction.type is discord.InteractionType.component and interaction.data:
            stop = parse_stop(interaction.data.get("custom_id"))
            if stop is not None:
                await self._adapter._on_stop_button(interaction, *stop)


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
        connector: Callable[[], aiohttp.BaseConnector] | None = None,
        history: History | None = None,
    ) -> None:
        """``connector`` makes the aiohttp connector for discord.py's REST and gateway
        connections, one per start (discord.py closes it with the client); tests pass one
        whose resolver sends discord.com and the gateway to a fake. ``history`` adds
        /history (the person's past conversations)."""
        self._settings = settings
        self._relay = relay
        self._metrics = metrics
        self._interval = edit_interval
        self._guild_ready_timeout = guild_ready_timeout
        self._ready_timeout = ready_timeout
        self._connector = connector
        self._filters = Filters.of(
            settings.discord_allowed_guilds, settings.discord_allowed_channels
        )
        # Only reactions that mean something reach the core (saves a thread lookup for
        # every other emoji); the core's own policy says which those are.
        self._reactions = FeedbackPolicy.from_settings(settings)
        self._client: _Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._tasks = EventTasks(platform="discord")
        self._bot_id = ""
        self._tree: app_commands.CommandTree[_Client] | None = None
        self._history = None if history is None else HistoryCommand(
            history=history, relay=relay, tasks=self._tasks, metrics=metrics,
            where=self._interaction_where, refusal=self._ask_refusal,
            mention_needed=not settings.discord_message_content,
        )

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
        self._refuse_other_api_base()
        if not self._settings.discord_message_content:
            log.info(_MESSAGE_CONTENT_OFF)
        if shard_ids is not None and 0 not in shard_ids:
            log.info("Discord DMs arrive on shard 0 only; this process does not run it.")
        self._ready = asyncio.Event()
        client = self._build_client(shard_ids, shard_count)
        self._client = client
        try:
            await self._connect_bot(client, token, command_guilds)
        except BaseException:
            self._tasks.stop_intake()
            await self._shutdown_client()
            raise
        log.info("Discord connected as bot user %s.", self._bot_id)

    async def _connect_bot(self, client: _Client, token: str, command_guilds: list[int]) -> None:
        await self._login(client, token)
        if client.user is None:
            raise PlatformError("Discord login returned no bot user.")
        self._bot_id = str(client.user.id)
        await self._sync_commands(client, command_guilds)
        self._tasks.open()
        self._runner = asyncio.create_task(self._connect(client), name="discord-gateway")
        await self._await_ready()

    async def stop_intake(self) -> None:
        self._tasks.stop_intake()

    async def close(self) -> None:
        if self._tasks.closed:
            return
        await self._tasks.close()
        await self._shutdown_client()

    @property
    def in_flight(self) -> int:
        """Events being handled now (answers rendering, reactions, button presses)."""
        return self._tasks.in_flight

    async def wait_idle(self) -> None:
        """Wait until the events taken so far are fully handled (answers rendered and
        remembered); for tests and tools that need a quiet point."""
        await self._tasks.wait_idle()

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

    def _refuse_other_api_base(self) -> None:
        # DISCORD_API_BASE still serves `chatbase-bridge check` and `discord-invite`, which
        # make their own REST calls; the bot cannot follow it (see DISCORD_API above), and
        # silently bypassing a configured proxy would be worse than saying so.
        if self._settings.discord_api_base.rstrip("/") != DISCORD_API:
            raise ConfigError(
                "DISCORD_API_BASE is set, but discord.py connects the bot only to Discord's "
                f"own API ({DISCORD_API}); unset DISCORD_API_BASE to run the bot."
            )

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
        if self._connector is not None:
            options["connector"] = self._connector()
        client = _Client(adapter=self, **options)
        tree: app_commands.CommandTree[_Client] = app_commands.CommandTree(client)
        self._add_commands(tree)
        self._tree = tree
        if self._settings.discord_feedback_buttons:
            client.add_view(FeedbackView(self._on_feedback_button))
        if self._history is not None:
            client.add_dynamic_items(self._history.button())
        return client

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
                f"Discord login failed: HTTP {exc.status}, code {exc.code}."
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PlatformError(
                f"Could not reach Discord at {DISCORD_API}: {type(exc).__name__}."
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

    # ------------------------------------------------------------------ messages

    def _on_message(self, message: discord.Message) -> None:
        if not self._tasks.taking:
            return
        decision = translate.message_decision(
            translate.message_payload(message),
            bot_id=self._bot_id,
            facts=_channel_facts(message.channel, message.guild),
            filters=self._filters,
        )
        if decision is None:
            self._metrics.events.labels(self.name, "ignored").inc()
        elif decision.mentioned:
            self._answer(decision)
        else:
            self._tasks.spawn(self._answer_follow_up(decision), name="discord-follow-up")

    async def _answer_follow_up(self, decision: translate.MessageDecision) -> None:
        if await self._relay.has_conversation(decision.message):
            self._answer(decision)
        else:
            self._metrics.events.labels(self.name, "ignored").inc()

    def _answer(self, decision: translate.MessageDecision) -> None:
        sink = self._message_sink(decision)
        self._tasks.spawn(self._render(decision.message, sink), name="discord-message",
                          notice=lambda: apologise(sink))

    async def _render(self, message: InboundMessage, sink: ChannelSink | InteractionSink) -> None:
        try:
            await self._relay.handle_message(message, sink)
        finally:
            await sink.close()

    def _message_sink(self, decision: translate.MessageDecision) -> ChannelSink:
        message = decision.message
        place = message.place
        live = _stop_view_of(message)
        if decision.mode is ReplyMode.OPEN_THREAD:
            assert decision.thread_name is not None
            return self._channel_sink(
                place.channel,
                open_thread=ThreadRequest(
                    parent_id=place.channel,
                    message_id=message.message_id,
                    name=decision.thread_name,
                ),
                live_view=live,
            )
        if decision.mode is ReplyMode.INLINE:
            return self._channel_sink(place.channel, reply_to=message.message_id,
                                      live_view=live)
        return self._channel_sink(decision.target_channel, live_view=live)

    def _channel_sink(
        self,
        channel_id: str,
        *,
        reply_to: str | None = None,
        open_thread: ThreadRequest | None = None,
        live_view: ViewFactory | None = None,
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
            live_view=live_view,
        )

    # ------------------------------------------------------------------ reactions

    def _on_reaction(self, event: discord.RawReactionActionEvent, *, added: bool) -> None:
        if not self._tasks.taking:
            return
        reaction = translate.reaction_event(
            translate.reaction_payload(event), added=added, bot_id=self._bot_id,
            filters=self._filters, received_at=time.time(),
        )
        if reaction is None or self._reactions.meaning(reaction.emoji) is None:
            return
        # No notice on failure: a reaction has no reply of its own to carry one.
        self._tasks.spawn(self._handle_reaction(reaction, event), name="discord-reaction")

    async def _thread_parent(self, event: discord.RawReactionActionEvent) -> str | None:
        """The parent channel when the reaction is inside a thread (from the cache, or one
        REST call for a thread the cache does not hold, e.g. archived before a restart)."""
        client = self._client
        if client is None or event.guild_id is None:
            return None
        guild = client.get_guild(event.guild_id)
        channel: Any = guild.get_channel_or_thread(event.channel_id) if guild else None
        if channel is None:
            try:
                channel = await client.fetch_channel(event.channel_id)
            except (discord.HTTPException, discord.InvalidData, discord.RateLimited) as exc:
                log.info("reaction in an unknown channel: %s", type(exc).__name__)
                return None
        return str(channel.parent_id) if isinstance(channel, discord.Thread) else None

    async def _handle_reaction(
        self, reaction: InboundReaction, event: discord.RawReactionActionEvent
    ) -> None:
        parent = await self._thread_parent(event)
        if parent is not None:
            # The core files replies under the conversation's channel: a thread's parent.
            reaction = dataclasses.replace(reaction, channel=parent)
        # Every part of a reply sits in the channel (or thread) of the message reacted to.
        written_in = str(event.channel_id)

        def open_sink(record: ReplyRecord) -> ReplySink:
            return self._channel_sink(written_in)

        await self._relay.handle_reaction(reaction, open_sink)

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
        if self._history is not None:
            tree.add_command(self._history.command())

    def _interaction_place(self, interaction: discord.Interaction[Any]) -> Place:
        guild_id = str(interaction.guild_id) if interaction.guild_id is not None else None
        channel = interaction.channel
        return translate.command_place(
            guild_id=guild_id,
            channel_id=str(interaction.channel_id),
            facts=_channel_facts(channel, interaction.guild),
        )

    def _interaction_where(self, interaction: discord.Interaction[Any]) -> Where:
        return Where(self._interaction_place(interaction),
                     _channel_facts(interaction.channel, interaction.guild))

    async def _on_ask(self, interaction: discord.Interaction[Any], question: str) -> None:
        place = self._interaction_place(interaction)
        refusal = self._ask_refusal(place)
        if refusal is not None:
            await reply_ephemeral(interaction, refusal)
            return
        # Discord waits 3 s for an acknowledgement; everything slow comes after it.
        if not await defer(interaction, ephemeral=False, what="/ask"):
            return
        message = translate.ask_message(
            interaction_id=str(interaction.id),
            user_id=str(interaction.user.id),
            question=question,
            place=place,
        )
        sink = InteractionSink(
            interaction=interaction,
            metrics=self._metrics,
            interval=self._interval,
            view_factory=layout_view if self._settings.discord_feedback_buttons else None,
            live_view=_stop_view_of(message),
        )
        self._tasks.spawn(self._render(message, sink), name="discord-ask",
                          notice=lambda: apologise(sink))

    def _ask_refusal(self, place: Place) -> str | None:
        """Why /ask is not answered here, in words for the asker; None to answer."""
        if not self._tasks.taking:
            return "The assistant is restarting; ask again soon."
        if not self._filters.allows(
            place.workspace or None, place.thread or place.channel, place.channel
        ):
            return "The assistant does not answer in this channel."
        if not self._relay.answers_at(place):
            # BRIDGE_ROUTES names no agent here and there is no CHATBASE_AGENT_ID.
            return "No agent answers in this channel."
        return None

    async def _on_reset(self, interaction: discord.Interaction[Any]) -> None:
        # Discord waits 3 s for an acknowledgement and Redis may be slower than that: the
        # ephemeral "thinking" response goes out first, the answer replaces it.
        if not await defer(interaction, ephemeral=True, what="/reset"):
            return
        place = self._interaction_place(interaction)
        try:
            existed = await self._relay.reset(place, str(interaction.user.id))
        except Exception:
            log.exception("Discord /reset failed")
            await edit_response(interaction, "Could not reset right now; try again shortly.")
            return
        text = (
            "Started a new conversation: your next question begins afresh."
            if existed
            else "There was no conversation to reset here; your next question starts one."
        )
        await edit_response(interaction, text)

    async def _on_feedback_button(
        self, interaction: discord.Interaction[Any], feedback: Feedback
    ) -> None:
        # A silent acknowledgement, first on every path: the press needs no visible answer.
        if not await defer(interaction, ephemeral=False, what="a feedback button"):
            return
        if interaction.message is None:
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
        self._tasks.spawn(
            self._relay.handle_feedback_button(press), name="discord-feedback-button",
            notice=lambda: follow_up_ephemeral(interaction, SOMETHING_WENT_WRONG),
        )

    async def _on_stop_button(
        self, interaction: discord.Interaction[Any], asker: str, event_id: str
    ) -> None:
        # Only the asker, or someone who may manage messages in this channel (the
        # interaction's resolved permissions, overwrites included), stops an answer.
        if str(interaction.user.id) != asker and not interaction.permissions.manage_messages:
            await reply_ephemeral(interaction, ONLY_ASKER_MAY_STOP)
            return
        # A silent acknowledgement first, within Discord's 3 s: the answer's own final edit
        # is what the presser sees.
        if not await defer(interaction, ephemeral=False, what="a Stop button"):
            return
        self._tasks.spawn(self._stop(event_id), name="discord-stop-button",
                          notice=lambda: follow_up_ephemeral(interaction, SOMETHING_WENT_WRONG))

    async def _stop(self, event_id: str) -> None:
        if not await self._relay.stop(event_handle(Platform.DISCORD, event_id)):
            # Already finished, or running on another process (told through Redis).
            log.info("Stop pressed for an answer not running in this process")


def _stop_view_of(message: InboundMessage) -> ViewFactory:
    """The Stop button of the answer to ``message``, while it is written."""
    return lambda: stop_view(message.author, message.event_id)


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
        return PlatformError(f"GET /gateway/bot failed at {DISCORD_API}.")
    return exc


