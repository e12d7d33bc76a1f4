"""A cheap Chatbase stream source for the throughput scenario, in a process of its own.

Run as ``python -m tests.bench.sse_source``. It answers ``POST /agents/{agent}/chat`` on an
ephemeral loopback port with the bytes ``tests.fakes.chatbase.FakeChatbase`` sends for the same
question (the bench's seeded answer), the same HTTP/1.1 response head and chunked framing,
one chunk per write as the fake writes them: the opening frames, then after the time to first
token one chunk per text delta at the set pace, then the closing frames and ``[DONE]``.
``tests/unit/bench/test_sse_source.py`` checks the wire bytes against a running FakeChatbase
(they differ only in the Date header and the random conversation id the fake makes up).

What makes it cheap: no web framework, one ``asyncio.Protocol`` per connection, each answer
encoded once when asked (a delta's frame is cached by its text), and one ticker for all
streams that writes whatever each stream is due, so a delta costs one ``transport.write``.
When the bridge stops reading (a full write buffer) the source holds back instead of
buffering without bound; ``scheduled`` minus ``written`` then shows the bridge was behind.

It prints one JSON line (``chatbase`` and ``control`` URLs, ``api_key``, ``agent_id``) and
exits when its standard input closes. Control endpoints (JSON, on the second port):

* ``POST /config`` — ``first_token_delay`` and ``delta_delay`` (seconds) for every answer.
* ``GET /stats`` — streams started and finished, deltas scheduled (due by the clock) and
  written, and this process's CPU seconds.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.bench.answers import answer_for
from tests.bench.procs import run_helper, until_released
from tests.fakes.chatbase import split_words

API_KEY = "bench-source-key"
AGENT_ID = "bench-agent"
# aiohttp's own Server header, so the response head matches FakeChatbase's byte for byte.
SERVER = f"Python/{sys.version_info[0]}.{sys.version_info[1]} aiohttp/{aiohttp.__version__}"
# A stream whose reader is this far behind waits for it (the bridge is the bottleneck then).
HIGH_WATER = 256 * 1024
_CHAT_PATH = re.compile(r"^/agents/([^/]+)/chat$")


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk, as aiohttp frames each write of a streamed response."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _frame(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


@dataclass
class Encoded:
    """One answer on the wire: the response head, then the chunks in the order written."""

    head: bytes
    opening: bytes  # the chunk before the first delta
    deltas: list[bytes]  # one chunk per text delta
    closing: bytes  # the closing frames' chunk and the end of the chunked body


class Encoder:
    """FakeChatbase's canonical stream (``Variant.CANONICAL``), as bytes."""

    def __init__(self) -> None:
        self._deltas: dict[str, bytes] = {}

    def delta(self, text: str) -> bytes:
        found = self._deltas.get(text)
        if found is None:
            found = chunk(b'data: {"type":"text-delta","id":"t1","delta":'
                          + json.dumps(text, ensure_ascii=False).encode() + b"}\n\n")
            if len(self._deltas) < 100_000:
                self._deltas[text] = found
        return found

    def answer(self, text: str, *, request_id: str, message_id: str, user_message_id: str,
               conversation_id: str, user_id: str | None, date: str) -> Encoded:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n"
            "x-vercel-ai-ui-message-stream: v1\r\n"
            "x-accel-buffering: no\r\n"
            f"x-request-id: {request_id}\r\n"
            "Transfer-Encoding: chunked\r\n"
            f"Date: {date}\r\n"
            f"Server: {SERVER}\r\n\r\n"
        ).encode()
        deltas = split_words(text)
        text_start: list[dict[str, Any]] = (
            [{"type": "text-start", "id": "t1"}] if deltas else [])
        text_end: list[dict[str, Any]] = [{"type": "text-end", "id": "t1"}] if deltas else []
        opening = b"".join(_frame(c) for c in (
            {"type": "start", "messageId": message_id}, {"type": "start-step"}, *text_start))
        meta: dict[str, Any] = {"messageId": message_id, "userMessageId": user_message_id,
                "conversationId": conversation_id, "userId": user_id,
                "usage": {"credits": 1}}
        closing = b"".join(_frame(c) for c in (
            *text_end, {"type": "finish-step"},
            {"type": "finish", "finishReason": "stop", "messageMetadata": meta},
        )) + b"data: [DONE]\n\n"
        return Encoded(head=head, opening=chunk(opening),
                       deltas=[self.delta(d) for d in deltas],
                       closing=chunk(closing) + b"0\r\n\r\n")


@dataclass
class _Stream:
    connection: _Connection
    deltas: list[bytes]
    closing: bytes
    first_at: float  # loop time the first delta is due
    delay: float
    sent: int = 0
    scheduled: int = 0


@dataclass
class Stats:
    streams_started: int = 0
    streams_finished: int = 0
    deltas_scheduled: int = 0
    deltas_written: int = 0
    held_back: int = 0  # ticks a stream waited for its reader


@dataclass
class Source:
    """The chat endpoint's state: ids as FakeChatbase numbers them, and the open streams."""

    api_key: str = API_KEY
    agent_id: str = AGENT_ID
    first_token_delay: float = 0.0
    delta_delay: float = 0.0
    tick: float = 0.002
    stats: Stats = field(default_factory=Stats)
    encoder: Encoder = field(default_factory=Encoder)
    streams: list[_Stream] = field(default_factory=list)
    conversations: dict[str, str | None] = field(default_factory=dict)  # id → userId
    _ids: int = 0
    _requests: int = 0
    _conversations: int = 0
    _date: tuple[int, str] = (0, "")

    def _next(self) -> int:
        self._ids += 1
        return self._ids

    def date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True))
        return self._date[1]

    def new_conversation_id(self) -> str:
        """Deterministic where the fake's are random: a version-4 UUID of the same shape."""
        self._conversations += 1
        return str(uuid.UUID(int=self._conversations, version=4))

    def respond(self, connection: _Connection, method: str, path: str,
                headers: dict[str, str], body: bytes) -> None:
        self._requests += 1
        request_id = f"req_{self._requests:06d}"
        found = _CHAT_PATH.match(path)
        if method != "POST" or found is None:
            connection.reply_json(404, {"error": {"code": "RESOURCE_NOT_FOUND",
                                                  "message": "No such endpoint"}}, request_id)
            return
        if headers.get("authorization") != f"Bearer {self.api_key}":
            connection.reply_json(401, {"error": {"code": "AUTH_INVALID_API_KEY",
                                                  "message": "Invalid API key"}}, request_id)
            return
        if found.group(1) != self.agent_id:
            connection.reply_json(404, {"error": {"code": "AGENT_NOT_FOUND",
                                                  "message": "Agent not found"}}, request_id)
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or request.get("stream", True) is not True:
            connection.reply_json(400, {"error": {"code": "VALIDATION_INVALID_BODY",
                                                  "message": "Invalid request"}}, request_id)
            return
        message = request.get("message")
        conversation_id = request.get("conversationId")
        if conversation_id is None:
            self._next()  # the fake numbers the conversation from the same sequence
            conversation_id = self.new_conversation_id()
            self.conversations[conversation_id] = request.get("userId")
        elif conversation_id not in self.conversations:
            connection.reply_json(404, {"error": {
                "code": "RESOURCE_NOT_FOUND",
                "message": "The requested item could not be found"}}, request_id)
            return
        user_message_id = f"msg_{self._next():06d}"
        message_id = f"msg_{self._next():06d}"
        encoded = self.encoder.answer(
            answer_for(message), request_id=request_id, message_id=message_id,
            user_message_id=user_message_id, conversation_id=conversation_id,
            user_id=self.conversations[conversation_id], date=self.date())
        connection.write(encoded.head + encoded.opening)
        self.stats.streams_started += 1
        loop_now = asyncio.get_running_loop().time()
        self.streams.append(_Stream(connection, encoded.deltas, encoded.closing,
                                    loop_now + self.first_token_delay, self.delta_delay))
        connection.streaming = True

    def pump(self, now: float) -> None:
        """Writes what each stream is due by ``now``; drops finished and closed ones."""
        stats = self.stats
        keep: list[_Stream] = []
        for stream in self.streams:
            connection = stream.connection
            if connection.closed:
                continue
            total = len(stream.deltas)
            if now < stream.first_at:
                keep.append(stream)
                continue
            delay = stream.delay
            due = total if delay <= 0 else min(total, int((now - stream.first_at) / delay) + 1)
            if due > stream.scheduled:
                stats.deltas_scheduled += due - stream.scheduled
                stream.scheduled = due
            if due > stream.sent:
                if connection.buffered() > HIGH_WATER:
                    stats.held_back += 1
                    keep.append(stream)
                    continue
                out = b"".join(stream.deltas[stream.sent:due])
                stats.deltas_written += due - stream.sent
                stream.sent = due
                if due == total:
                    connection.write(out + stream.closing)
                    stats.streams_finished += 1
                    connection.done_streaming()
                    continue
                connection.write(out)
            keep.append(stream)
        self.streams = keep

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.pump(loop.time())
            # Half a delta's interval: a delta leaves at most that late, and a write rarely
            # carries two; every tick visits every stream, so no shorter than needed.
            delay = self.delta_delay
            await asyncio.sleep(min(0.01, max(0.001, delay / 2)) if delay > 0 else self.tick)


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: one request at a time (aiohttp's client does not pipeline)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.streaming = False
        self.closed = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def done_streaming(self) -> None:
        self.streaming = False
        if self.close_after and self.transport is not None:
            self.transport.close()
            return
        self._next_request()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.streaming:
            self._next_request()

    def _next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4:end + 4 + length]
        self.buffer = self.buffer[end + 4 + length:]
        method, path, _version = lines[0].split(" ", 2)
        self.close_after = headers.get("connection", "").lower() == "close"
        self.source.respond(self, method, path, headers, body)

    def reply_json(self, status: int, payload: dict[str, Any], request_id: str) -> None:
        body = json.dumps(payload).encode()
        reason = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "")
        self.write((
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"x-request-id: {request_id}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Date: {self.source.date()}\r\n"
            f"Server: {SERVER}\r\n\r\n"
        ).encode() + body)
        self.done_streaming()


def control_app(source: Source) -> web.Application:
    async def config(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        source.first_token_delay = float(body.get("first_token_delay", 0.0))
        source.delta_delay = float(body.get("delta_delay", 0.0))
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({**source.stats.__dict__, "open_streams": len(source.streams),
                                  "cpu_seconds": time.process_time()})

    app = web.Application()
    app.router.add_post("/config", config)
    app.router.add_get("/stats", stats)
    return app


async def serve() -> None:
    loop = asyncio.get_running_loop()
    source = Source()
    server = await loop.create_server(lambda: _Connection(source), host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    control = TestServer(control_app(source), host="127.0.0.1", port=0)
    await control.start_server()
    print(json.dumps({
        "chatbase": f"http://127.0.0.1:{port}",
        "control": str(control.make_url("")).rstrip("/"),
        "api_key": source.api_key,
        "agent_id": source.agent_id,
    }), flush=True)
    async with asyncio.TaskGroup() as tasks:
        ticker = tasks.create_task(source.run())
        await until_released()
        ticker.cancel()
    server.close()
    await control.close()


def main() -> None:
    run_helper(serve)


if __name__ == "__main__":
    main()
