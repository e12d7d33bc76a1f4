"""Closed-loop load: N users each asking question after question, through the bridge or the
floor, with a measurement window in the steady state.

The bridge is the production composition (``bridge.app.compose.compose``, as the runtime uses
it: its aiohttp session, Redis client, store, Redis-shared Chatbase limiter, ``RelayService``);
only the Chatbase client the service calls is wrapped (``TimedChatbase``) and the pacer's
store counted.
The floor (``Floor``) makes the bridge's requests to the same Chatbase over the same session,
reads the same bytes and only ``json.loads`` each ``data:`` line.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.app import compose as composition
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from bridge.core.models import InboundMessage, Place, Platform
from bridge.core.service import RelayService
from bridge.store import Store
from tests.bench.answers import question
from tests.bench.instrument import (
    AnswerRecord,
    BenchSink,
    CountingSlots,
    DeltaCounter,
    LoopLag,
    TimedChatbase,
    current_answer,
)
from tests.bench.procs import BenchServer

_seeds = itertools.count(1)
_events = itertools.count(1)


class ChatbaseEndpoint(Protocol):
    """Where the bridge (and the floor) stream answers from: the fake or the stream source."""

    chatbase_url: str
    api_key: str
    agent_id: str


@dataclass
class Bridge:
    composed: composition.Bridge
    slots: CountingSlots
    counter: DeltaCounter
    server: BenchServer  # the platform the BenchSink writes to, and the fake's controls
    source: ChatbaseEndpoint  # the Chatbase the bridge streams from

    @property
    def service(self) -> RelayService:
        return self.composed.service

    @property
    def round_trips(self) -> int:
        return self.composed.store.round_trips


def bench_settings(source: ChatbaseEndpoint, redis_url: str, prefix: str,
                   **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "CHATBASE_API_KEY": source.api_key,
        "CHATBASE_AGENT_ID": source.agent_id,
        "CHATBASE_API_BASE": source.chatbase_url,
        "REDIS_URL": redis_url,
        "BRIDGE_REDIS_PREFIX": prefix,
        # Production keeps both; limits high enough that a benchmark user never meets them
        # (the fake does not rate-limit, and Chatbase's own 100 per 10 s would cap turns).
        "BRIDGE_USER_QUOTA": 1_000_000,
        "BRIDGE_CHATBASE_RATE_LIMIT": 1_000_000,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def bridge(server: BenchServer, redis_url: str, *, source: ChatbaseEndpoint | None = None,
                 **settings: Any) -> AsyncIterator[Bridge]:
    """The bridge as the product composes it, streaming from ``source`` (default: the fake in
    ``server``) and writing to ``server``'s platform."""
    source = source or server
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    counter = DeltaCounter()
    counted: list[CountingSlots] = []

    def count_slots(store: Store) -> CountingSlots:
        counted.append(CountingSlots(store))
        return counted[-1]

    async with composition.compose(
        bench_settings(source, redis_url, prefix, **settings),
        wrap_chatbase=lambda client: TimedChatbase(client, counter),
        wrap_slots=count_slots,
    ) as composed:
        # What Runtime.serve does once the platforms are connected.
        Runtime.prepare_heap()
        try:
            yield Bridge(composed, counted[0], counter, server, source)
        finally:
            redis = composed.redis
            keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
            for i in range(0, len(keys), 1000):
                await redis.delete(*keys[i:i + 1000])


def message_for(user: int, seed: int, words: int, *, workspace: str = "G1") -> InboundMessage:
    n = next(_events)
    return InboundMessage(
        place=Place(platform=Platform.DISCORD, workspace=workspace, channel=f"C{user}"),
        author=f"U{user}", text=question(seed, words), message_id=f"m{n}",
        event_id=f"bench-ev-{uuid.uuid4().hex}",
    )


async def ask(bridge: Bridge, user: int, words: int, *, interval: float,
              workspace: str = "G1", started: list[AnswerRecord] | None = None,
              seed: int | None = None) -> AnswerRecord:
    """One question through the real service into a ``BenchSink``; returns what was seen
    (and puts the record in ``started`` at once, to watch it in flight)."""
    seed = next(_seeds) if seed is None else seed
    record = AnswerRecord(seed=seed, words=words)
    if started is not None:
        started.append(record)
    # Every answer gets a rate-limit space of its own (a Discord thread per question), so
    # the figures show the bridge's delays, not the budget left over by the previous answer.
    sink = BenchSink(http=bridge.server.session, url=bridge.server.platform_url,
                     channel=f"{workspace}:C{user}:{seed}", record=record, interval=interval,
                     counter=bridge.counter)
    token = current_answer.set(record)
    try:
        record.started = time.perf_counter()
        await bridge.service.handle_message(
            message_for(user, seed, words, workspace=workspace), sink)
    finally:
        current_answer.reset(token)
    return record


# What the product's Chatbase client sends (bridge/chatbase/transport.py, _headers), so the
# floor's requests are the bridge's: the check in scenarios.cpu compares them as received.
_FLOOR_HEADERS = {"Accept": "text/event-stream", "User-Agent": "chatbase-bridge"}


class Floor:
    """The floor: the same requests as the bridge's (a new conversation per user, then
    follow-ups in it), the same bytes, each ``data:`` line ``json.loads``-ed and nothing else."""

    def __init__(self, session: Any, source: ChatbaseEndpoint, counter: DeltaCounter) -> None:
        self._session = session
        self._url = f"{source.chatbase_url}/agents/{source.agent_id}/chat"
        self._headers = {**_FLOOR_HEADERS, "Authorization": f"Bearer {source.api_key}"}
        self._counter = counter
        self._conversations: dict[int, str] = {}
        self.answers: dict[int, int] = {}  # seed → text deltas read (for the check)

    async def answer(self, user: int, words: int, *, seed: int | None = None) -> int:
        seed = next(_seeds) if seed is None else seed
        body: dict[str, Any] = {"message": question(seed, words)}
        conversation = self._conversations.get(user)
        if conversation is None:
            body["userId"] = f"discord.U{user}"
        else:
            body["conversationId"] = conversation
        body["stream"] = True
        counter = self._counter
        deltas = 0
        last = b""
        async with self._session.post(self._url, json=body, headers=self._headers) as response:
            rest = b""
            while True:
                chunk = await response.content.readany()
                if not chunk:
                    break
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if line.startswith(b"data: ") and line != b"data: [DONE]":
                        if json.loads(line[6:]).get("type") == "text-delta":
                            counter.deltas += 1
                            deltas += 1
                        else:
                            last = line
        if conversation is None and b'"conversationId":"' in last:
            found = json.loads(last[6:]).get("messageMetadata", {}).get("conversationId")
            if isinstance(found, str):
                self._conversations[user] = found
        self.answers[seed] = deltas
        return deltas


@dataclass
class Window:
    """Counters over the steady-state window of one closed-loop run."""

    start: float = 0.0
    end: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0
    deltas: int = 0
    lag: list[float] = field(default_factory=list)
    records: list[AnswerRecord] = field(default_factory=list)
    answers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


async def closed_loop(
    *,
    users: int,
    answer_seconds: float,
    warm: float,
    measure: float,
    one: Callable[[int], Awaitable[AnswerRecord | None]],
    counter: DeltaCounter,
    snapshot: Callable[[], Awaitable[dict[str, float]]] | None = None,
    cancel_tail: bool = False,
) -> Window:
    """``users`` loops of ``one(user)``, started spread over ``answer_seconds`` so the load is
    steady; counters are read at ``warm`` and ``warm + measure`` seconds. Answers running at
    the end finish (and are checked) unless ``cancel_tail`` (for the floor)."""
    lag = LoopLag()
    window = Window()
    records: list[AnswerRecord] = []
    start = time.perf_counter()
    stop_at = start + warm + measure

    async def user_loop(user: int) -> None:
        await asyncio.sleep(answer_seconds * user / users)
        while time.perf_counter() < stop_at:
            record = await one(user)
            if record is not None:
                records.append(record)

    async with lag.running():
        tasks = [asyncio.create_task(user_loop(u)) for u in range(users)]
        await asyncio.sleep(max(0.0, start + warm - time.perf_counter()))
        t0, c0, d0, m0 = time.perf_counter(), time.process_time(), counter.deltas, lag.mark()
        s0 = await snapshot() if snapshot else {}
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        t1, c1, d1, m1 = time.perf_counter(), time.process_time(), counter.deltas, lag.mark()
        s1 = await snapshot() if snapshot else {}
        if cancel_tail:
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=cancel_tail)
    window.start, window.end = t0, t1
    window.seconds, window.cpu, window.deltas = t1 - t0, c1 - c0, d1 - d0
    window.lag = lag.since(m0, m1)
    window.records = records
    window.answers = len(records)
    window.extra = {k: s1[k] - s0.get(k, 0.0) for k in s1}
    return window
