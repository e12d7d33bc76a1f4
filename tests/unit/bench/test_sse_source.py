"""The throughput scenario's stream source sends what FakeChatbase sends: the same HTTP/1.1
response head, the same chunked framing (one chunk per delta) and the same SSE bytes for the
same question, over a new conversation and a follow-up in it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

from tests.bench.answers import answer_text, question
from tests.bench.sse_source import Source, _Connection
from tests.fakes.chatbase import Answer, FakeChatbase, split_words

_END = b"\n\r\n0\r\n\r\n"  # the last frame's blank line, its chunk's CRLF, the last chunk
_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
_CONVERSATION = re.compile(rb'"conversationId":"([0-9a-f-]{36})"')


@contextlib.asynccontextmanager
async def _source(api_key: str, agent_id: str, *, first_token_delay: float,
                  delta_delay: float) -> AsyncIterator[tuple[Source, int]]:
    loop = asyncio.get_running_loop()
    source = Source(api_key=api_key, agent_id=agent_id, first_token_delay=first_token_delay,
                    delta_delay=delta_delay)
    server = await loop.create_server(lambda: _Connection(source), host="127.0.0.1", port=0)
    ticker = asyncio.create_task(source.run())
    try:
        yield source, server.sockets[0].getsockname()[1]
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        server.close()
        await server.wait_closed()


class _Client:
    """One keep-alive connection, raw bytes both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    async def chat(self, path: str, api_key: str, body: dict[str, object]) -> bytes:
        raw = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {api_key}\r\nAccept: text/event-stream\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
            + raw)
        data = b""
        async with asyncio.timeout(10):
            while not data.endswith(_END):
                more = await self.reader.read(65536)
                assert more, f"connection closed after {data!r}"
                data += more
        return data


@contextlib.asynccontextmanager
async def _client(port: int) -> AsyncIterator[_Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield _Client(reader, writer, port)
    finally:
        writer.close()
        await writer.wait_closed()


async def _conversation(port: int, path: str, api_key: str, seeds: list[int],
                        words: int) -> list[bytes]:
    """A new conversation, then follow-ups in it, on one connection."""
    out: list[bytes] = []
    conversation: str | None = None
    async with _client(port) as client:
        for seed in seeds:
            body: dict[str, object] = {"message": question(seed, words), "stream": True}
            if conversation is None:
                body["userId"] = "discord.U7"
            else:
                body["conversationId"] = conversation
            response = await client.chat(path, api_key, body)
            found = _CONVERSATION.search(response)
            assert found is not None
            conversation = found.group(1).decode()
            out.append(response)
    return out


async def test_the_wire_bytes_are_fakechatbases() -> None:
    seeds, words = [11, 12, 13], 25
    async with FakeChatbase() as fake:
        fake.answer_text_for = lambda m: answer_text(int((m or "").split()[1][1:]), words)
        # Paced, as the benchmark runs it: the opening frames, a chunk per delta, the rest.
        fake.default_answer = Answer(first_token_delay=0.001, delta_delay=0.0005)
        path = f"/agents/{fake.agent_id}/chat"
        fake_port = int(fake.base_url.rsplit(":", 1)[1])
        expected = await _conversation(fake_port, path, fake.api_key, seeds, words)
        async with _source(fake.api_key, fake.agent_id, first_token_delay=0.001,
                           delta_delay=0.0005) as (source, port):
            got = await _conversation(port, path, fake.api_key, seeds, words)
            assert source.stats.streams_finished == len(seeds)
            assert source.stats.deltas_written == source.stats.deltas_scheduled
    fake_id = _CONVERSATION.search(expected[0])
    our_id = _CONVERSATION.search(got[0])
    assert fake_id is not None and our_id is not None
    for theirs, ours in zip(expected, got, strict=True):
        # The only differences allowed: the Date header, and the conversation id the fake
        # draws at random (same length, so every chunk size is the same).
        theirs = _DATE.sub(b"\r\n", theirs).replace(fake_id.group(1), our_id.group(1))
        assert _DATE.sub(b"\r\n", ours) == theirs
    assert b"Transfer-Encoding: chunked" in got[0]
    # One chunk per text delta, as the fake writes them when paced.
    assert got[0].count(b'"type":"text-delta"') == len(split_words(answer_text(seeds[0], words)))
    assert got[0].count(b"\r\ndata: {\"type\":\"text-delta\"") == len(
        split_words(answer_text(seeds[0], words)))


async def test_a_wrong_key_is_refused_and_the_connection_stays_usable() -> None:
    async with _source("right", "agent", first_token_delay=0.0, delta_delay=0.0) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            body = json.dumps({"message": question(1, 3), "userId": "u", "stream": True})
            request = (f"POST /agents/agent/chat HTTP/1.1\r\nAuthorization: Bearer {{key}}\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}")
            writer.write(request.replace("{key}", "wrong").encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 401 ")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            assert b"AUTH_INVALID_API_KEY" in await reader.readexactly(length)
            writer.write(request.replace("{key}", "right").encode())
            data = b""
            async with asyncio.timeout(10):
                while not data.endswith(_END):
                    data += await reader.read(65536)
            assert data.startswith(b"HTTP/1.1 200 OK") and b"data: [DONE]" in data
        finally:
            writer.close()
            await writer.wait_closed()
