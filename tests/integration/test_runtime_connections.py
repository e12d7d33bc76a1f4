"""The composition root's HTTP session carries every answer in flight at once."""

from __future__ import annotations

import asyncio

from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from bridge.core.models import TextDelta
from tests.fakes.chatbase import Answer, FakeChatbase, Gate

IN_FLIGHT = 120  # more than aiohttp's default connection cap of 100


async def test_more_than_a_hundred_streams_are_open_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase() as fake:
        gates = [Gate() for _ in range(IN_FLIGHT)]
        for gate in gates:
            gate.release(1)
        fake.script(*(Answer(deltas=["first ", "rest"], gate=gate) for gate in gates))
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            CHATBASE_API_KEY=fake.api_key, CHATBASE_AGENT_ID=fake.agent_id,
            CHATBASE_API_BASE=fake.base_url, REDIS_URL=redis_url,
            BRIDGE_REDIS_PREFIX=redis_prefix, BRIDGE_CHATBASE_RATE_LIMIT=1000,
        )
        async with Runtime(settings=settings) as runtime:
            first = asyncio.Barrier(IN_FLIGHT + 1)

            async def answer(n: int) -> str:
                texts = []
                async with runtime.chatbase.chat_stream(message=f"q{n}", user_id=f"u.{n}") as s:
                    async for event in s:
                        if isinstance(event, TextDelta):
                            if not texts:
                                await first.wait()  # every stream has its first delta
                            texts.append(event.delta)
                return "".join(texts)

            tasks = [asyncio.create_task(answer(n)) for n in range(IN_FLIGHT)]
            # Every stream reaches its first delta while all of them are still open; with a
            # capped pool the 101st request would wait for a connection that never frees.
            async with asyncio.timeout(20):
                await first.wait()
            for gate in gates:
                gate.open()
            assert await asyncio.gather(*tasks) == ["first rest"] * IN_FLIGHT
