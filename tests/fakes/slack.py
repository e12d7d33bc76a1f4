"""A fake Slack Web API (and Socket Mode server) over real HTTP on an ephemeral port.

It answers the methods the bridge uses with Slack's payload shapes (``ok``, ``ts``,
``channel``, ``error``), records every call with its arguments, enforces per-method,
per-workspace rate-limit tiers with ``429`` + ``Retry-After``, keeps every message the bot
writes (applying stream appends and updates) so tests can assert the exact final text, and
lets tests inject errors. It also serves Socket Mode (``apps.connections.open`` + a
WebSocket) so the adapter's Socket Mode transport runs for real, and builds signed Events
API requests and realistic event payloads.

Typical use::

    async with FakeSlack() as slack:
        settings = Settings(SLACK_BOT_TOKEN=slack.bot_token, SLACK_API_URL=slack.api_url, ...)
        slack.fail_next("chat.appendStream", "message_not_in_streaming_state")
        ...
        assert slack.thread_texts("C1", "1700000000.000100") == ["the answer"]
        assert slack.rate_limited == []

Agent experience: the app is an agent by default (``agent=False``: agents.sessions.* refuse
with ``missing_scope``, as for an app not declared as one; ``stop_subscribed=False``: their
answers carry the ``missing_agent_session_stopped_event_subscription`` warning).
``sessions[(channel, thread_ts)]`` keeps each session's status history; ``prompts_set`` the
suggested prompts. ``await slack.press_stop(channel, thread_ts)`` is the session's stop
button: the thread's live streams stop (further appends get ``stopped_by_user``) and
``agent_session_stopped`` is delivered over Socket Mode when connected, else over HTTP to
``events_url``; ``deliver_event`` sends any other event the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from slack_sdk.signature import SignatureVerifier

from tests.fakes import secrets

__all__ = [
    "FakeSession",
    "FakeSlack",
    "Limit",
    "SlackCall",
    "SlackMessage",
    "Tiers",
    "block_action",
    "event_envelope",
    "mention_event",
    "message_event",
    "reaction_event",
    "slash_command",
]

MARKDOWN_LIMIT = 12_000
# https://docs.slack.dev/reference/methods/agents.sessions.setStatus/
SESSION_STATUSES = frozenset({"active", "processing", "suspended", "closed"})
SESSION_TITLE_MAX = 200
MISSING_STOP_SUBSCRIPTION = "missing_agent_session_stopped_event_subscription"
TEXT_LIMIT = 4_000  # msg_too_long for `text` from about 4,000 characters in practice
_LIVE_TOKEN = re.compile(r"<(?:@[A-Z0-9]+|#[A-Z0-9]+|![a-z]+(?:\^[^>]*)?)(?:\|[^>]*)?>")


@dataclass(frozen=True)
class Limit:
    """At most ``calls`` calls in any ``per`` seconds, per workspace (or per channel)."""

    calls: int
    per: float
    per_channel: bool = False


@dataclass(frozen=True)
class Tiers:
    """Slack's documented floors (https://docs.slack.dev/apis/web-api/rate-limits)."""

    limits: Mapping[str, Limit] = field(default_factory=lambda: {
        "chat.startStream": Limit(20, 60.0),  # Tier 2
        "chat.stopStream": Limit(20, 60.0),  # Tier 2
        "chat.appendStream": Limit(100, 60.0),  # Tier 4
        "chat.update": Limit(50, 60.0),  # Tier 3
        "chat.delete": Limit(50, 60.0),  # Tier 3
        # "generally allows one message per second per channel", with short bursts
        "chat.postMessage": Limit(3, 3.0, per_channel=True),
    })

    def scaled(self, factor: float, *, jitter: float = 0.0) -> Tiers:
        """The same call counts in windows ``factor`` times as long (tests run faster),
        each shortened by ``jitter`` seconds: the scheduling noise between a paced call's
        slot and its arrival here, which shrinking time does not shrink."""
        return Tiers({m: replace(lim, per=max(0.0, lim.per * factor - jitter))
                      for m, lim in self.limits.items()})


@dataclass
class SlackCall:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SlackMessage:
    """One message the bot wrote, as Slack would now show it."""

    ts: str
    channel: str
    thread_ts: str | None
    source: str  # "post" | "stream"
    raw: str = ""  # the escaped Markdown/mrkdwn Slack stores
    fallback: str = ""  # the plain `text` sent alongside blocks
    blocks: list[dict[str, Any]] = field(default_factory=list)
    streaming: bool = False
    stopped_by_user: bool = False
    started_at: float = 0.0
    deleted: bool = False
    edits: int = 0
    appends: int = 0
    history: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """What a reader sees: entities decoded."""
        return unescape(self.raw)

    @property
    def has_feedback_buttons(self) -> bool:
        return any(
            b.get("type") == "context_actions"
            and any(e.get("type") == "feedback_buttons" for e in b.get("elements", []))
            for b in self.blocks
        )

    def live_tokens(self) -> list[str]:
        """Mention tokens Slack would turn into pings (``<!channel>``, ``<@U…>``…)."""
        found = _LIVE_TOKEN.findall(self.raw) + _LIVE_TOKEN.findall(self.fallback)
        for text in self.history:
            found += _LIVE_TOKEN.findall(text)
        return found


@dataclass
class FakeSession:
    """One agent session (a thread): its title, who started it, every status it was set to
    (by agents.sessions.setStatus, or "processing" by chat.startStream), in order."""

    channel: str
    thread_ts: str
    title: str | None = None
    initiator: str | None = None
    history: list[str] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        return self.history[-1] if self.history else None


@dataclass
class _Fault:
    error: str
    status: int
    retry_after: float | None


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class _Reject(Exception):
    def __init__(self, error: str, status: int = 200, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after = retry_after


class FakeSlack:
    """The fake Slack. Use as ``async with FakeSlack() as slack``."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
        signing_secret: str = "test-signing-secret",
        team_id: str = "T0TEAM",
        enterprise_id: str | None = None,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        tiers: Tiers | None = None,
        stream_ttl: float = 300.0,
        max_message_chars: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        agent: bool = True,
        stop_subscribed: bool = True,
    ) -> None:
        self.bot_token = bot_token
        secrets.register(bot_token, app_token, signing_secret)
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.enterprise_id = enterprise_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.tiers = tiers or Tiers()
        # Slack ends a stream this many seconds after chat.startStream (about 300 in real
        # Slack, appends or not); later appends and stops get message_not_in_streaming_state.
        self.stream_ttl = stream_ttl
        # When set, any call that would leave a message holding more than this many stored
        # (escaped) characters is refused with msg_too_long, as Slack refuses long messages
        # at ~4,000 in practice (docs/slack.md, "Limits").
        self.max_message_chars = max_message_chars
        self.clock = clock
        self.agent = agent
        self.stop_subscribed = stop_subscribed
        self.sessions: dict[tuple[str, str], FakeSession] = {}
        self.prompts_set: list[dict[str, Any]] = []
        # Where Events API requests go when no Socket Mode connection is open.
        self.events_url: str | None = None
        self._client: aiohttp.ClientSession | None = None
        self.calls: list[SlackCall] = []
        self.messages: dict[str, SlackMessage] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.home_views: dict[str, dict[str, Any]] = {}  # the Home tab each user sees now
        self.dms: dict[str, str] = {}  # user → the DM channel with the bot
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._passes: dict[str, int] = defaultdict(int)
        self._windows: dict[tuple[str, ...], deque[float]] = defaultdict(deque)
        self._seq = itertools.count(1)
        self._ts_base = int(time.time())
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._site: TestServer | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        self._site = TestServer(app, host="127.0.0.1", port=0)
        await self._site.start_server()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        for ws in list(self._sockets):
            await ws.close()
        if self._site is not None:
            await self._site.close()

    @property
    def api_url(self) -> str:
        assert self._site is not None
        return str(self._site.make_url("/api/"))

    @property
    def socket_url(self) -> str:
        assert self._site is not None
        return str(self._site.make_url("/socket")).replace("http://", "ws://", 1)

    # ------------------------------------------------------------------ test controls

    def fail_next(
        self, method: str, error: str, *, times: int = 1, status: int | None = None,
        retry_after: float | None = None, after: int = 0,
    ) -> None:
        """The next ``times`` calls of ``method`` answer ``error`` (``ratelimited``: a 429
        with ``Retry-After``), once ``after`` more calls of it have gone through."""
        self._passes[method] = after
        if status is None:
            status = 429 if error == "ratelimited" else 200
        if error == "ratelimited" and retry_after is None:
            retry_after = 1.0
        for _ in range(times):
            self._faults[method].append(_Fault(error, status, retry_after))

    def expire_stream(self, ts: str) -> None:
        """End a stream the way Slack does after about five minutes."""
        self.messages[ts].streaming = False

    def session(self, channel: str, thread_ts: str) -> FakeSession:
        return self.sessions[(channel, thread_ts)]

    async def deliver_event(self, event: dict[str, Any], **envelope: Any) -> int:
        """Send ``event`` to the app the way Slack would: over Socket Mode when a connection
        is open (waits for the ack), else as a signed request to ``events_url``; returns the
        HTTP status (200 for an acknowledged envelope)."""
        body = event_envelope(event, team_id=self.team_id, enterprise_id=self.enterprise_id,
                              bot_user_id=self.bot_user_id, **envelope)
        if self.socket_connections:
            await self.wait_ack(await self.send_envelope("events_api", body))
            return 200
        if self.events_url is None:
            raise RuntimeError("no Socket Mode connection and no events_url")
        if self._client is None:
            self._client = aiohttp.ClientSession()
        raw = json.dumps(body)
        async with self._client.post(self.events_url, data=raw.encode(),
                                     headers=self.signed_headers(raw)) as response:
            await response.read()
            return response.status

    async def press_stop(self, channel: str, thread_ts: str, *, user: str = "U0ASKER",
                         deliver: bool = True) -> list[str]:
        """The stop button of the thread's agent session: Slack stops the app's live streams
        there and sends agent_session_stopped naming them
        (https://docs.slack.dev/reference/events/agent_session_stopped/). The session stays
        processing: the app must move it. Returns the stopped streams' ts."""
        stopped = [m.ts for m in self.thread(channel, thread_ts) if m.streaming]
        for ts in stopped:
            self.messages[ts].streaming = False
            self.messages[ts].stopped_by_user = True
        await self._pulse()
        if deliver:
            event_ts = f"{int(time.time())}.{next(self._seq):06d}"
            status = await self.deliver_event({
                "type": "agent_session_stopped", "channel": channel, "thread_ts": thread_ts,
                "user": user, "event_ts": event_ts, "streaming_message_ts": stopped,
            })
            if status != 200:
                raise RuntimeError(f"agent_session_stopped was refused with {status}")
        return stopped

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    @property
    def rate_limited(self) -> list[SlackCall]:
        """Every call answered with a 429."""
        return [c for c in self.calls if c.status == 429]

    def thread(self, channel: str, thread_ts: str | None) -> list[SlackMessage]:
        """The bot's live messages in a thread (or at the top level for None), in order."""
        return [
            m for m in self.messages.values()
            if m.channel == channel and m.thread_ts == thread_ts and not m.deleted
        ]

    def thread_texts(self, channel: str, thread_ts: str | None) -> list[str]:
        return [m.text for m in self.thread(channel, thread_ts)]

    def live_tokens(self) -> list[str]:
        return [token for m in self.messages.values() for token in m.live_tokens()]

    async def wait_for(self, predicate: Callable[[], bool], *, within: float = 10.0) -> None:
        """Wait (woken by every request, never by polling) until ``predicate()`` holds."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def _pulse(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ Events API helpers

    def signed_headers(self, body: str, *, timestamp: int | None = None,
                       secret: str | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = SignatureVerifier(secret or self.signing_secret).generate_signature(
            timestamp=ts, body=body
        )
        assert signature is not None
        return {
            "content-type": "application/json",
            "x-slack-request-timestamp": ts,
            "x-slack-signature": signature,
        }

    # ------------------------------------------------------------------ Socket Mode

    @property
    def socket_connections(self) -> int:
        return sum(1 for ws in self._sockets if not ws.closed)

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, retry_attempt: int | None = None,
    ) -> str:
        """Deliver a Socket Mode envelope (``events_api``, ``slash_commands``,
        ``interactive``) to the connected app; returns its envelope id."""
        live = [ws for ws in self._sockets if not ws.closed]
        if not live:
            raise RuntimeError("no Socket Mode connection")
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        if retry_attempt is not None:
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "timeout"
        await live[-1].send_str(json.dumps(envelope))
        return envelope_id

    async def wait_ack(self, envelope_id: str, *, within: float = 5.0) -> dict[str, Any]:
        await self.wait_for(lambda: envelope_id in self.acks, within=within)
        return self.acks[envelope_id]

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({
            "type": "hello", "num_connections": len(self._sockets),
            "connection_info": {"app_id": "A0FAKE"},
            "debug_info": {"host": "fake", "approximate_connection_time": 3600},
        }))
        await self._pulse()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and "envelope_id" in data:
                    self.acks[str(data["envelope_id"])] = data
                    await self._pulse()
        await self._pulse()
        return ws

    # ------------------------------------------------------------------ Web API

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                body = json.loads(raw) if raw else {}
                if isinstance(body, dict):
                    args.update(body)
            else:
                args.update(dict(parse_qsl(raw)))
        for key in ("blocks", "chunks"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        call = SlackCall(method=method, args=args, token=token, at=self.clock())
        self.calls.append(call)
        headers: dict[str, str] = {}
        try:
            self._authorise(method, token)
            self._take_fault(method, args)
            self._enforce_limit(method, args)
            result = self._handle(method, args)
            payload: dict[str, Any] = {"ok": True, **result}
            status = 200
        except _Reject as exc:
            call.error, call.status = exc.error, exc.status
            payload = {"ok": False, "error": exc.error}
            status = exc.status
            if exc.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.4999)))
        await self._pulse()
        return web.json_response(payload, status=status, headers=headers)

    def _authorise(self, method: str, token: str | None) -> None:
        if method == "apps.connections.open":
            if token != self.app_token:
                raise _Reject("invalid_auth")
            return
        if token is None:
            raise _Reject("not_authed")
        if token != self.bot_token:
            raise _Reject("invalid_auth")

    def _take_fault(self, method: str, args: Mapping[str, Any]) -> None:
        queue = self._faults.get(method)
        if queue and self._passes[method] > 0:
            self._passes[method] -= 1
        elif queue:
            fault = queue.popleft()
            target = self.messages.get(str(args.get("ts")))
            if target is not None and fault.error in ("message_not_in_streaming_state",
                                                      "stopped_by_user"):
                target.streaming = False  # keep the fake consistent with the error it gave
                target.stopped_by_user = fault.error == "stopped_by_user"
            raise _Reject(fault.error, fault.status, fault.retry_after)

    def _enforce_limit(self, method: str, args: Mapping[str, Any]) -> None:
        limit = self.tiers.limits.get(method)
        if limit is None:
            return
        key: tuple[str, ...] = (self.team_id, method)
        if limit.per_channel:
            key += (str(args.get("channel")),)
        now = self.clock()
        window = self._windows[key]
        while window and window[0] <= now - limit.per:
            window.popleft()
        if len(window) >= limit.calls:
            raise _Reject("ratelimited", 429, window[0] + limit.per - now)
        window.append(now)

    def _new_ts(self) -> str:
        n = next(self._seq)
        return f"{self._ts_base + n}.{n:06d}"

    def _handle(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "agents.sessions.setStatus": self._session_set_status,
            "agents.sessions.rename": self._session_rename,
            "chat.postEphemeral": self._post_ephemeral,
            "views.publish": self._views_publish,
            "conversations.open": self._conversations_open,
        }.get(method)
        if handler is None:
            raise _Reject("unknown_method", 404)
        return handler(args)

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {
            "url": "https://fake.slack.test/", "team": "Fake Team", "user": "chatbase",
            "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }
        if self.enterprise_id is not None:
            result["enterprise_id"] = self.enterprise_id
        return result

    def _connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.socket_url}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user") or not args.get("text"):
            raise _Reject("invalid_arguments")
        self.ephemerals.append(dict(args))
        return {"message_ts": self._new_ts()}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/views.publish: a home view of at most
        # 100 blocks; a button's value at most 2,000 characters, its action_id 255, a
        # section's text 3,000 (https://docs.slack.dev/reference/block-kit/).
        user, view = args.get("user_id"), args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not user or not isinstance(view, dict):
            raise _Reject("invalid_arguments")
        blocks = view.get("blocks")
        if view.get("type") != "home" or not isinstance(blocks, list) or len(blocks) > 100:
            raise _Reject("invalid_arguments")
        for block in blocks:
            text = block.get("text") if isinstance(block, dict) else None
            if isinstance(text, dict) and len(text.get("text", "")) > 3000:
                raise _Reject("invalid_arguments")
            elements = [*block.get("elements", []), block.get("accessory") or {}]
            for element in elements:
                if element.get("type") == "button" and (
                        len(element.get("value", "")) > 2000
                        or not 0 < len(element.get("action_id", "")) <= 255):
                    raise _Reject("invalid_arguments")
        self.home_views[user] = view
        return {"view": {"id": f"V{next(self._seq):08d}", **view}}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("users")
        if not isinstance(user, str) or not user or "," in user:
            raise _Reject("invalid_arguments")
        channel = self.dms.setdefault(user, f"D{user}")
        return {"channel": {"id": channel}}

    def _set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel_id") or not args.get("thread_ts"):
            raise _Reject("invalid_arguments")
        if "status" not in args:
            raise _Reject("invalid_arguments")
        return {}

    def _set_suggested_prompts(self, args: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts/
        if not self.agent:
            raise _Reject("missing_scope")  # assistant:write comes with declaring an agent
        prompts = args.get("prompts")
        if not args.get("channel_id") or not isinstance(prompts, list) or not prompts:
            raise _Reject("invalid_arguments")
        if len(prompts) > 4 or not all(
            isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts
        ):
            raise _Reject("invalid_arguments")
        self.prompts_set.append(dict(args))
        return {}

    # ---- agent sessions (https://docs.slack.dev/ai/agent-sessions/)

    def _session_key(self, args: Mapping[str, Any]) -> tuple[str, str]:
        if not self.agent:
            # Only apps declared as agents can create sessions.
            raise _Reject("missing_scope")
        channel, thread = args.get("channel_id"), args.get("thread_ts")
        if not isinstance(channel, str) or not channel or not isinstance(thread, str) or (
            not thread
        ):
            raise _Reject("invalid_arguments")
        return channel, thread

    def _session_answer(self) -> dict[str, Any]:
        return {} if self.stop_subscribed else {"warning": MISSING_STOP_SUBSCRIPTION}

    def _session_set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._session_key(args)
        status, title = args.get("status"), args.get("title")
        if status not in SESSION_STATUSES:
            raise _Reject("invalid_arguments")
        if title is not None and (not isinstance(title, str) or len(title) > SESSION_TITLE_MAX):
            raise _Reject("invalid_arguments")
        session = self.sessions.get(key)
        if session is None:
            # Title and initiator are "only used when creating a new session".
            initiator = args.get("initiator_user_id")
            session = self.sessions[key] = FakeSession(
                channel=key[0], thread_ts=key[1], title=title,
                initiator=initiator if isinstance(initiator, str) else None)
        session.history.append(str(status))
        return {**self._session_answer(), "status": status}

    def _session_rename(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions.get(self._session_key(args))
        title = args.get("title")
        if not isinstance(title, str) or not title or len(title) > SESSION_TITLE_MAX:
            raise _Reject("invalid_arguments")
        if session is None:
            raise _Reject("session_not_found")  # the fake's name for it
        session.title = title
        return self._session_answer()

    # ---- post + update

    @staticmethod
    def _content(args: Mapping[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
        """(raw shown text, fallback text, blocks) of a post or update."""
        blocks = args.get("blocks") or []
        if not isinstance(blocks, list) or len(blocks) > 50:
            raise _Reject("invalid_blocks")
        markdown = [b.get("text", "") for b in blocks
                    if isinstance(b, dict) and b.get("type") == "markdown"]
        if sum(len(t) for t in markdown) > MARKDOWN_LIMIT:
            raise _Reject("msg_blocks_too_long")
        text = args.get("text") or ""
        if not isinstance(text, str):
            raise _Reject("invalid_arguments")
        if len(text) > TEXT_LIMIT:
            raise _Reject("msg_too_long")
        markdown_text = args.get("markdown_text")
        if isinstance(markdown_text, str) and markdown_text:
            if len(markdown_text) > MARKDOWN_LIMIT:
                raise _Reject("msg_too_long")
            return markdown_text, text, blocks
        if not text and not blocks:
            raise _Reject("no_text")
        return ("".join(markdown) if markdown else text), text, blocks

    def _fits(self, raw: str) -> None:
        if self.max_message_chars is not None and len(raw) > self.max_message_chars:
            raise _Reject("msg_too_long")

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            raise _Reject("channel_not_found")
        raw, fallback, blocks = self._content(args)
        self._fits(raw)
        ts = self._new_ts()
        thread = args.get("thread_ts") or None
        message = SlackMessage(ts=ts, channel=channel, thread_ts=thread, source="post", raw=raw,
                               fallback=fallback, blocks=blocks, history=[raw])
        self.messages[ts] = message
        return {"channel": channel, "ts": ts,
                "message": {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id,
                            "text": fallback, "ts": ts}}

    def _find(self, args: Mapping[str, Any]) -> SlackMessage:
        message = self.messages.get(str(args.get("ts")))
        if message is None or message.deleted or message.channel != args.get("channel"):
            raise _Reject("message_not_found")
        return message

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args)
        self._expire(message)
        if message.streaming:
            raise _Reject("streaming_state_conflict")
        raw, fallback, blocks = self._content(args)
        self._fits(raw)
        message.raw, message.fallback, message.blocks = raw, fallback, blocks
        message.edits += 1
        message.history.append(raw)
        return {"channel": message.channel, "ts": message.ts, "text": fallback}

    def _delete(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args)
        message.deleted = True
        message.streaming = False
        return {"channel": message.channel, "ts": message.ts}

    # ---- native streams

    def _expire(self, message: SlackMessage) -> None:
        if message.streaming and self.clock() - message.started_at > self.stream_ttl:
            message.streaming = False

    @staticmethod
    def _stream_text(args: Mapping[str, Any]) -> str:
        text = args.get("markdown_text") or ""
        chunks = args.get("chunks") or []
        if isinstance(chunks, list):
            for chunk in chunks:
                if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
                    text += str(chunk.get("text", ""))
        if not isinstance(text, str):
            raise _Reject("invalid_arguments")
        if len(text) > MARKDOWN_LIMIT:
            raise _Reject("msg_too_long")
        return text

    def _start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            raise _Reject("channel_not_found")
        thread = args.get("thread_ts")
        if not thread:
            raise _Reject("invalid_thread_ts")
        if not str(channel).startswith("D"):
            if not args.get("recipient_team_id"):
                raise _Reject("missing_recipient_team_id")
            if not args.get("recipient_user_id"):
                raise _Reject("missing_recipient_user_id")
        text = self._stream_text(args)
        self._fits(text)
        ts = self._new_ts()
        self.messages[ts] = SlackMessage(
            ts=ts, channel=channel, thread_ts=thread, source="stream", raw=text,
            streaming=True, started_at=self.clock(), history=[text],
        )
        if self.agent:
            # On an agent app, startStream "creates a session if one doesn't exist and sets
            # the session status to processing" (https://docs.slack.dev/ai/agent-sessions/).
            key = (str(channel), str(thread))
            session = self.sessions.setdefault(
                key, FakeSession(channel=key[0], thread_ts=key[1]))
            session.history.append("processing")
        return {"channel": channel, "ts": ts}

    def _open_stream(self, args: Mapping[str, Any]) -> SlackMessage:
        message = self._find(args)
        self._expire(message)
        if message.stopped_by_user:
            raise _Reject("stopped_by_user")
        if not message.streaming:
            raise _Reject("message_not_in_streaming_state")
        return message

    def _append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._open_stream(args)
        text = self._stream_text(args)
        if not text:
            raise _Reject("invalid_arguments")
        self._fits(message.raw + text)
        message.raw += text
        message.appends += 1
        message.history.append(text)
        return {"channel": message.channel, "ts": message.ts}

    def _stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._open_stream(args)
        text = self._stream_text(args)
        blocks = args.get("blocks") or []
        if not isinstance(blocks, list) or len(blocks) > 50:
            raise _Reject("invalid_blocks")
        self._fits(message.raw + text)
        message.raw += text
        message.blocks = blocks
        message.streaming = False
        if text:
            message.history.append(text)
        return {"channel": message.channel, "ts": message.ts,
                "message": {"type": "message", "ts": message.ts, "text": message.raw}}


# --------------------------------------------------------------------------- payloads

_event_seq = itertools.count(1)


def event_envelope(
    event: dict[str, Any], *, team_id: str = "T0TEAM", enterprise_id: str | None = None,
    event_id: str | None = None, bot_user_id: str = "UBOT",
) -> dict[str, Any]:
    """An Events API ``event_callback`` body around ``event``."""
    return {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "enterprise_id": enterprise_id,
        "api_app_id": "A0FAKE",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_event_seq):08d}",
        "event_time": int(time.time()),
        "authorizations": [{
            "enterprise_id": enterprise_id, "team_id": team_id, "user_id": bot_user_id,
            "is_bot": True, "is_enterprise_install": False,
        }],
        "is_ext_shared_channel": False,
    }


def mention_event(
    *, text: str, ts: str, channel: str = "C0CHAN", user: str = "U0ASKER",
    thread_ts: str | None = None, team: str = "T0TEAM",
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel,
        "team": team, "event_ts": ts, "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message_event(
    *, text: str, ts: str, channel: str = "D0DM", user: str = "U0ASKER",
    channel_type: str = "im", thread_ts: str | None = None, team: str = "T0TEAM",
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "message", "user": user, "text": text, "ts": ts, "channel": channel,
        "channel_type": channel_type, "team": team, "event_ts": ts,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    event.update(extra)
    return event


def reaction_event(
    *, reaction: str, channel: str, ts: str, user: str = "U0ASKER", added: bool = True,
    item_user: str = "UBOT",
) -> dict[str, Any]:
    return {
        "type": "reaction_added" if added else "reaction_removed",
        "user": user, "reaction": reaction, "item_user": item_user,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": f"{int(time.time())}.{next(_event_seq):06d}",
    }


def block_action(
    *, value: str, channel: str, message_ts: str, user: str = "U0ASKER",
    team_id: str = "T0TEAM", action_id: str = "chatbase_feedback",
) -> dict[str, Any]:
    """A ``block_actions`` payload for a press of the feedback buttons."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "asker", "name": "asker", "team_id": team_id},
        "api_app_id": "A0FAKE",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": "1.2.3",
        "team": {"id": team_id, "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "general"},
        "message": {"type": "message", "ts": message_ts, "user": "UBOT", "text": "…"},
        "response_url": "https://hooks.slack.test/actions/1",
        "actions": [{
            "type": "feedback_buttons", "action_id": action_id, "block_id": "fb",
            "value": value, "action_ts": f"{int(time.time())}.{next(_event_seq):06d}",
        }],
    }


def home_opened_event(*, user: str = "U0ASKER", tab: str = "home") -> dict[str, Any]:
    """``app_home_opened``, shaped as the example on
    https://docs.slack.dev/reference/events/app_home_opened."""
    return {"type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": tab,
            "event_ts": f"{int(time.time())}.{next(_event_seq):06d}"}


def home_action(
    *, action_id: str, value: str | None = None, user: str = "U0ASKER",
    team_id: str = "T0TEAM",
) -> dict[str, Any]:
    """A ``block_actions`` payload for a button on the Home tab (container type ``view``)."""
    action: dict[str, Any] = {"type": "button", "action_id": action_id, "block_id": "b",
                              "action_ts": f"{int(time.time())}.{next(_event_seq):06d}"}
    if value is not None:
        action["value"] = value
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "asker", "name": "asker", "team_id": team_id},
        "api_app_id": "A0FAKE", "token": "legacy-verification-token",
        "container": {"type": "view", "view_id": "V0HOME"},
        "trigger_id": "1.2.3", "team": {"id": team_id, "domain": "fake"},
        "enterprise": None, "is_enterprise_install": False,
        "view": {"id": "V0HOME", "type": "home"},
        "actions": [action],
    }


def slash_command(
    *, command: str = "/chatbase-reset", text: str = "", channel: str = "D0DM",
    user: str = "U0ASKER", team_id: str = "T0TEAM", **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": "legacy-verification-token", "team_id": team_id, "team_domain": "fake",
        "channel_id": channel,
        "channel_name": "directmessage" if channel.startswith("D") else "general",
        "user_id": user, "user_name": "asker", "command": command, "text": text,
        "api_app_id": "A0FAKE", "response_url": "https://hooks.slack.test/commands/1",
        "trigger_id": "1.2.3",
    }
    body.update(extra)
    return body
