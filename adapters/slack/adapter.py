"""The Slack platform adapter: Bolt (AsyncApp) wiring, transports and lifecycle.

Socket Mode when ``SLACK_APP_TOKEN`` is set, else the HTTP Events API at ``/slack/events``
on the bridge's own HTTP server, verified with ``SLACK_SIGNING_SECRET``. Every listener only
translates the payload and hands the work to a task this adapter owns, so Slack's
three-second acknowledgement always holds (Bolt runs with ``process_before_response`` and
acknowledges when the listener returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common import SOMETHING_WENT_WRONG, EventTasks, apologise
from adapters.slack import home, translate
from adapters.slack.agent import AgentSessions, SuggestedPrompts
from adapters.slack.checks import BAD_TOKEN
from adapters.slack.home import HomeTab
from adapters.slack.sink import ReplyTarget, SlackApi, SlackPacing, SlackSink
from adapters.slack.translate import FEEDBACK_ACTION_ID, BotIdentity, Scope
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.errors import ConfigError, PlatformError
from bridge.core.history import History
from bridge.core.identity import thread_handle
from bridge.core.models import InboundMessage, Platform, ReplyRecord
from bridge.core.ports import Relay, ReplySink

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
# The reset command answers inside Slack's three seconds even when Redis is slow.
RESET_TIMEOUT = 2.5

RESET_DONE = "Done. Your next message starts a new conversation."
RESET_NOTHING = "There was no conversation to reset here; your next message starts a new one."
RESET_FAILED = "Sorry, I could not start over just now. Please try again in a moment."
RESET_WHERE = (
    "Use this command in a direct message with me, or in a channel with the link to the "
    "thread: {command} https://…/archives/C…/p… (⋯ on the thread's first message → Copy link)."
)
RESET_NOT_HERE = "I am not available in this workspace or channel."
RESET_UNKNOWN = (
    "This command is not set up on the bridge; to start a new conversation use {command} "
    "(or set BRIDGE_SLACK_RESET_COMMAND to this command's name)."
)
__all__ = ["EVENTS_PATH", "SOMETHING_WENT_WRONG", "SlackAdapter"]


class _KnownBot(AsyncAuthorize):
    """Bolt authorisation from the one ``auth.test`` made at start: a single bot token
    serves the workspace (or, installed org-wide, every workspace of the Grid org)."""

    def __init__(self, identity: BotIdentity, token: str) -> None:
        self._identity = identity
        self._token = token

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=enterprise_id or self._identity.enterprise_id,
            team_id=team_id or self._identity.team_id,
            bot_user_id=self._identity.user_id,
            bot_id=self._identity.bot_id,
            bot_token=self._token,
            user_id=user_id,
        )


class _BoltNoise(logging.Filter):
    """Drops Bolt's start-up warnings about ``SLACK_BOT_TOKEN`` being ignored: the bridge
    passes its own clients on purpose, yet Bolt reads the variable from the environment."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("As you gave `client` as well")
                    or message.startswith("As `installation_store` or `authorize`"))


_BOLT_LOG = log.getChild("bolt")
_BOLT_LOG.addFilter(_BoltNoise())


class SlackAdapter:
    """Slack inside the runtime (``bridge.core.ports.PlatformAdapter``)."""

    def __init__(
        self,
        *,
        settings: Settings,
        relay: Relay,
        metrics: Metrics,
        http_app: web.Application | None,
        session: aiohttp.ClientSession | None = None,
        pacing: SlackPacing | None = None,
        call_timeout: float = 30.0,
        stream_clock: Callable[[], float] = time.monotonic,
        history: History | None = None,
    ) -> None:
        self._settings = settings
        self._relay = relay
        self._history = history
        self._home: HomeTab | None = None
        self._metrics = metrics
        self._session = session
        self._pacing = pacing or SlackPacing()
        self._call_timeout = call_timeout
        # How a stream's age is measured (rollover before Slack ends it); tests share one
        # stepped clock between the sinks and the fake Slack that expires streams.
        self._stream_clock = stream_clock
        self._scope = Scope(
            teams=frozenset(settings.slack_allowed_teams),
            channels=frozenset(settings.slack_allowed_channels),
        )
        self._socket_mode = settings.slack_app_token is not None
        self._http_app = http_app
        if http_app is not None and not self._socket_mode:
            # Routes must exist before the server starts; the handler answers 503 until
            # start() has run, so Slack retries instead of losing the event.
            http_app.router.add_post(EVENTS_PATH, self._handle_http)
        self._own_session: aiohttp.ClientSession | None = None
        self._app: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._api: SlackApi | None = None
        self._retrying_api: SlackApi | None = None
        self._identity: BotIdentity | None = None
        self._verifier: SignatureVerifier | None = None
        self._tasks = EventTasks(platform="slack")
        # Whether the app is declared as an agent is learnt once per process, by whichever
        # reply asks first; every sink shares the answer.
        self._sessions = AgentSessions()
        self._prompts = SuggestedPrompts(
            [p.model_dump() for p in settings.slack_suggested_prompts])

    # ------------------------------------------------------------------ lifecycle

    @property
    def name(self) -> str:
        return "slack"

    @property
    def identity(self) -> BotIdentity | None:
        """The bot's identity from ``auth.test``, once started."""
        return self._identity

    @property
    def app(self) -> AsyncApp:
        """The Bolt app, once started (tests dispatch Socket Mode requests through it)."""
        if self._app is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._app

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._close_own_session()
            raise

    async def _start(self) -> None:
        settings = self._settings
        if settings.slack_bot_token is None:
            raise ConfigError("Slack needs SLACK_BOT_TOKEN.")
        token = settings.slack_bot_token.get_secret_value()
        if not self._socket_mode:
            if settings.slack_signing_secret is None:
                raise ConfigError(
                    "Slack needs SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET "
                    "(HTTP Events API at /slack/events)."
                )
            if self._http_app is None:
                raise ConfigError("Slack's HTTP Events API mode needs the bridge HTTP server.")
            secret = settings.slack_signing_secret.get_secret_value()
            if not secret.strip():
                raise ConfigError("SLACK_SIGNING_SECRET is empty.")
            self._verifier = SignatureVerifier(secret)
        session = self._session
        if session is None:
            session = self._own_session = aiohttp.ClientSession()
        base_url = settings.slack_api_url
        sink_client = AsyncWebClient(
            token=token, base_url=base_url, session=session, logger=log, retry_handlers=[]
        )
        # Calls outside the paced reply path (auth.test, Socket Mode, feedback buttons,
        # Bolt's own) honour Slack's Retry-After themselves.
        client = AsyncWebClient(
            token=token, base_url=base_url, session=session, logger=log,
            retry_handlers=[*async_default_handlers(),
                            AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
        )
        self._api = SlackApi(client=sink_client, metrics=self._metrics, timeout=self._call_timeout)
        self._retrying_api = SlackApi(client=client, metrics=self._metrics,
                                      timeout=self._call_timeout * 3)
        self._identity = await self._auth_test(client)
        if self._history is not None:
            self._home = HomeTab(api=self._retrying_api, history=self._history,
                                 relay=self._relay)
        bolt_client = AsyncWebClient(
            token=None, base_url=base_url, session=session, logger=log,
            retry_handlers=list(client.retry_handlers or []),
        )
        self._app = self._build_app(bolt_client, self._identity, token)
        if self._socket_mode:
            await self._connect_socket(client)
        self._tasks.open()
        log.info("Slack connected as %s over %s", self._identity.user_id,
                 "Socket Mode" if self._socket_mode else f"the HTTP Events API ({EVENTS_PATH})")

    async def stop_intake(self) -> None:
        self._tasks.stop_intake()
        socket, self._socket = self._socket, None
        if socket is not None:
            # Disconnecting lets Slack deliver new events to the other replicas' sockets.
            try:
                await socket.close_async()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.warning("closing the Slack Socket Mode connection failed: %s", exc)

    async def close(self) -> None:
        if self._tasks.closed:
            return
        await self.stop_intake()
        await self._tasks.close()
        await self._close_own_session()

    async def _close_own_session(self) -> None:
        session, self._own_session = self._own_session, None
        if session is not None:
            await session.close()

    def is_ready(self) -> bool:
        if not self._tasks.taking or self._app is None:
            return False
        if not self._socket_mode:
            return True
        client = self._socket.client if self._socket is not None else None
        session = client.current_session if client is not None else None
        return client is not None and not client.closed and session is not None and (
            not session.closed
        )

    @property
    def in_flight(self) -> int:
        """Events being handled now (answers rendering, reactions, button presses)."""
        return self._tasks.in_flight

    async def wait_idle(self) -> None:
        """Wait until the events taken so far are fully handled (tests, tools)."""
        await self._tasks.wait_idle()

    async def _auth_test(self, client: AsyncWebClient) -> BotIdentity:
        try:
            response = await client.auth_test()
        except SlackApiError as exc:
            code = exc.response.get("error") if exc.response is not None else None
            if code in BAD_TOKEN:
                raise ConfigError(f"Slack rejected SLACK_BOT_TOKEN ({code}).") from exc
            raise PlatformError(f"Slack auth.test failed: {code}") from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise PlatformError(
                f"Cannot reach Slack at SLACK_API_URL {self._settings.slack_api_url}: "
                f"{type(exc).__name__}"
            ) from exc
        data = response.data if isinstance(response.data, Mapping) else {}
        user_id = data.get("user_id")
        if not isinstance(user_id, str) or not user_id:
            raise PlatformError("Slack auth.test answered without a user_id")
        return BotIdentity(
            user_id=user_id,
            bot_id=_opt_str(data.get("bot_id")),
            team_id=_opt_str(data.get("team_id")),
            enterprise_id=_opt_str(data.get("enterprise_id")),
        )

    async def _connect_socket(self, client: AsyncWebClient) -> None:
        assert self._app is not None and self._settings.slack_app_token is not None
        app_token = self._settings.slack_app_token.get_secret_value()
        # Asked here rather than inside the SDK's connect loop, which retries a rejected
        # token forever: a wrong SLACK_APP_TOKEN becomes one clear error at start.
        try:
            opened = await client.apps_connections_open(app_token=app_token)
        except SlackApiError as exc:
            code = exc.response.get("error") if exc.response is not None else None
            raise ConfigError(
                f"Slack rejected SLACK_APP_TOKEN ({code}); it needs the connections:write "
                "scope and Socket Mode enabled for the app."
            ) from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise PlatformError(f"Cannot open a Slack Socket Mode connection: {exc}") from exc
        url = opened.get("url")
        if not isinstance(url, str) or not url:
            raise PlatformError("Slack apps.connections.open answered without a url")
        handler = AsyncSocketModeHandler(self._app, app_token, web_client=client, logger=log)
        handler.client.wss_uri = url
        try:
            async with asyncio.timeout(self._call_timeout):
                await handler.connect_async()  # type: ignore[no-untyped-call]
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                await handler.close_async()  # type: ignore[no-untyped-call]
            raise PlatformError("Slack Socket Mode did not connect in time") from exc
        self._socket = handler

    # ------------------------------------------------------------------ Bolt

    def _build_app(self, client: AsyncWebClient, identity: BotIdentity, token: str) -> AsyncApp:
        app = AsyncApp(
            name="chatbase-bridge",
            logger=_BOLT_LOG,
            client=client,
            authorize=_KnownBot(identity, token),
            signing_secret="",
            # Listeners return at once (the work runs in owned tasks), so acknowledging
            # after them is still immediate and no untracked Bolt task is left behind.
            process_before_response=True,
            # HTTP requests are verified in _handle_http; Socket Mode needs no signature.
            request_verification_enabled=False,
            attaching_conversation_kwargs_enabled=False,
        )
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction)
        app.event("agent_session_stopped")(self._on_session_stopped)
        app.event("app_home_opened")(self._on_home_opened)
        app.action(FEEDBACK_ACTION_ID)(self._on_feedback_button)
        app.command(self._settings.slack_reset_command)(self._on_reset)
        app.action(re.compile("^(" + "|".join(home.ACTIONS) + ")$"))(self._on_home_press)
        # Anything else subscribed (or added to the manifest later) is acknowledged, so Slack
        # never sees a failed delivery for an event the bridge does not use.
        app.event(re.compile(r".*"))(self._on_other_event)
        app.action(re.compile(r".*"))(self._on_other_action)
        app.command(re.compile(r".*"))(self._on_other_command)
        return app

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        app = self._app
        if app is None or not self._tasks.taking:
            return web.Response(status=503, text="not ready")
        body = await request.text()
        if not self._signed_by_slack(body, request.headers):
            log.info("refused a Slack request with a missing, wrong or stale signature")
            return web.Response(status=401, text="invalid signature")
        bolt_request = AsyncBoltRequest(
            body=body, query=request.query_string, headers=dict(request.headers.items())
        )
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    def _signed_by_slack(self, body: str, headers: Mapping[str, str]) -> bool:
        """Slack's request signing (HMAC-SHA256 of ``v0:timestamp:body``, at most five
        minutes old). Checked here rather than by Bolt, which logs refused bodies (message
        text) at INFO."""
        verifier = self._verifier
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if verifier is None or timestamp is None or signature is None:
            return False
        try:
            return verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
        except ValueError:
            return False  # a timestamp that is not a number

    # ------------------------------------------------------------------ listeners

    async def _on_mention(self, body: dict[str, Any]) -> None:
        message = translate.mention(body, self._bot, self._scope)
        if message is None:
            self._metrics.events.labels("slack", "ignored").inc()
            return
        self._answer(message)

    async def _on_message(self, body: dict[str, Any]) -> None:
        message = translate.message(body, self._bot, self._scope)
        if message is None:
            self._metrics.events.labels("slack", "ignored").inc()
            return
        if message.place.is_dm or translate.is_mention(message):
            self._answer(message)
        else:
            # A channel message reaching here is a thread reply without a mention, answered
            # only inside a conversation its author has there.
            self._tasks.spawn(self._answer_follow_up(message), name="slack-follow-up")

    async def _on_reaction(self, body: dict[str, Any]) -> None:
        reaction = translate.reaction(body, self._bot, self._scope)
        if reaction is None:
            return
        # No notice on failure: a reaction has no reply of its own to carry one.
        self._tasks.spawn(self._relay.handle_reaction(reaction, self.open_sink),
                          name="slack-reaction")

    async def _on_session_stopped(self, body: dict[str, Any]) -> None:
        stop = translate.session_stopped(body, self._scope)
        if stop is None:
            return
        self._tasks.spawn(self._stop_session(stop.channel, stop.thread_ts),
                          name="slack-session-stopped")

    async def _stop_session(self, channel: str, thread_ts: str) -> None:
        """The stop button of an agent session: stop the answer in that thread (whichever
        replica runs it) and move the session away from processing at once, even when no
        answer runs any more (https://docs.slack.dev/reference/events/agent_session_stopped/).
        The answer's own finish confirms the stop to the user ("Stopped.")."""
        await self._relay.stop(thread_handle(Platform.SLACK, channel, thread_ts))
        if self._retrying_api is not None:
            await self._sessions.active(self._retrying_api, channel=channel,
                                        thread_ts=thread_ts)

    async def _on_home_opened(self, body: dict[str, Any]) -> None:
        # The messages tab shows suggested prompts; the Home tab, the person's history.
        channel = translate.messages_tab_opened(body, self._scope)
        if channel is not None and self._retrying_api is not None:
            self._tasks.spawn(self._prompts.show(self._retrying_api, channel=channel),
                              name="slack-suggested-prompts")
        viewer = translate.home_opened(body, self._scope)
        if viewer is not None and self._home is not None:
            self._tasks.spawn(self._home.show(viewer), name="slack-home")

    async def _on_feedback_button(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        press = translate.feedback_button(body, self._bot, self._scope)
        if press is None:
            return
        self._tasks.spawn(self._relay.handle_feedback_button(press), name="slack-feedback",
                          notice=lambda: self._tell_presser(body))

    async def _on_reset(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        request = translate.reset_request(body, self._scope, self._bot)
        if request is None:
            await _ephemeral(ack, RESET_NOT_HERE)
            return
        if request.place is None:
            await _ephemeral(ack, RESET_WHERE.format(command=self._settings.slack_reset_command))
            return
        try:
            async with asyncio.timeout(RESET_TIMEOUT):
                existed = await self._relay.reset(request.place, request.author)
        except Exception as exc:
            log.warning("reset failed: %s", exc)
            await _ephemeral(ack, RESET_FAILED)
            return
        await _ephemeral(ack, RESET_DONE if existed else RESET_NOTHING)

    async def _on_home_press(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        press = translate.home_press(body, self._bot, self._scope)
        if press is None or self._home is None:
            return
        self._tasks.spawn(self._home.press(press.viewer, press.action_id, press.value),
                          name="slack-home-press")

    async def _on_other_event(self) -> None:
        return None

    async def _on_other_action(self, ack: AsyncAck) -> None:
        await ack()

    async def _on_other_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        # Most likely the command was renamed in the app but not in the bridge's settings.
        command = body.get("command")
        log.warning("Slack sent the command %r; BRIDGE_SLACK_RESET_COMMAND is %r", command,
                    self._settings.slack_reset_command)
        await _ephemeral(ack, RESET_UNKNOWN.format(command=self._settings.slack_reset_command))

    # ------------------------------------------------------------------ work

    @property
    def _bot(self) -> BotIdentity:
        assert self._identity is not None
        return self._identity

    def _answer(self, message: InboundMessage) -> None:
        sink = self.sink_for(message)
        self._tasks.spawn(self._relay.handle_message(message, sink), name="slack-answer",
                          notice=lambda: apologise(sink))

    async def _answer_follow_up(self, message: InboundMessage) -> None:
        if await self._relay.has_conversation(message):
            self._answer(message)
        else:
            self._metrics.events.labels("slack", "ignored").inc()

    async def _tell_presser(self, body: Mapping[str, Any]) -> None:
        """The catch-all's notice for a feedback button: a message only the presser sees."""
        channel = body.get("channel")
        user = body.get("user")
        channel_id = channel.get("id") if isinstance(channel, Mapping) else None
        user_id = user.get("id") if isinstance(user, Mapping) else None
        if self._retrying_api is None or not channel_id or not user_id:
            return
        await self._retrying_api.call("chat.postEphemeral", channel=channel_id, user=user_id,
                                      text=SOMETHING_WENT_WRONG)

    def sink_for(self, message: InboundMessage) -> SlackSink:
        """The sink for a new answer: in a thread (streamed) unless it is a top-level DM."""
        thread = message.conversation_thread
        on_stopped = None
        if thread is not None:
            # The handle the core registers this answer under (bridge.core.identity).
            handle = thread_handle(Platform.SLACK, message.place.channel, thread)

            def on_stopped() -> None:
                self._tasks.spawn(self._stop_answer(handle), name="slack-stop")

        return self._sink(
            ReplyTarget(
                workspace=message.place.workspace,
                channel=message.place.channel,
                thread_ts=thread,
                asker=message.author,
                question=message.text,
            ),
            stream=self._settings.slack_native_streaming,
            on_stopped=on_stopped,
        )

    async def _stop_answer(self, handle: str) -> None:
        await self._relay.stop(handle)

    def open_sink(self, record: ReplyRecord) -> ReplySink:
        """A sink that rewrites an existing reply in place (regenerate): post + update."""
        return self._sink(
            ReplyTarget(
                workspace=record.workspace,
                channel=record.channel,
                thread_ts=record.thread,
                asker=record.asker,
            ),
            stream=False,
            existing=record.part_ids,
        )

    def _sink(self, target: ReplyTarget, *, stream: bool, existing: Sequence[str] = (),
              on_stopped: Callable[[], None] | None = None) -> SlackSink:
        if self._api is None or self._retrying_api is None:
            raise RuntimeError("the Slack adapter is not started")
        return SlackSink(
            api=self._api,
            retrying_api=self._retrying_api,
            target=target,
            stream=stream,
            feedback_buttons=self._settings.slack_feedback_buttons,
            pacing=self._pacing,
            stream_rollover=self._settings.slack_stream_rollover_seconds,
            now=self._stream_clock,
            existing=existing,
            sessions=self._sessions,
            on_stopped=on_stopped,
        )


async def _ephemeral(ack: AsyncAck, text: str) -> None:
    """Answer a slash command so that only the person who used it sees the answer."""
    await ack(text=text, response_type="ephemeral")


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
