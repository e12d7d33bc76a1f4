"""The streamed answer's idle timer (one lazily moved timer per stream, not one per read)
against the fake Chatbase over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.chatbase import ChatbaseClient, LocalLimiter
from bridge.core.errors import StreamIdleTimeout
from bridge.core.models import TextDelta
from tests.fakes.chatbase import Answer, FakeChatbase, StreamFault

IDLE = 0.3


@pytest.fixture
async def fake() -> AsyncIterator[FakeChatbase]:
    async with FakeChatbase() as server:
        yield server


@pytest.fixture
async def client(fake: FakeChatbase) -> AsyncIterator[ChatbaseClient]:
    async with aiohttp.ClientSession() as session:
        yield ChatbaseClient(
            session=session, api_key=fake.api_key, agent_id=fake.agent_id,
            base_url=fake.base_url, limiter=LocalLimiter(limit=100, window=10),
            timeout=5.0, idle_timeout=IDLE,
        )


async def test_a_stream_longer_than_the_idle_timeout_is_not_cut(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    # Deltas every 0.1 s for about a second: the timer first armed for 0.3 s fires while a
    # later read is pending and must move on, not time the stream out.
    deltas = [f"w{i} " for i in range(10)]
    fake.script(Answer(deltas=deltas, delta_delay=0.1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.chat_stream(message="q", user_id="u.1") as stream:
        texts = [e.delta async for e in stream if isinstance(e, TextDelta)]
        result = stream.result()
    assert loop.time() - started > 2 * IDLE
    assert "".join(texts) == result.text == "".join(deltas)


async def test_silence_after_several_deltas_times_out_from_the_last_read(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    fake.script(Answer(deltas=["a ", "b ", "c ", "d ", "never"], delta_delay=0.1,
                       fault=StreamFault.STALL, fault_after=4))
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    last = 0.0
    async with client.chat_stream(message="q", user_id="u.1") as stream:
        with pytest.raises(StreamIdleTimeout):
            async for event in stream:
                if isinstance(event, TextDelta):
                    seen.append(event.delta)
                    last = loop.time()
    waited = loop.time() - last
    assert seen == ["a ", "b ", "c ", "d "]
    assert IDLE <= waited < IDLE + 2.0
    await fake.wait_for(lambda: fake.streams_aborted == 1)


async def test_a_released_stream_leaves_no_timer_behind(
    fake: FakeChatbase, client: ChatbaseClient
) -> None:
    fake.script(Answer(deltas=["one ", "two"], delta_delay=0.05))
    async with client.chat_stream(message="q", user_id="u.1") as stream:
        async for _ in stream:
            pass
    loop = asyncio.get_running_loop()
    # A pending timer would keep the stream (and its response) alive for idle_timeout.
    pending = [h for h in getattr(loop, "_scheduled", [])
               if not h.cancelled() and getattr(h, "_callback", None) is not None
               and getattr(h._callback, "__self__", None) is stream]
    assert pending == []
