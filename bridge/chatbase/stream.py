"""One streamed Chatbase answer: entering sends the request, iterating yields its events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import aiohttp

from bridge.chatbase.sse import StreamParser, events_from_result, result_from_json
from bridge.core.errors import (
    BridgeError,
    ChatbaseAPIError,
    StreamError,
    StreamIdleTimeout,
    StreamInterrupted,
)
from bridge.core.models import ChatResult, StreamEvent

__all__ = ["ChatStream", "Opener", "StreamErrorHook"]

log = logging.getLogger(__name__)

# A server that sends ``finish`` but neither ``[DONE]`` nor EOF is given this long for the
# late metadata chunk one legacy shape sends after ``finish``; then the answer counts as done.
_AFTER_FINISH_GRACE: Final = 2.0

# Sends the request (with the retry policy) and returns the 2xx response and its request id.
Opener = Callable[[], Awaitable[tuple[aiohttp.ClientResponse, str | None]]]
# (endpoint name, the error chunk's code or the kind of break, e.g. StreamIdleTimeout)
StreamErrorHook = Callable[[str, str], None]


class ChatStream:
    """One streamed answer: ``async with client.chat_stream(...) as stream: async for ev in
    stream``. Entering sends the request (retrying as ``bridge.chatbase.retry`` says) and raises
    ``ChatbaseError`` on an error answer; iterating yields ``StreamEvent``s, ending after the
    ``StreamFinish``; leaving releases the connection, also when the consumer stops early."""

    def __init__(self, *, opener: Opener, endpoint: str, idle_timeout: float,
                 on_error: StreamErrorHook | None = None) -> None:
        self._open = opener
        self._on_error = on_error
        self._endpoint = endpoint
        self._idle_timeout = idle_timeout
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
        response, self.request_id = await self._open()
        self._response = response
        if response.content_type == "application/json":
            # The server ignored ``stream: true``; the whole answer is in one JSON body.
            try:
                body = await _read_json_body(response, self._idle_timeout, self.request_id)
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
        if not await self._fill():
            raise StopAsyncIteration
        return self._pending.popleft()

    async def read_batch(self) -> list[StreamEvent]:
        """Every event ready now: those pending, else those of the next read of the
        connection (waiting for it); an empty list once the stream has ended. A read takes
        in all the bytes that have arrived, so a reader that comes back less often gets
        more events per call."""
        if not await self._fill():
            return []
        events = list(self._pending)
        self._pending.clear()
        return events

    async def hold(self, wait: Awaitable[None]) -> None:
        """Await ``wait`` with the connection's reading paused: what Chatbase sends meanwhile
        waits in the socket's buffer, and the next read takes it in at once, instead of the
        loop waking and aiohttp parsing once per delta while nobody reads. Reading resumes
        however ``wait`` ends. A stream whose body has all arrived just awaits ``wait``."""
        response = self._response
        connection = response.connection if response is not None else None
        transport = connection.transport if connection is not None else None
        if transport is None or not transport.is_reading():
            await wait
            return
        transport.pause_reading()
        try:
            await wait
        finally:
            # A no-op on a transport closed meanwhile (the stream aborted).
            transport.resume_reading()

    async def _fill(self) -> bool:
        """Read until events are pending; False once the stream has ended without any."""
        while not self._pending:
            if self._ended:
                return False
            await self._read()
        return True

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
        idle = self._idle_timeout
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
            code = getattr(exc, "code", None) or type(exc).__name__
            log.warning("Chatbase %s stream failed: %s [code %s, request id %s]",
                        self._endpoint, exc, code, self.request_id)
            if self._on_error is not None:
                self._on_error(self._endpoint, code)
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
        (docs/performance.md)."""
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
    response: aiohttp.ClientResponse, idle_timeout: float, request_id: str | None
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(idle_timeout):
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
    return value
