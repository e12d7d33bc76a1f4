"""A fake Chatbase API v2 server over real HTTP (aiohttp ``TestServer``, ephemeral port).

It implements the contract of https://www.chatbase.co/docs/api-reference/v2: chat (streamed and
not), retry, tool results, feedback, conversation reads with cursor pages, health; bearer
auth, agent id, userId validation and the error envelope, an ``x-request-id`` on every
response. It keeps conversations, so follow-ups continue them and feedback can be checked.

Typical use::

    async with FakeChatbase() as fake:
        settings = Settings(CHATBASE_API_BASE=fake.base_url, CHATBASE_API_KEY=fake.api_key,
                            CHATBASE_AGENT_ID=fake.agent_id, ...)
        client = compose_chatbase(settings, session=session)  # bridge/app/compose.py
        fake.script(Answer(text="Hello there", deltas=["Hel", "lo there"]))
        fake.fail_next(500, "INTERNAL_SERVER_ERROR")          # the next chat fails once
        fake.rate_limit_next(retry_after=2)                     # then a 429
        ...
        assert fake.chat_calls[-1].body["message"] == "hi"
        assert fake.feedback_calls[-1].feedback == "positive"

Scripting: answers are taken from the ``script`` queue in order (chat, continuation and retry
alike), else built from ``default_answer`` with ``answer_text_for(message)`` as text.
``Answer.variant`` picks one of the stream shapes Chatbase's docs have published
(``Variant``); ``Answer.fault`` breaks the stream after ``fault_after`` deltas
(``StreamFault``); ``Answer.tool_calls`` ends it with a ``tool-calls`` finish;
``json_answer`` / ``hold_open`` mimic a server ignoring ``stream: true`` / never closing
after the last frame. Conversations: ``conversations``, ``seed_conversation``,
``end_conversation`` (then CHAT_CONVERSATION_NOT_ONGOING), ``end_after_tool_result`` (the
continuation after a tool result gets it), ``forget_conversation`` (then 404
RESOURCE_NOT_FOUND, as for one deleted or expired). Agents: ``add_agent`` makes the fake serve
a second agent id; a conversation belongs to the agent it was made with, and another agent
asking for it gets 404 RESOURCE_NOT_FOUND; an agent lists only its own.
``add_agent(agent_id, api_key=...)`` gives the agent its own key (Chatbase keys belong to a
workspace): its requests must carry that key, any other gets 401 AUTH_INVALID_API_KEY.
Records: ``requests`` (every one, with ``request_id``, the ``agent_id`` its path named and
the ``api_key`` it carried), ``chat_calls``, ``retry_calls``, ``calls(endpoint, agent=...)``,
``feedback_calls`` and ``tool_results`` (accepted ones), ``stalls``, ``streams_started`` /
``streams_finished`` / ``streams_aborted``. Pacing: a
``Gate`` lets the test release deltas one by one; ``first_token_delay`` / ``delta_delay``
pace benchmarks. Errors before the answer: ``fail_next``, ``rate_limit_next``, ``drop_next``
(connection closed without an answer), ``stall_next`` (no answer at all), per endpoint.
Waiting: ``await fake.wait_for(lambda: ...)`` is woken by every request and stream step.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes import secrets

__all__ = [
    "Answer",
    "FakeChatbase",
    "FakeConversation",
    "FakeMessage",
    "FakeToolCall",
    "FeedbackCall",
    "Gate",
    "RecordedRequest",
    "StreamFault",
    "ToolResultCall",
    "Variant",
]

_USER_ID = re.compile(r"^[a-zA-Z0-9._-]+$")
_WORDS = re.compile(r"\S+\s*|\s+")
_BATCH_BYTES = 64 * 1024
_REQUEST_ID = web.RequestKey("request_id", str)
_JSON = web.RequestKey("json", object)
_RAW = web.RequestKey("raw", bytes)

ENDPOINTS = (
    "chat", "retry", "tool_result", "feedback", "get_conversation", "list_messages",
    "list_user_conversations", "list_conversations", "health",
)


class Variant(enum.StrEnum):
    """Stream shapes; every one carries the same text, ids and credits."""

    CANONICAL = "canonical"  # AI SDK: start … finish{finishReason, messageMetadata} [DONE]
    MESSAGE_START_FLAT = "message-start-flat"  # message-start; finish{}; flat message-metadata
    METADATA_CHUNK = "metadata-chunk"  # message-metadata{messageMetadata} before finish
    FINISH_METADATA = "finish-metadata"  # legacy: deltas without text-start; finish.metadata
    REASON_IN_METADATA = "reason-in-metadata"  # finishReason only inside messageMetadata
    EVENT_LINES = "event-lines"  # `event:` and `id:` lines before each data line
    COMMENTS = "comments"  # `: stream-open` and `: keep-alive` comment lines
    CRLF = "crlf"
    CR = "cr"
    NO_SPACE = "no-space"  # `data:{…}`
    MULTILINE = "multiline"  # JSON spread over several `data:` lines
    NO_DONE = "no-done"  # no `data: [DONE]`; the connection just ends
    NDJSON = "ndjson"  # bare JSON lines, as one legacy doc described


class StreamFault(enum.StrEnum):
    """How a stream breaks after ``Answer.fault_after`` deltas."""

    DISCONNECT = "disconnect"  # the connection drops
    MALFORMED = "malformed"  # a frame that is not JSON
    ERROR_CHUNK = "error-chunk"  # {"type":"error","errorText":…}
    ERROR_OBJECT = "error-object"  # {"type":"error","error":{"code","message"}}
    EOF = "eof"  # a clean end without finish
    STALL = "stall"  # nothing more, connection kept open


class Gate:
    """Test-controlled pacing of one answer: the fake sends one text delta per permit.

    ``release(n)`` lets n more deltas out, ``open()`` all the rest; ``sent`` counts deltas
    written and ``await wait_sent(n)`` waits for it. The frames before the first delta and
    after the last go out without a permit.
    """

    def __init__(self) -> None:
        self._permits = 0
        self._open = False
        self.sent = 0
        self._signal = _Signal()

    def release(self, n: int = 1) -> None:
        self._permits += n
        self._signal.pulse()

    def open(self) -> None:
        self._open = True
        self._signal.pulse()

    async def wait_sent(self, n: int, *, within: float = 5.0) -> None:
        await self._signal.wait_for(lambda: self.sent >= n, within)

    async def _take(self) -> None:
        await self._signal.wait_for(lambda: self._open or self._permits > 0, None)
        if not self._open:
            self._permits -= 1

    def _delta_sent(self) -> None:
        self.sent += 1
        self._signal.pulse()


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    input: Any = None
    id: str | None = None


@dataclass
class Answer:
    """How the fake produces one answer.

    ``text`` None: ``FakeChatbase.answer_text_for(message)``. ``deltas`` None: the text split
    after each run of whitespace; given, they must join to ``text`` (which may be omitted).
    """

    text: str | None = None
    deltas: Sequence[str] | None = None
    variant: Variant = Variant.CANONICAL
    tool_calls: Sequence[FakeToolCall] = ()
    credits: float = 1
    finish_reason: str | None = None  # default: "tool-calls" with tool calls, else "stop"
    fault: StreamFault | None = None
    fault_after: int = 0
    error_text: str = "The model provider failed"
    error_code: str = "CHAT_STREAMING_ERROR"
    gate: Gate | None = None
    first_token_delay: float = 0.0
    delta_delay: float = 0.0
    # Answer a streaming request with the JSON body, as a server ignoring `stream: true`.
    json_answer: bool = False
    # After the last frame keep the connection open instead of ending it.
    hold_open: bool = False
    # Raw `source-url` / `source-document` / `file` chunks, sent after the text (as the AI
    # SDK's toUIMessageStream does for sources a model returns with its answer).
    sources: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        if self.deltas is not None:
            joined = "".join(self.deltas)
            if self.text is None:
                self.text = joined
            elif joined != self.text:
                raise ValueError("Answer.deltas must join to Answer.text")


@dataclass
class FakeMessage:
    id: str
    role: str
    text: str
    created_at: int
    feedback: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if self.text:
            parts.append({"type": "text", "text": self.text})
        parts.extend(
            {"type": "tool-call", "toolCallId": c["toolCallId"], "toolName": c["toolName"],
             "input": c["input"]}
            for c in self.tool_calls
        )
        out: dict[str, Any] = {
            "id": self.id, "role": self.role, "parts": parts, "createdAt": self.created_at,
        }
        if self.role == "assistant":
            out["feedback"] = self.feedback
            out["metadata"] = {"score": None}
        return out


@dataclass
class FakeConversation:
    id: str
    user_id: str | None
    created_at: int
    updated_at: int
    status: str = "ongoing"
    title: str | None = None
    messages: list[FakeMessage] = field(default_factory=list)
    pending_tool_calls: dict[str, str] = field(default_factory=dict)  # id → tool name
    seq: int = 0
    agent_id: str | None = None  # None: the fake's first agent

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "createdAt": self.created_at,
            "updatedAt": self.updated_at, "userId": self.user_id, "status": self.status,
        }

    def message(self, message_id: str) -> FakeMessage | None:
        return next((m for m in self.messages if m.id == message_id), None)


@dataclass(frozen=True)
class RecordedRequest:
    endpoint: str | None
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or the raw text when it is not JSON, None when empty
    request_id: str
    agent_id: str | None = None  # the agent the path addressed (/agents/{id}/...), if any
    api_key: str | None = None  # the bearer key it carried, if any


@dataclass(frozen=True)
class FeedbackCall:
    conversation_id: str
    message_id: str
    feedback: str | None
    body: Any


@dataclass(frozen=True)
class ToolResultCall:
    conversation_id: str
    tool_call_id: str
    output: Any
    body: Any


@dataclass
class _Fault:
    kind: str  # respond | drop | stall
    status: int = 500
    code: str | None = None
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | bytes | None = None
    content_type: str | None = None
    details: Mapping[str, str] | None = None


class _Signal:
    """Wakes every waiter on each change; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def pulse(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(self, predicate: Callable[[], bool], within: float | None) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                await self._event.wait()


class _Reject(Exception):
    """Internal control flow: answer the request with this error envelope."""

    def __init__(self, status: int, code: str, message: str,
                 details: Mapping[str, str] | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def split_words(text: str) -> list[str]:
    """The default deltas: each word with the whitespace after it."""
    return _WORDS.findall(text)


class FakeChatbase:
    """The fake server; see the module docstring. Not thread-safe: use from one event loop."""

    def __init__(self, *, api_key: str = "test-key", agent_id: str = "agent-test") -> None:
        self.api_key = api_key
        secrets.register(api_key)
        self.agent_id = agent_id
        self.agent_ids: set[str] = {agent_id}
        # The key each agent's requests must carry (its workspace's).
        self.agent_keys: dict[str, str] = {agent_id: api_key}
        # After the next accepted tool result its conversation ends (the continuation gets
        # CHAT_CONVERSATION_NOT_ONGOING), as when a human takes it over meanwhile.
        self.end_after_tool_result = False
        self.answer_text_for: Callable[[str | None], str] = (
            lambda message: f"Echo: {message}" if message is not None else "Continuing."
        )
        self.default_answer = Answer()
        self.now: Callable[[], float] = time.time
        self.conversations: dict[str, FakeConversation] = {}
        self.requests: list[RecordedRequest] = []
        self.feedback_calls: list[FeedbackCall] = []
        self.tool_results: list[ToolResultCall] = []
        self.streams_started = 0
        self.streams_finished = 0
        self.streams_aborted = 0  # streams whose client went away before the end
        self.stalls = 0
        self._script: deque[Answer] = deque()
        self._faults: dict[str, deque[_Fault]] = {}
        self._ids = 0
        self._request_ids = 0
        self._signal = _Signal()
        self._closing = asyncio.Event()
        self._test_server: TestServer | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeChatbase:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        agent = "/agents/{agent_id}"
        conv = agent + "/conversations/{conversation_id}"
        app.router.add_post(agent + "/chat", self._chat, name="chat")
        app.router.add_post(conv + "/retry", self._retry, name="retry")
        app.router.add_post(conv + "/tool-result", self._tool_result, name="tool_result")
        app.router.add_patch(conv + "/messages/{message_id}/feedback", self._feedback,
                             name="feedback")
        app.router.add_get(conv, self._get_conversation, name="get_conversation")
        app.router.add_get(conv + "/messages", self._list_messages, name="list_messages")
        app.router.add_get(agent + "/users/{user_id}/conversations", self._user_conversations,
                           name="list_user_conversations")
        app.router.add_get(agent + "/conversations", self._list_conversations,
                           name="list_conversations")
        app.router.add_get("/health", self._health, name="health")
        self._test_server = TestServer(app)
        await self._test_server.start_server(shutdown_timeout=1.0)

    async def close(self) -> None:
        self._closing.set()
        if self._test_server is not None:
            await self._test_server.close()

    @property
    def base_url(self) -> str:
        """Base URL to give the client (like ``https://www.chatbase.co/api/v2``)."""
        assert self._test_server is not None, "start the fake first"
        return str(self._test_server.make_url("")).rstrip("/")

    # ------------------------------------------------------------------ scripting

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next chat / continuation / retry requests, in order."""
        self._script.extend(answers)

    def fail_next(
        self,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        endpoint: str = "chat",
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
        content_type: str | None = None,
        details: Mapping[str, str] | None = None,
    ) -> None:
        """The next ``times`` requests to ``endpoint`` ("*": any) get this error answer: the
        envelope ``{"error": {code, message, details}}``, or ``body`` verbatim."""
        self._add_fault(endpoint, times, _Fault(
            "respond", status=status, code=code, message=message, headers=dict(headers or {}),
            body=body, content_type=content_type, details=details,
        ))

    def rate_limit_next(
        self,
        *,
        endpoint: str = "chat",
        times: int = 1,
        retry_after: float | str | None = None,
        reset: float | None = None,
        limit: int = 100,
    ) -> None:
        """429 ``RATE_LIMIT_TOO_MANY_REQUESTS`` with ``Retry-After`` and/or the
        ``X-RateLimit-*`` headers (``reset`` is sent as given: epoch s or ms)."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = _number(retry_after)
        if reset is not None:
            headers.update({
                "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": _number(reset),
            })
        self.fail_next(429, "RATE_LIMIT_TOO_MANY_REQUESTS",
                       "Too many requests, please try again later", endpoint=endpoint,
                       times=times, headers=headers)

    def drop_next(self, *, endpoint: str = "chat", times: int = 1) -> None:
        """Close the connection without answering the next request(s)."""
        self._add_fault(endpoint, times, _Fault("drop"))

    def stall_next(self, *, endpoint: str = "chat", times: int = 1) -> None:
        """Never answer the next request(s) (until the client gives up or the fake closes)."""
        self._add_fault(endpoint, times, _Fault("stall"))

    def end_conversation(self, conversation_id: str, status: str = "ended") -> None:
        """Mark a conversation not ongoing: chat in it gets CHAT_CONVERSATION_NOT_ONGOING."""
        self.conversations[conversation_id].status = status

    def forget_conversation(self, conversation_id: str) -> None:
        """Drop a conversation, as when it is deleted in the dashboard or expires: every
        request naming it gets 404 RESOURCE_NOT_FOUND."""
        del self.conversations[conversation_id]

    def add_agent(self, agent_id: str, *, api_key: str | None = None) -> None:
        """Serve another agent id, with its own API key (default: the fake's ``api_key``);
        conversations stay with the agent that made them."""
        key = api_key if api_key is not None else self.api_key
        secrets.register(key)
        self.agent_ids.add(agent_id)
        self.agent_keys[agent_id] = key

    def seed_conversation(
        self,
        *,
        user_id: str | None = None,
        messages: Iterable[tuple[str, str]] = (),
        created_at: int | None = None,
        updated_at: int | None = None,
        status: str = "ongoing",
        conversation_id: str | None = None,
        title: str | None = None,
    ) -> FakeConversation:
        """Add a conversation as if made earlier through the API; ``messages`` are
        ``(role, text)`` pairs; ``title`` None as Chatbase leaves it until it names one."""
        now = int(self.now())
        conv = FakeConversation(
            id=conversation_id or str(uuid.uuid4()), user_id=user_id,
            created_at=created_at if created_at is not None else now,
            updated_at=updated_at if updated_at is not None else (created_at or now),
            status=status, seq=self._next_seq(), title=title,
        )
        for role, text in messages:
            conv.messages.append(FakeMessage(self._message_id(), role, text, conv.created_at))
        self.conversations[conv.id] = conv
        return conv

    # ------------------------------------------------------------------ observing

    def calls(self, endpoint: str, *, agent: str | None = None) -> list[RecordedRequest]:
        """The requests to ``endpoint`` (for ``agent`` only, when given)."""
        return [r for r in self.requests
                if r.endpoint == endpoint and (agent is None or r.agent_id == agent)]

    @property
    def chat_calls(self) -> list[RecordedRequest]:
        return self.calls("chat")

    @property
    def retry_calls(self) -> list[RecordedRequest]:
        return self.calls("retry")

    async def wait_for(self, predicate: Callable[[], bool], *, within: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; re-checked on every request and stream step.
        Raises ``TimeoutError`` after ``within`` seconds."""
        await self._signal.wait_for(predicate, within)

    async def wait_requests(self, n: int, *, endpoint: str | None = None,
                            within: float = 5.0) -> None:
        """Wait until ``n`` requests (to ``endpoint``, or any) have arrived."""
        await self.wait_for(
            lambda: len(self.requests if endpoint is None else self.calls(endpoint)) >= n,
            within=within,
        )

    # ------------------------------------------------------------------ plumbing

    def _add_fault(self, endpoint: str, times: int, fault: _Fault) -> None:
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS} or '*'")
        queue = self._faults.setdefault(endpoint, deque())
        queue.extend(fault for _ in range(times))

    def _take_fault(self, endpoint: str | None) -> _Fault | None:
        for key in (endpoint, "*"):
            queue = self._faults.get(key) if key is not None else None
            if queue:
                return queue.popleft()
        return None

    def _next_seq(self) -> int:
        self._ids += 1
        return self._ids

    def _message_id(self) -> str:
        return f"msg_{self._next_seq():06d}"

    def _error(self, request: web.Request, status: int, code: str, message: str,
               details: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None) -> web.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if details:
            error["details"] = dict(details)
        return web.json_response({"error": error}, status=status, headers=headers)

    @web.middleware
    async def _middleware(
        self, request: web.Request,
        handler: Callable[[web.Request], Any],
    ) -> web.StreamResponse:
        self._request_ids += 1
        request_id = f"req_{self._request_ids:06d}"
        request[_REQUEST_ID] = request_id
        route = request.match_info.route
        endpoint = route.name if route.name in ENDPOINTS else None
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", errors="replace")
        request[_JSON] = body
        request[_RAW] = raw
        auth = request.headers.get("Authorization", "")
        self.requests.append(RecordedRequest(
            endpoint=endpoint, method=request.method, path=request.path,
            query=dict(request.query), headers=dict(request.headers), body=body,
            request_id=request_id, agent_id=request.match_info.get("agent_id"),
            api_key=auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None,
        ))
        self._signal.pulse()
        response = await self._answer(request, handler, endpoint)
        if not response.prepared:
            response.headers["x-request-id"] = request_id
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Any],
        endpoint: str | None,
    ) -> web.StreamResponse:
        if endpoint is None:
            return self._error(request, 404, "RESOURCE_NOT_FOUND", "No such endpoint")
        if endpoint != "health":
            auth = request.headers.get("Authorization")
            if not auth:
                return self._error(request, 401, "AUTH_MISSING_API_KEY",
                                   "Authentication required")
            agent = request.match_info.get("agent_id")
            keys = {f"Bearer {key}" for key in self.agent_keys.values()}
            if auth not in keys or (
                agent in self.agent_keys and auth != f"Bearer {self.agent_keys[agent]}"
            ):
                # An unknown key, or another workspace's key for this agent.
                return self._error(request, 401, "AUTH_INVALID_API_KEY", "Invalid API key")
            if agent not in self.agent_ids:
                return self._error(request, 404, "AGENT_NOT_FOUND", "Agent not found")
        fault = self._take_fault(endpoint)
        if fault is not None:
            return await self._fault(request, fault)
        try:
            response: web.StreamResponse = await handler(request)
        except _Reject as reject:
            return self._error(request, reject.status, reject.code, reject.message,
                               reject.details)
        return response

    async def _fault(self, request: web.Request, fault: _Fault) -> web.StreamResponse:
        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if fault.kind == "stall":
            self.stalls += 1
            self._signal.pulse()
            await self._closing.wait()
            return web.Response(status=503)
        if fault.body is not None:
            return web.Response(
                status=fault.status, headers=fault.headers,
                body=fault.body if isinstance(fault.body, bytes) else fault.body.encode(),
                content_type=fault.content_type or "text/plain",
            )
        return self._error(
            request, fault.status, fault.code or f"HTTP_{fault.status}",
            fault.message or "Scripted failure", fault.details, fault.headers,
        )

    # ------------------------------------------------------------------ endpoints

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", "timestamp": int(self.now())})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = _object_body(request)
        message = body.get("message")
        conversation_id = body.get("conversationId")
        user_id = body.get("userId")
        stream = body.get("stream", True)
        if message is not None and (not isinstance(message, str) or not message):
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                          {"message": "String must contain at least 1 character(s)"})
        if conversation_id is not None and not isinstance(conversation_id, str):
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                          {"conversationId": "Expected string"})
        if user_id is not None and (
            not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id)
            or len(user_id) > 128
        ):
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                          {"userId": "Invalid"})
        if not isinstance(stream, bool):
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                          {"stream": "Expected boolean"})
        now = int(self.now())
        if conversation_id is not None:
            conv = self._ongoing(conversation_id, request)
        else:
            if message is None:
                raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                              {"message": "Required"})
            conv = FakeConversation(id=str(uuid.uuid4()), user_id=user_id, created_at=now,
                                    updated_at=now, seq=self._next_seq(),
                                    agent_id=request.match_info["agent_id"])
            self.conversations[conv.id] = conv
        if message is not None:
            user_message = FakeMessage(self._message_id(), "user", message, now)
            conv.messages.append(user_message)
            conv.title = conv.title or message[:60]
        else:
            last = [m for m in conv.messages if m.role == "user"]
            user_message = last[-1] if last else FakeMessage("", "user", "", now)
        return await self._respond(request, conv, user_message, message, stream)

    async def _retry(self, request: web.Request) -> web.StreamResponse:
        body = _object_body(request)
        message_id = body.get("messageId")
        stream = body.get("stream", True)
        if not isinstance(message_id, str) or not message_id or not isinstance(stream, bool):
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                          {"messageId": "Required"})
        conv = self._ongoing(request.match_info["conversation_id"], request)
        index = next((i for i, m in enumerate(conv.messages) if m.id == message_id), None)
        if index is None:
            raise _Reject(404, "CHAT_RETRY_MESSAGE_NOT_FOUND", "Message not found in conversation")
        users = [m for m in conv.messages[:index] if m.role == "user"]
        if not users:
            raise _Reject(400, "CHAT_RETRY_NO_USER_MESSAGE", "No user message to retry from")
        del conv.messages[index:]
        return await self._respond(request, conv, users[-1], users[-1].text, stream)

    async def _tool_result(self, request: web.Request) -> web.StreamResponse:
        body = _object_body(request)
        call_id = body.get("toolCallId")
        if not isinstance(call_id, str) or not call_id or set(body) - {"toolCallId", "output"}:
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                          {"toolCallId": "Required"})
        conv = self._conversation(request.match_info["conversation_id"], request)
        if call_id not in conv.pending_tool_calls:
            raise _Reject(404, "RESOURCE_TOOL_CALL_NOT_FOUND", "Tool call not found or expired")
        del conv.pending_tool_calls[call_id]
        if self.end_after_tool_result:
            self.end_after_tool_result = False
            conv.status = "ended"
        self.tool_results.append(ToolResultCall(conv.id, call_id, body.get("output"), body))
        self._signal.pulse()
        return web.json_response({"data": {"success": True}})

    async def _feedback(self, request: web.Request) -> web.StreamResponse:
        body = _object_body(request)
        value = body.get("feedback", ...)
        if set(body) != {"feedback"} or value not in ("positive", "negative", None):
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                          {"feedback": "Expected 'positive' | 'negative' | null"})
        conv = self._conversation(request.match_info["conversation_id"], request)
        message = conv.message(request.match_info["message_id"])
        if message is None:
            raise _Reject(404, "RESOURCE_MESSAGE_NOT_FOUND",
                          "The specified message could not be found in this conversation")
        if message.role != "assistant":
            raise _Reject(422, "RESOURCE_MESSAGE_NOT_ASSISTANT",
                          "Only assistant messages support metadata updates")
        message.feedback = value
        self.feedback_calls.append(FeedbackCall(conv.id, message.id, value, body))
        self._signal.pulse()
        return web.json_response({"data": message.to_json()})

    async def _get_conversation(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request.match_info["conversation_id"], request)
        page, pagination = _message_page(conv.messages, 20, None)
        return web.json_response({
            "data": {**conv.to_json(), "messages": [m.to_json() for m in page]},
            "pagination": pagination,
        })

    async def _list_messages(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request.match_info["conversation_id"], request)
        page, pagination = _message_page(conv.messages, _limit(request),
                                         request.query.get("cursor"))
        return web.json_response({"data": [m.to_json() for m in page],
                                  "pagination": pagination})

    async def _user_conversations(self, request: web.Request) -> web.StreamResponse:
        user_id = request.match_info["user_id"]
        if not _USER_ID.fullmatch(user_id) or len(user_id) > 128:
            raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request", {"userId": "Invalid"})
        found = sorted(
            (c for c in self._agent_conversations(request) if c.user_id == user_id),
            key=lambda c: (c.updated_at, c.seq), reverse=True,
        )
        return self._conversation_page(request, found)

    async def _list_conversations(self, request: web.Request) -> web.StreamResponse:
        start = _date(request.query.get("startDate"), end=False)
        end = _date(request.query.get("endDate"), end=True)
        if start is not None and end is not None and start > end:
            raise _Reject(400, "VALIDATION_INVALID_DATE_RANGE",
                          "startDate must not be after endDate")
        found = sorted(
            (c for c in self._agent_conversations(request)
             if (start is None or c.created_at >= start)
             and (end is None or c.created_at <= end)),
            key=lambda c: (c.created_at, c.seq), reverse=True,
        )
        return self._conversation_page(request, found)

    def _agent_conversations(self, request: web.Request) -> list[FakeConversation]:
        """The conversations of the agent the path names (each agent lists only its own)."""
        agent = request.match_info["agent_id"]
        return [c for c in self.conversations.values() if (c.agent_id or self.agent_id) == agent]

    def _conversation_page(self, request: web.Request,
                           found: list[FakeConversation]) -> web.StreamResponse:
        limit = _limit(request)
        offset = _cursor(request.query.get("cursor"), "offset", 0)
        page = found[offset : offset + limit]
        more = offset + limit < len(found)
        return web.json_response({
            "data": [c.to_json() for c in page],
            "pagination": {"cursor": _encode_cursor("offset", offset + limit) if more else None,
                           "hasMore": more, "total": len(found)},
        })

    # ------------------------------------------------------------------ answers

    def _conversation(
        self, conversation_id: str, request: web.Request | None = None
    ) -> FakeConversation:
        conv = self.conversations.get(conversation_id)
        agent = request.match_info.get("agent_id") if request is not None else None
        if conv is None or (agent is not None and (conv.agent_id or self.agent_id) != agent):
            raise _Reject(404, "RESOURCE_NOT_FOUND", "The requested item could not be found")
        return conv

    def _ongoing(self, conversation_id: str, request: web.Request) -> FakeConversation:
        conv = self._conversation(conversation_id, request)
        if conv.status != "ongoing":
            raise _Reject(400, "CHAT_CONVERSATION_NOT_ONGOING",
                          "This conversation has ended or been taken over and cannot receive "
                          "new messages")
        return conv

    async def _respond(
        self, request: web.Request, conv: FakeConversation, user_message: FakeMessage,
        message: str | None, stream: bool,
    ) -> web.StreamResponse:
        answer = self._script.popleft() if self._script else self.default_answer
        text = answer.text if answer.text is not None else self.answer_text_for(message)
        deltas = list(answer.deltas) if answer.deltas is not None else split_words(text)
        calls = [
            {"toolCallId": call.id or f"call_{self._next_seq():06d}", "toolName": call.name,
             "input": call.input}
            for call in answer.tool_calls
        ]
        now = int(self.now())
        reply = FakeMessage(self._message_id(), "assistant", text, now, tool_calls=calls)
        conv.messages.append(reply)
        conv.updated_at = now
        for call in calls:
            conv.pending_tool_calls[call["toolCallId"]] = call["toolName"]
        finish_reason = answer.finish_reason or ("tool-calls" if calls else "stop")
        meta: dict[str, Any] = {
            "messageId": reply.id, "userMessageId": user_message.id,
            "conversationId": conv.id, "userId": conv.user_id,
            "usage": {"credits": answer.credits},
        }
        if not stream or answer.json_answer:
            return web.json_response({"data": {
                "id": reply.id, "role": "assistant", "parts": reply.to_json()["parts"],
                "metadata": {**{k: v for k, v in meta.items() if k != "messageId"},
                             "finishReason": finish_reason},
            }})
        return await self._stream(request, answer, deltas, calls, meta, finish_reason)

    async def _stream(
        self, request: web.Request, answer: Answer, deltas: list[str],
        calls: list[dict[str, Any]], meta: dict[str, Any], finish_reason: str,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "x-vercel-ai-ui-message-stream": "v1", "x-accel-buffering": "no",
            "x-request-id": request[_REQUEST_ID],
        })
        await response.prepare(request)
        self.streams_started += 1
        self._signal.pulse()
        writer = _FrameWriter(answer.variant)
        head, tail = _chunks(answer.variant, deltas, calls, meta, finish_reason)
        if answer.sources:
            at = next((i for i, c in enumerate(tail) if c["type"] in ("finish-step", "finish")),
                      len(tail))
            tail = [*tail[:at], *(dict(c) for c in answer.sources), *tail[at:]]
        paced = answer.gate is not None or answer.delta_delay > 0 or answer.first_token_delay > 0
        fault_at = answer.fault_after if answer.fault is not None else None
        try:
            out = bytearray(writer.opening())
            for chunk in head:
                out += writer.frame(chunk)
            if answer.first_token_delay > 0:
                await response.write(bytes(out))
                out.clear()
                await asyncio.sleep(answer.first_token_delay)
            text_id = "t1" if answer.variant is not Variant.FINISH_METADATA else None
            for index, delta in enumerate(deltas):
                if index == fault_at:
                    break
                chunk = {"type": "text-delta", "delta": delta}
                if text_id is not None:
                    chunk = {"type": "text-delta", "id": text_id, "delta": delta}
                if paced:
                    if answer.gate is not None:
                        if out:
                            await response.write(bytes(out))
                            out.clear()
                        await answer.gate._take()
                    elif index and answer.delta_delay > 0:
                        await asyncio.sleep(answer.delta_delay)
                    await response.write(writer.frame(chunk))
                    if answer.gate is not None:
                        answer.gate._delta_sent()
                else:
                    out += writer.frame(chunk)
                    if len(out) >= _BATCH_BYTES:
                        await response.write(bytes(out))
                        out.clear()
            if fault_at is not None and answer.fault is not None:
                if out:
                    await response.write(bytes(out))
                await self._break(request, response, answer, writer)
                return response
            for chunk in tail:
                out += writer.frame(chunk)
            out += writer.done()
            await response.write(bytes(out))
            self.streams_finished += 1
            self._signal.pulse()
            if answer.hold_open:
                await self._closing.wait()
            await response.write_eof()
        except ConnectionError:
            self._aborted()  # the client went away
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client closes the connection.
            self._aborted()
            raise
        return response

    def _aborted(self) -> None:
        self.streams_aborted += 1
        self._signal.pulse()

    async def _break(self, request: web.Request, response: web.StreamResponse, answer: Answer,
                     writer: _FrameWriter) -> None:
        fault = answer.fault
        if fault is StreamFault.DISCONNECT:
            assert request.transport is not None
            request.transport.close()
        elif fault is StreamFault.MALFORMED:
            await response.write(b'data: {"type":"text-delta","delta":\n\n')
            await response.write_eof()
        elif fault is StreamFault.ERROR_CHUNK:
            await response.write(writer.frame({"type": "error", "errorText": answer.error_text}))
            await response.write_eof()
        elif fault is StreamFault.ERROR_OBJECT:
            await response.write(writer.frame({
                "type": "error",
                "error": {"code": answer.error_code, "message": answer.error_text},
            }))
            await response.write_eof()
        elif fault is StreamFault.EOF:
            await response.write_eof()
        elif fault is StreamFault.STALL:
            self.stalls += 1
            self._signal.pulse()
            await self._closing.wait()
        self._signal.pulse()


class _FrameWriter:
    """Encodes chunks as one variant's bytes."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.eol = {Variant.CRLF: "\r\n", Variant.CR: "\r"}.get(variant, "\n")
        self.seq = 0

    def opening(self) -> bytes:
        return b": stream-open\n\n" if self.variant is Variant.COMMENTS else b""

    def frame(self, chunk: Mapping[str, Any]) -> bytes:
        variant = self.variant
        payload = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
        if variant is Variant.NDJSON:
            return (payload + "\n").encode()
        if variant is Variant.MULTILINE:
            lines = json.dumps(chunk, indent=1, ensure_ascii=False).split("\n")
            return ("".join(f"data: {line}\n" for line in lines) + "\n").encode()
        if variant is Variant.NO_SPACE:
            return f"data:{payload}\n\n".encode()
        if variant is Variant.EVENT_LINES:
            self.seq += 1
            return f"event: {chunk['type']}\nid: {self.seq}\ndata: {payload}\n\n".encode()
        if variant is Variant.COMMENTS:
            return f"data: {payload}\n\n: keep-alive\n\n".encode()
        eol = self.eol
        return f"data: {payload}{eol}{eol}".encode()

    def done(self) -> bytes:
        if self.variant in (Variant.NO_DONE, Variant.NDJSON):
            return b""
        return f"data: [DONE]{self.eol}{self.eol}".encode()


def _chunks(
    variant: Variant, deltas: list[str], calls: list[dict[str, Any]], meta: dict[str, Any],
    finish_reason: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chunks before the text deltas and after them, for one variant."""
    message_id = meta["messageId"]
    tools: list[dict[str, Any]] = []
    for call in calls:
        tools += [
            {"type": "tool-input-start", "toolCallId": call["toolCallId"],
             "toolName": call["toolName"]},
            {"type": "tool-input-delta", "toolCallId": call["toolCallId"],
             "inputTextDelta": json.dumps(call["input"])},
            {"type": "tool-input-available", **call},
        ]
    text_start = [{"type": "text-start", "id": "t1"}] if deltas else []
    text_end = [{"type": "text-end", "id": "t1"}] if deltas else []
    if variant is Variant.MESSAGE_START_FLAT:
        return (
            [{"type": "message-start", "messageId": message_id}, *text_start],
            [*text_end, *tools, {"type": "finish"},
             {"type": "message-metadata", **meta, "finishReason": finish_reason}],
        )
    if variant is Variant.METADATA_CHUNK:
        return (
            [{"type": "start", "messageId": message_id}, *text_start],
            [*text_end, *tools, {"type": "message-metadata", "messageMetadata": meta},
             {"type": "finish", "finishReason": finish_reason}],
        )
    if variant is Variant.FINISH_METADATA:
        legacy = {k: meta[k] for k in ("conversationId", "userId", "usage")}
        return (
            [{"type": "start", "messageId": message_id}],
            [*tools, {"type": "finish", "finishReason": finish_reason, "metadata": legacy}],
        )
    if variant is Variant.REASON_IN_METADATA:
        return (
            [{"type": "start", "messageId": message_id}, *text_start],
            [*text_end, *tools,
             {"type": "finish", "messageMetadata": {**meta, "finishReason": finish_reason}}],
        )
    return (
        [{"type": "start", "messageId": message_id}, {"type": "start-step"}, *text_start],
        [*text_end, *tools, {"type": "finish-step"},
         {"type": "finish", "finishReason": finish_reason, "messageMetadata": meta}],
    )


def _object_body(request: web.Request) -> dict[str, Any]:
    body = request[_JSON]
    if request[_RAW] and not isinstance(body, dict):
        raise _Reject(400, "VALIDATION_INVALID_JSON", "Request body is not valid JSON")
    return body if isinstance(body, dict) else {}


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                      {"limit": "Number must be between 1 and 100"})
    return limit


def _encode_cursor(key: str, value: int) -> str:
    return base64.b64encode(json.dumps({key: value}).encode()).decode()


def _cursor(raw: str | None, key: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value = json.loads(base64.b64decode(raw, validate=True))[key]
    except (ValueError, KeyError, TypeError) as exc:
        raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                      {"cursor": "Invalid cursor"}) from exc
    if not isinstance(value, int) or value < 0:
        raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                      {"cursor": "Invalid cursor"})
    return value


def _message_page(
    messages: list[FakeMessage], limit: int, cursor: str | None
) -> tuple[list[FakeMessage], dict[str, Any]]:
    """Pages backward from the newest; chronological within a page (Chatbase pagination)."""
    end = min(_cursor(cursor, "end", len(messages)), len(messages))
    start = max(0, end - limit)
    more = start > 0
    return messages[start:end], {
        "cursor": _encode_cursor("end", start) if more else None,
        "hasMore": more, "total": len(messages),
    }


def _date(raw: str | None, *, end: bool) -> int | None:
    if raw is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            day = datetime.fromisoformat(raw).replace(tzinfo=UTC)
            if end:
                day += timedelta(days=1, microseconds=-1)
            return int(day.timestamp())
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _Reject(400, "VALIDATION_INVALID_BODY", "Invalid request",
                      {"startDate" if not end else "endDate": "Invalid date"}) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _number(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)
