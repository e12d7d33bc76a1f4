"""Chatbase API v2 over aiohttp: streamed and plain chat, retry, tool results, feedback, reads.

Retry policy (``chatbase-api.md`` §8-9):

* 429 is retried for every call — a throttled request was never executed — after
  ``Retry-After`` seconds, else until ``X-RateLimit-Reset``, else an exponential backoff,
  as long as the total wait stays within ``max_wait``; then ``ChatbaseRateLimited``.
* A refused connection and 503 ``SERVICE_UNDER_MAINTENANCE`` ("rejected before any data is
  read or written") are retried for every call.
* Other 5xx, timeouts before the answer's headers and connections dropped before them are
  retried for idempotent calls (GETs, the feedback PATCH) and for *streamed* chat and retry:
  a streamed answer sends its headers before generating, so an error instead of headers means
  nothing was shown to anyone. A non-streamed chat or a tool result is not replayed then: it
  may have been executed and charged.
* Nothing is retried once a streamed body has started.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from yarl import URL

from bridge.chatbase.limiter import RequestLimiter
from bridge.chatbase.sse import StreamParser, events_from_result, result_from_json
from bridge.core.clock import SystemClock
from bridge.core.errors import (
    BridgeError,
    ChatbaseAPIError,
    ChatbaseError,
    ChatbaseRateLimited,
    ChatbaseUnavailable,
    InvalidUserId,
    StreamError,
    StreamIdleTimeout,
    StreamInterrupted,
)
from bridge.core.identity import NOT_USER_ID_CHARS, USER_ID_MAX
from bridge.core.models import ChatResult, Feedback, StreamEvent
from bridge.core.ports import Clock

__all__ = [
    "ChatStream",
    "ChatbaseClient",
    "RequestHook",
    "api_error",
    "check_user_id",
]

log = logging.getLogger(__name__)

# (endpoint name, HTTP status or None when no answer came, Chatbase error code or None)
RequestHook = Callable[[str, int | None, str | None], None]


_TRANSIENT_RETRIES: Final = 2
_MAX_RATE_LIMITED: Final = 10
_BACKOFF_BASE: Final = 0.5
_BACKOFF_CAP: Final = 8.0
# A server that sends ``finish`` but neither ``[DONE]`` nor EOF is given this long for the
# late metadata chunk one legacy shape sends after ``finish``; then the answer counts as done.
_AFTER_FINISH_GRACE: Final = 2.0
_PAGE_MAX: Final = 100
_MAINTENANCE = "SERVICE_UNDER_MAINTENANCE"
_RATE_LIMITED = "RATE_LIMIT_TOO_MANY_REQUESTS"


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


def api_error(
    status: int, raw: bytes, *, request_id: str | None, reason: str | None = None
) -> ChatbaseAPIError:
    """Turn an error answer into ``ChatbaseAPIError``; a body that is not Chatbase's envelope
    still gives a readable one (code ``HTTP_<status>``, message = the trimmed body)."""
    code = f"HTTP_{status}"
    message: str | None = None
    details: dict[str, Any] | None = None
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            if isinstance(error.get("code"), str) and error["code"]:
                code = error["code"]
            if isinstance(error.get("message"), str):
                message = error["message"]
            if isinstance(error.get("details"), dict):
                details = error["details"]
        elif isinstance(error, str):
            message = error
        elif isinstance(body.get("message"), str):
            message = body["message"]
    if message is None:
        text = " ".join(raw.decode("utf-8", errors="replace").split())
        if len(text) > 300:
            text = text[:299] + "…"
        message = text or reason or "no details given"
    return ChatbaseAPIError(
        code=code, message=message, status=status, details=details, request_id=request_id
    )


class _Policy(enum.Enum):
    IDEMPOTENT = "idempotent"  # GET, feedback PATCH: any transient failure is retried
    STREAM = "stream"  # streamed POST: retried until the body starts
    POST = "post"  # only retried when nothing was executed


def _backoff(attempt: int) -> float:
    base: float = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** (attempt - 1))
    return base * (0.5 + random.random())


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
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._api_key = api_key
        self._agent_id = agent_id
        self._base = base_url.rstrip("/")
        self._limiter = limiter
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._max_wait = max_wait
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._on_request = on_request
        self._wall = wall_clock
        self._agent_path = "/agents/" + quote(agent_id, safe="")
        # aiohttp's own timeouts are off: headers are awaited under ``timeout``, streamed
        # bodies under ``idle_timeout`` per read (a long answer must not hit a total cap).
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout, sock_read=None
        )

    @property
    def base_url(self) -> str:
        """The base URL without any credentials it may carry, fit for messages."""
        try:
            return str(URL(self._base).with_user(None))
        except ValueError:
            return "the configured Chatbase URL"

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
        return ChatStream(client=self, endpoint="chat", path=f"{self._agent_path}/chat",
                          body=body)

    def retry_stream(self, *, conversation_id: str, message_id: str) -> ChatStream:
        """Regenerate the assistant message ``message_id`` (Chatbase discards it and all that
        follows it)."""
        path = f"{self._conversation_path(conversation_id)}/retry"
        body = {"messageId": message_id, "stream": True}
        return ChatStream(client=self, endpoint="retry", path=path, body=body)

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
            "chat", "POST", f"{self._agent_path}/chat", body=body, policy=_Policy.POST,
            headers_timeout=wait,
        )
        return result_from_json(data, request_id=request_id)

    async def submit_tool_result(
        self, *, conversation_id: str, tool_call_id: str, output: Any
    ) -> None:
        path = f"{self._conversation_path(conversation_id)}/tool-result"
        await self._call(
            "tool_result", "POST", path, body={"toolCallId": tool_call_id, "output": output},
            policy=_Policy.POST,
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
            "feedback", "PATCH", path, body={"feedback": value}, policy=_Policy.IDEMPOTENT
        )

    # ------------------------------------------------------------------ reads

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        """The conversation's metadata with its most recent ``messages`` (the ``data``
        object); older messages come from ``list_messages``."""
        body, _ = await self._call(
            "get_conversation", "GET", self._conversation_path(conversation_id),
            policy=_Policy.IDEMPOTENT,
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
        check_user_id(user_id)
        path = f"{self._agent_path}/users/{quote(user_id, safe='')}/conversations"
        return self._pages("list_user_conversations", path, limit, {})

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
        body, _ = await self._call("health", "GET", "/health", policy=_Policy.IDEMPOTENT,
                                   auth=False)
        return body

    # ------------------------------------------------------------------ internals

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
            body, _ = await self._call(endpoint, "GET", path, params=params,
                                       policy=_Policy.IDEMPOTENT)
            data = body.get("data")
            for item in data if isinstance(data, list) else ():
                if isinstance(item, dict):
                    yield item
            pagination = body.get("pagination")
            if not isinstance(pagination, dict):
                return
            cursor = pagination.get("cursor")
            if not pagination.get("hasMore") or not isinstance(cursor, str) or not cursor:
                return
            params = {**params, "cursor": cursor}

    def _headers(self, *, auth: bool, stream: bool) -> dict[str, str]:
        headers = {
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": "chatbase-bridge",
        }
        if auth:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _hook(self, endpoint: str, status: int | None, code: str | None) -> None:
        if self._on_request is not None:
            self._on_request(endpoint, status, code)

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        policy: _Policy,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        auth: bool = True,
        headers_timeout: float | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """Send a non-streamed request; return its JSON object and request id."""
        response, request_id = await self._open(
            endpoint, method, path, policy=policy, body=body, params=params, auth=auth,
            stream=False, headers_timeout=headers_timeout,
        )
        try:
            async with asyncio.timeout(self._timeout):
                raw = await response.read()
        except TimeoutError as exc:
            raise ChatbaseUnavailable(
                f"Chatbase at {self.base_url} stopped sending its answer to {endpoint}",
                request_id=request_id,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ChatbaseUnavailable(
                f"Chatbase at {self.base_url} dropped the connection during {endpoint} "
                f"({type(exc).__name__})",
                request_id=request_id,
            ) from exc
        finally:
            response.release()
        try:
            value = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise ChatbaseAPIError(
                code="INVALID_RESPONSE", message="the answer is not JSON",
                status=response.status, request_id=request_id,
            ) from exc
        if not isinstance(value, dict):
            raise ChatbaseAPIError(
                code="INVALID_RESPONSE", message="the answer is not a JSON object",
                status=response.status, request_id=request_id,
            )
        return value, request_id

    async def _open(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        policy: _Policy,
        body: Any,
        params: Mapping[str, str] | None,
        auth: bool,
        stream: bool,
        headers_timeout: float | None = None,
    ) -> tuple[aiohttp.ClientResponse, str | None]:
        """Send with the retry policy until a 2xx answer's headers arrive."""
        url = URL(self._base + path, encoded=True)
        headers = self._headers(auth=auth, stream=stream)
        wait_for_headers = headers_timeout if headers_timeout is not None else self._timeout
        retried = 0
        limited = 0
        waited = 0.0
        while True:
            await self._limiter.acquire()
            failure: ChatbaseError
            try:
                async with asyncio.timeout(wait_for_headers):
                    response = await self._session.request(
                        method, url, json=body, params=params, headers=headers,
                        timeout=self._aiohttp_timeout, allow_redirects=False,
                    )
            except (aiohttp.ClientSSLError, aiohttp.InvalidURL) as exc:
                self._hook(endpoint, None, None)
                raise ChatbaseUnavailable(
                    f"Chatbase at {self.base_url} cannot be used: {type(exc).__name__}"
                ) from exc
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Nothing reached Chatbase: safe to send again whatever the request is.
                self._hook(endpoint, None, None)
                failure = ChatbaseUnavailable(
                    f"Chatbase at {self.base_url} could not be reached ({_describe(exc)})"
                )
                retryable = True
                cause: BaseException = exc
            except TimeoutError as exc:
                self._hook(endpoint, None, None)
                failure = ChatbaseUnavailable(
                    f"Chatbase at {self.base_url} did not answer {endpoint} within "
                    f"{wait_for_headers:g}s"
                )
                retryable = policy is not _Policy.POST
                cause = exc
            except (aiohttp.ClientError, OSError) as exc:
                self._hook(endpoint, None, None)
                failure = ChatbaseUnavailable(
                    f"Chatbase at {self.base_url} dropped the connection before answering "
                    f"{endpoint} ({_describe(exc)})"
                )
                retryable = policy is not _Policy.POST
                cause = exc
            else:
                request_id = response.headers.get("x-request-id")
                status = response.status
                if 200 <= status < 300:
                    self._hook(endpoint, status, None)
                    return response, request_id
                error = await self._read_error(response, request_id)
                self._hook(endpoint, status, error.code)
                if status == 429 or error.code == _RATE_LIMITED:
                    delay = self._rate_limit_delay(response.headers, limited + 1)
                    limited += 1
                    if waited + delay > self._max_wait or limited > _MAX_RATE_LIMITED:
                        log.warning(
                            "Chatbase %s rate limited (%s), giving up after waiting %.1fs "
                            "[request id %s]", endpoint, error.code, waited, request_id,
                        )
                        raise ChatbaseRateLimited(
                            retry_after=delay, message=error.api_message, status=status,
                            code=error.code, request_id=request_id,
                        )
                    waited += delay
                    log.warning(
                        "Chatbase %s rate limited (%s); waiting %.2fs [request id %s]",
                        endpoint, error.code, delay, request_id,
                    )
                    await self._clock.sleep(delay)
                    continue
                failure = error
                cause = error
                retryable = status == 503 or error.code == _MAINTENANCE or (
                    status >= 500 and policy is not _Policy.POST
                )
            if not retryable or retried >= _TRANSIENT_RETRIES:
                _log_failure(endpoint, failure)
                if failure is cause:
                    raise failure
                raise failure from cause
            retried += 1
            delay = _backoff(retried)
            log.warning(
                "Chatbase %s failed (%s); retry %d in %.2fs [request id %s]",
                endpoint, _summary(failure), retried, delay, failure.request_id,
            )
            await self._clock.sleep(delay)

    async def _read_error(
        self, response: aiohttp.ClientResponse, request_id: str | None
    ) -> ChatbaseAPIError:
        raw = b""
        try:
            async with asyncio.timeout(self._timeout):
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError):
            pass  # the status alone still makes a readable error
        finally:
            response.release()
        return api_error(response.status, raw, request_id=request_id, reason=response.reason)

    def _rate_limit_delay(self, headers: Mapping[str, str], attempt: int) -> float:
        retry_after = headers.get("Retry-After")
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(retry_after)
                except (TypeError, ValueError, IndexError):
                    when = None
                if when is not None:
                    return max(0.0, when.timestamp() - self._wall())
        reset = headers.get("X-RateLimit-Reset")
        if reset:
            try:
                value = float(reset)
            except ValueError:
                value = None
            if value is not None:
                # Docs disagree on the unit (ms vs s since the epoch, §9); small values can
                # only be a number of seconds to wait.
                if value > 1e12:
                    return max(0.0, value / 1000 - self._wall())
                if value > 1e9:
                    return max(0.0, value - self._wall())
                return max(0.0, value)
        return _backoff(attempt)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def _summary(error: ChatbaseError) -> str:
    if isinstance(error, ChatbaseAPIError):
        return f"{error.code}, HTTP {error.status}"
    return str(error)


def _log_failure(endpoint: str, error: ChatbaseError) -> None:
    if isinstance(error, ChatbaseAPIError):
        log.warning(
            "Chatbase %s answered %s (HTTP %d): %s [request id %s]",
            endpoint, error.code, error.status, error.api_message, error.request_id,
        )
    else:
        log.warning("Chatbase %s failed: %s", endpoint, error)


class ChatStream:
    """One streamed answer: ``async with client.chat_stream(...) as stream: async for ev in
    stream``. Entering sends the request (retrying as the module docstring says) and raises
    ``ChatbaseError`` on an error answer; iterating yields ``StreamEvent``s, ending after the
    ``StreamFinish``; leaving releases the connection, also when the consumer stops early."""

    def __init__(
        self, *, client: ChatbaseClient, endpoint: str, path: str, body: dict[str, Any]
    ) -> None:
        self._client = client
        self._endpoint = endpoint
        self._path = path
        self._body = body
        self._response: aiohttp.ClientResponse | None = None
        self._parser: StreamParser | None = None
        self._pending: deque[StreamEvent] = deque()
        self._ended = False
        self._result: ChatResult | None = None
        self._deadline = 0.0
        self._reading = False
        self._watchdog: asyncio.TimerHandle | None = None
        self.request_id: str | None = None

    async def __aenter__(self) -> ChatStream:
        if self._response is not None or self._ended:
            raise RuntimeError("a ChatStream can only be entered once")
        client = self._client
        response, self.request_id = await client._open(
            self._endpoint, "POST", self._path, policy=_Policy.STREAM, body=self._body,
            params=None, auth=True, stream=True,
        )
        self._response = response
        if response.content_type == "application/json":
            # The server ignored ``stream: true``; the whole answer is in one JSON body.
            try:
                body, _ = await _read_json_body(response, client, self.request_id)
            finally:
                self._release()
            self._result = result_from_json(body, request_id=self.request_id)
            self._pending.extend(events_from_result(self._result))
            self._ended = True
        else:
            self._parser = StreamParser(request_id=self.request_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ended = True
        self._release(abort=True)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> StreamEvent:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    @property
    def text(self) -> str:
        """The answer text received so far."""
        if self._result is not None:
            return self._result.text
        return self._parser.text if self._parser is not None else ""

    def result(self) -> ChatResult:
        """The whole answer; only after the stream finished."""
        if self._result is None:
            raise RuntimeError("the stream has not finished yet")
        return self._result

    async def read_all(self) -> ChatResult:
        """Consume the remaining events and return the result."""
        async for _ in self:
            pass
        return self.result()

    async def _read(self) -> None:
        parser = self._parser
        response = self._response
        if parser is None or response is None:
            raise RuntimeError("enter the ChatStream (async with) before iterating it")
        idle = self._client.idle_timeout
        wait = min(idle, _AFTER_FINISH_GRACE) if parser.finished else idle
        try:
            parser.check()
            try:
                chunk = await self._read_within(response, wait)
            except TimeoutError as exc:
                if not parser.finished:
                    raise StreamIdleTimeout(
                        f"Chatbase sent nothing for {idle:g}s in the middle of an answer",
                        request_id=self.request_id,
                    ) from exc
                events = parser.close()
            except (aiohttp.ClientError, OSError) as exc:
                if not parser.finished:
                    raise StreamInterrupted(
                        f"Chatbase dropped the connection in the middle of an answer "
                        f"({type(exc).__name__})",
                        request_id=self.request_id,
                    ) from exc
                events = parser.close()
            else:
                events = parser.feed(chunk) if chunk else parser.close()
        except StreamError as exc:
            self._ended = True
            self._release(abort=True)
            log.warning(
                "Chatbase %s stream failed: %s [code %s, request id %s]", self._endpoint, exc,
                getattr(exc, "code", None) or type(exc).__name__, self.request_id,
            )
            raise
        except BridgeError:
            self._ended = True
            self._release(abort=True)
            raise
        self._pending.extend(events)
        if parser.done:
            self._ended = True
            self._result = parser.result()
            self._release()

    async def _read_within(self, response: aiohttp.ClientResponse, wait: float) -> bytes:
        """``readany()`` that raises ``TimeoutError`` when nothing comes for ``wait`` seconds.

        One timer per stream, moved only when it would fire too late, instead of an
        ``asyncio.timeout`` per read: a stream reads once per delta, and arming and
        cancelling a timer for each read was the bridge's largest cost per delta
        (README.md (Performance))."""
        loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + wait
        watchdog = self._watchdog
        if watchdog is None or watchdog.when() > deadline:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = loop.call_at(deadline, self._on_watchdog, response)
        self._reading = True
        try:
            return await response.content.readany()
        finally:
            self._reading = False

    def _on_watchdog(self, response: aiohttp.ClientResponse) -> None:
        self._watchdog = None
        if self._response is not response or not self._reading:
            return  # released, or between reads: the next read arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._watchdog = loop.call_at(self._deadline, self._on_watchdog, response)
            return
        # Fails the pending read the way aiohttp's own read timeout does.
        response.content.set_exception(TimeoutError("no data from Chatbase in time"))

    def _release(self, *, abort: bool = False) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        response, self._response = self._response, None
        if response is None:
            return
        if abort:
            response.close()
        else:
            response.release()


async def _read_json_body(
    response: aiohttp.ClientResponse, client: ChatbaseClient, request_id: str | None
) -> tuple[dict[str, Any], str | None]:
    try:
        async with asyncio.timeout(client.idle_timeout):
            raw = await response.read()
        value = json.loads(raw)
    except TimeoutError as exc:
        raise StreamIdleTimeout("Chatbase stopped sending its answer",
                                request_id=request_id) from exc
    except aiohttp.ClientError as exc:
        raise StreamInterrupted("Chatbase dropped the connection during its answer",
                                request_id=request_id) from exc
    except (ValueError, RecursionError) as exc:
        raise ChatbaseAPIError(code="INVALID_RESPONSE", message="the answer is not JSON",
                               status=response.status, request_id=request_id) from exc
    if not isinstance(value, dict):
        raise ChatbaseAPIError(code="INVALID_RESPONSE", message="the answer is not an object",
                               status=response.status, request_id=request_id)
    return value, request_id
