"""The Chatbase API v2 endpoints: streamed and plain chat, retry, tool results, feedback, reads.

HTTP is ``bridge.chatbase.transport``; what is retried, ``bridge.chatbase.retry``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from bridge.chatbase.limiter import RequestLimiter
from bridge.chatbase.retry import RequestKind, RetryPolicy
from bridge.chatbase.sse import result_from_json
from bridge.chatbase.stream import ChatStream, StreamErrorHook
from bridge.chatbase.transport import Failure, RequestHook, Transport, api_error
from bridge.core.clock import SystemClock
from bridge.core.errors import InvalidUserId
from bridge.core.identity import NOT_USER_ID_CHARS, USER_ID_MAX
from bridge.core.models import ChatResult, Feedback
from bridge.core.ports import Clock

__all__ = [
    "ChatStream",
    "ChatbaseClient",
    "RequestHook",
    "StreamErrorHook",
    "api_error",
    "check_user_id",
]

_PAGE_MAX: Final = 100


def check_user_id(user_id: str) -> str:
    """Return ``user_id`` if Chatbase accepts it (``^[a-zA-Z0-9._-]+$``, at most 128),
    else raise ``InvalidUserId``."""
    if not isinstance(user_id, str) or not user_id or NOT_USER_ID_CHARS.search(user_id):
        raise InvalidUserId(
            f"userId {user_id!r} may only contain letters, digits, '.', '_' and '-'"
        )
    if len(user_id) > USER_ID_MAX:
        raise InvalidUserId(f"userId is {len(user_id)} characters long; at most 128 allowed")
    return user_id


class ChatbaseClient:
    """One Chatbase agent behind API v2. The aiohttp session belongs to the caller."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        api_key: str,
        agent_id: str,
        base_url: str,
        limiter: RequestLimiter,
        timeout: float = 30,
        idle_timeout: float = 60,
        max_wait: float = 30,
        clock: Clock | None = None,
        on_request: RequestHook | None = None,
        on_stream_error: StreamErrorHook | None = None,
        wall_clock: Callable[[], float] = time.time,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self._transport = Transport(
            session=session, api_key=api_key, base_url=base_url, timeout=timeout,
            on_request=on_request,
        )
        self._limiter = limiter
        self._on_stream_error = on_stream_error
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._retry = retry_policy if retry_policy is not None else RetryPolicy(
            max_wait=max_wait, wall_clock=wall_clock
        )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._agent_id = agent_id
        self._agent_path = "/agents/" + quote(agent_id, safe="")

    @property
    def agent_id(self) -> str:
        """The agent every call goes to (CHATBASE_AGENT_ID)."""
        return self._agent_id

    @property
    def base_url(self) -> str:
        """The base URL without any credentials it may carry, fit for messages."""
        return self._transport.base_url

    @property
    def idle_timeout(self) -> float:
        return self._idle_timeout

    # ------------------------------------------------------------------ chat

    def chat_stream(
        self,
        *,
        message: str | None,
        conversation_id: str | None = None,
        user_id: str | None = None,
    ) -> ChatStream:
        """A streamed answer; ``message`` None continues after a tool result. Enter it to send
        the request."""
        body = self._chat_body(message, conversation_id, user_id, stream=True)
        return self._stream("chat", f"{self._agent_path}/chat", body)

    def retry_stream(self, *, conversation_id: str, message_id: str) -> ChatStream:
        """Regenerate the assistant message ``message_id`` (Chatbase discards it and all that
        follows it)."""
        path = f"{self._conversation_path(conversation_id)}/retry"
        body = {"messageId": message_id, "stream": True}
        return self._stream("retry", path, body)

    async def chat(
        self,
        *,
        message: str | None,
        conversation_id: str | None = None,
        user_id: str | None = None,
    ) -> ChatResult:
        """A whole answer at once (``stream: false``)."""
        body = self._chat_body(message, conversation_id, user_id, stream=False)
        # The answer is generated before the headers come, so allow the stream's idle time.
        wait = max(self._timeout, self._idle_timeout)
        data, request_id = await self._call(
            "chat", "POST", f"{self._agent_path}/chat", body=body, kind=RequestKind.POST,
            headers_timeout=wait,
        )
        return result_from_json(data, request_id=request_id)

    async def submit_tool_result(
        self, *, conversation_id: str, tool_call_id: str, output: Any
    ) -> None:
        path = f"{self._conversation_path(conversation_id)}/tool-result"
        await self._call(
            "tool_result", "POST", path, body={"toolCallId": tool_call_id, "output": output},
            kind=RequestKind.POST,
        )

    async def set_feedback(
        self, *, conversation_id: str, message_id: str, feedback: Feedback | None
    ) -> None:
        path = (
            f"{self._conversation_path(conversation_id)}/messages/"
            f"{quote(message_id, safe='')}/feedback"
        )
        value = Feedback(feedback).value if feedback is not None else None
        await self._call(
            "feedback", "PATCH", path, body={"feedback": value}, kind=RequestKind.IDEMPOTENT
        )

    # ------------------------------------------------------------------ reads

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """The conversation's metadata with its most recent ``messages`` (the ``data``
        object); older messages come from ``list_messages``."""
        body, _ = await self._call(
            "get_conversation", "GET", self._conversation_path(conversation_id),
            kind=RequestKind.IDEMPOTENT,
        )
        data = body.get("data")
        return data if isinstance(data, dict) else {}

    def list_messages(
        self, conversation_id: str, *, limit: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """Every message of a conversation, page by page (newest page first, chronological
        within a page, as Chatbase pages them)."""
        return self._pages(
            "list_messages", f"{self._conversation_path(conversation_id)}/messages", limit, {}
        )

    def list_user_conversations(
        self, user_id: str, *, limit: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """The conversations of one userId, most recently active first."""
        return self._pages("list_user_conversations", self._user_path(user_id), limit, {})

    async def user_conversations_page(
        self, user_id: str, *, cursor: str | None = None, limit: int = 5
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a userId's conversations, most recently active first, and the cursor
        of the next page (None on the last)."""
        params = {"limit": str(max(1, min(_PAGE_MAX, limit)))}
        if cursor:
            params["cursor"] = cursor
        return await self._page("list_user_conversations", self._user_path(user_id), params)

    def list_conversations(
        self, *, limit: int = 100, start_date: str | None = None, end_date: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The agent's API-created conversations, optionally within a createdAt window
        (``YYYY-MM-DD`` or ISO 8601)."""
        extra = {}
        if start_date is not None:
            extra["startDate"] = start_date
        if end_date is not None:
            extra["endDate"] = end_date
        return self._pages("list_conversations", f"{self._agent_path}/conversations", limit,
                           extra)

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (no authentication): ``{"status": "ok", "timestamp": …}``."""
        body, _ = await self._call("health", "GET", "/health", kind=RequestKind.IDEMPOTENT,
                                   auth=False)
        return body

    # ------------------------------------------------------------------ internals

    def _stream(self, endpoint: str, path: str, body: dict[str, Any]) -> ChatStream:
        def opener() -> Awaitable[tuple[aiohttp.ClientResponse, str | None]]:
            return self._open(endpoint, "POST", path, kind=RequestKind.STREAM, body=body,
                              params=None, auth=True, stream=True)

        return ChatStream(opener=opener, endpoint=endpoint, idle_timeout=self._idle_timeout,
                          on_error=self._on_stream_error)

    def _user_path(self, user_id: str) -> str:
        return f"{self._agent_path}/users/{quote(check_user_id(user_id), safe='')}/conversations"

    def _conversation_path(self, conversation_id: str) -> str:
        return f"{self._agent_path}/conversations/{quote(conversation_id, safe='')}"

    @staticmethod
    def _chat_body(
        message: str | None, conversation_id: str | None, user_id: str | None, *, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if message is not None:
            body["message"] = message
        if conversation_id is not None:
            body["conversationId"] = conversation_id
        if user_id is not None:
            body["userId"] = check_user_id(user_id)
        body["stream"] = stream
        return body

    async def _pages(
        self, endpoint: str, path: str, limit: int, extra: Mapping[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        params: dict[str, str] = {"limit": str(max(1, min(_PAGE_MAX, limit))), **extra}
        while True:
            items, cursor = await self._page(endpoint, path, params)
            for item in items:
                yield item
            if cursor is None:
                return
            params = {**params, "cursor": cursor}

    async def _page(
        self, endpoint: str, path: str, params: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a list and the cursor of the next (None on the last)."""
        body, _ = await self._call(endpoint, "GET", path, params=params,
                                   kind=RequestKind.IDEMPOTENT)
        data = body.get("data")
        items = [i for i in data if isinstance(i, dict)] if isinstance(data, list) else []
        pagination = body.get("pagination")
        if not isinstance(pagination, dict):
            return items, None
        cursor = pagination.get("cursor")
        if not pagination.get("hasMore") or not isinstance(cursor, str) or not cursor:
            return items, None
        return items, cursor

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        auth: bool = True,
        headers_timeout: float | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """Send a non-streamed request; return its JSON object and request id."""
        response, request_id = await self._open(
            endpoint, method, path, kind=kind, body=body, params=params, auth=auth,
            stream=False, headers_timeout=headers_timeout,
        )
        return await self._transport.read_json(endpoint, response, request_id), request_id

    async def _open(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        body: Any,
        params: Mapping[str, str] | None,
        auth: bool,
        stream: bool,
        headers_timeout: float | None = None,
    ) -> tuple[aiohttp.ClientResponse, str | None]:
        """Send, paced by the limiter and retried by the policy, until a 2xx answer's
        headers arrive."""
        retries = self._retry.start(endpoint, kind)
        while True:
            await self._limiter.acquire()
            outcome = await self._transport.attempt(
                endpoint, method, path, body=body, params=params, auth=auth, stream=stream,
                headers_timeout=headers_timeout if headers_timeout is not None
                else self._timeout,
            )
            if not isinstance(outcome, Failure):
                return outcome
            await self._clock.sleep(retries.after(outcome))
