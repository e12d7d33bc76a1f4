"""Measuring without changing the product: timed streams, a platform sink, loop lag, counters.

* ``TimedChatbase`` wraps the real ``ChatbaseClient``: its streams stamp the moment the
  service receives the first text delta (``read_batch`` handing it over) and count deltas.
* ``BenchSink`` is a ``ReplySink`` that writes every call over HTTP to the platform of the
  fake server process (latency and a per-channel limit there) and stamps the first call
  that carries text, at the moment the bridge makes it.
* ``CountingSlots`` counts the pacer's Redis calls so per-turn round trips can leave them out.
* ``LoopLag`` samples how late a 10 ms timer fires: the event loop's responsiveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import aiohttp

from bridge.core.errors import PlatformError, PlatformRateLimited
from bridge.core.models import ChatResult, Feedback, TextDelta
from bridge.core.ports import Budget, Operation, SinkLimits, SlotStore
from tests.bench.answers import answer_text

MARK = " ▌"


@dataclass
class AnswerRecord:
    """What the benchmark saw of one answer (perf_counter seconds). The agent's answer is
    made from ``seed`` and ``words`` when it is checked, not while the bridge is measured
    (the floor makes none)."""

    seed: int
    words: int
    started: float = 0.0
    first_delta_at: float | None = None
    first_text_at: float | None = None
    deltas: int = 0
    text_calls: list[float] = field(default_factory=list)
    rate_limited: int = 0
    final: str | None = None
    done_at: float | None = None

    @cached_property
    def expected(self) -> str:
        return answer_text(self.seed, self.words)

    @property
    def added_latency(self) -> float | None:
        if self.first_delta_at is None or self.first_text_at is None:
            return None
        return self.first_text_at - self.first_delta_at

    @property
    def correct(self) -> bool:
        return self.final == self.expected

    def problem(self) -> str | None:
        if self.final is None:
            return "no final text"
        if MARK.strip() in self.final:
            return "progress mark left in the final text"
        if not self.final.strip():
            return "bare placeholder"
        if self.final != self.expected:
            return "final text differs from the agent's answer"
        return None


# The answer the current task renders (set by the driver, read by the timed stream).
current_answer: ContextVar[AnswerRecord | None] = ContextVar("current_answer", default=None)


class DeltaCounter:
    """Text deltas handed to the service, and platform calls made, in this process."""

    def __init__(self) -> None:
        self.deltas = 0
        self.platform_calls = 0


class TimedStream:
    """Delegates to a ``ChatStream``; stamps and counts text deltas as the service gets them."""

    def __init__(self, inner: Any, record: AnswerRecord | None, counter: DeltaCounter) -> None:
        self._inner = inner
        self._record = record
        self._counter = counter

    @property
    def request_id(self) -> str | None:
        value: str | None = self._inner.request_id
        return value

    async def __aenter__(self) -> TimedStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)

    async def hold(self, wait: Awaitable[None]) -> None:
        await self._inner.hold(wait)

    async def read_batch(self) -> list[Any]:
        events: list[Any] = await self._inner.read_batch()
        deltas = sum(1 for event in events if type(event) is TextDelta)
        if deltas:
            self._counter.deltas += deltas
            record = self._record
            if record is not None:
                record.deltas += deltas
                if record.first_delta_at is None:
                    record.first_delta_at = time.perf_counter()
        return events

    def result(self) -> ChatResult:
        result: ChatResult = self._inner.result()
        return result


class TimedChatbase:
    """The service's Chatbase client with timed streams (``ChatbaseLike``)."""

    def __init__(self, inner: Any, counter: DeltaCounter) -> None:
        self._inner = inner
        self.counter = counter

    @property
    def agent_id(self) -> str:
        return str(self._inner.agent_id)

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        return dict(await self._inner.get_conversation(conversation_id))

    def chat_stream(self, *, message: str | None, conversation_id: str | None = None,
                    user_id: str | None = None) -> TimedStream:
        return TimedStream(
            self._inner.chat_stream(message=message, conversation_id=conversation_id,
                                    user_id=user_id),
            current_answer.get(), self.counter,
        )

    def retry_stream(self, *, conversation_id: str, message_id: str) -> TimedStream:
        return TimedStream(
            self._inner.retry_stream(conversation_id=conversation_id, message_id=message_id),
            current_answer.get(), self.counter,
        )

    async def user_conversations_page(
        self, user_id: str, *, cursor: str | None = None, limit: int = 5
    ) -> tuple[list[dict[str, Any]], str | None]:
        items, after = await self._inner.user_conversations_page(user_id, cursor=cursor,
                                                                 limit=limit)
        return list(items), after

    async def submit_tool_result(self, *, conversation_id: str, tool_call_id: str,
                                 output: Any) -> None:
        await self._inner.submit_tool_result(conversation_id=conversation_id,
                                             tool_call_id=tool_call_id, output=output)

    async def set_feedback(self, *, conversation_id: str, message_id: str,
                           feedback: Feedback | None) -> None:
        await self._inner.set_feedback(conversation_id=conversation_id, message_id=message_id,
                                       feedback=feedback)


class CountingSlots:
    """The store's pacing calls, counted (``SlotStore``)."""

    def __init__(self, inner: SlotStore) -> None:
        self._inner = inner
        self.calls = 0

    async def reserve(self, key: str, interval: float, now: float) -> float:
        self.calls += 1
        return await self._inner.reserve(key, interval, now)

    async def push_back(self, key: str, until: float) -> None:
        self.calls += 1
        await self._inner.push_back(key, until)


class BenchSink:
    """Edit-in-place like Discord: 2,000 characters, a progress mark, one budget per channel.

    Every call is a real HTTP request to the fake server's platform endpoint."""

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        url: str,
        channel: str,
        record: AnswerRecord,
        interval: float,
        counter: DeltaCounter | None = None,
        max_chars: int = 2000,
    ) -> None:
        self._http = http
        self._counter = counter
        self._url = url
        self._key = f"bench:{channel}"
        self._record = record
        self._interval = interval
        self._limits = SinkLimits(max_chars=max_chars, progress_mark=MARK)
        self._texts: dict[str, str] = {}
        self.calls = 0

    @property
    def limits(self) -> SinkLimits:
        return self._limits

    def budget(self, op: Operation, *, final: bool = False) -> Budget:
        return Budget(self._key, self._interval)

    async def _call(self, op: str, text: str | None, message_id: str | None) -> str:
        self.calls += 1
        if self._counter is not None:
            self._counter.platform_calls += 1
        # The working signal (typing) is not a message write: it has a bucket of its own.
        key = self._key if op != "working" else f"{self._key}:working"
        body = {"key": key, "text": text, "id": message_id}
        try:
            async with self._http.post(f"{self._url}/{op}", json=body) as response:
                # Not response.json(): its Content-Type parsing is a cost of aiohttp's
                # convenience, not of talking to a platform.
                data = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PlatformError(f"bench platform {op} failed: {exc!r}") from exc
        if response.status == 429:
            self._record.rate_limited += 1
            raise PlatformRateLimited(float(data.get("retry_after", 1.0)))
        if response.status != 200:
            raise PlatformError(f"bench platform {op}: HTTP {response.status}")
        return str(data["id"])

    def _stamp(self, text: str) -> None:
        now = time.perf_counter()
        if text.strip():
            if self._record.first_text_at is None:
                self._record.first_text_at = now
            self._record.text_calls.append(now)

    async def working(self) -> None:
        with contextlib.suppress(PlatformError):
            await self._call("working", None, None)

    async def post(self, text: str, *, final: bool) -> str:
        if len(text) > self._limits.max_chars:
            raise PlatformError("post over the platform limit")
        self._stamp(text)
        message_id = await self._call("post", text, None)
        self._texts[message_id] = text
        return message_id

    async def edit(self, message_id: str, text: str, *, final: bool) -> None:
        if len(text) > self._limits.max_chars:
            raise PlatformError("edit over the platform limit")
        self._stamp(text)
        await self._call("edit", text, message_id)
        self._texts[message_id] = text

    async def delete(self, message_id: str) -> None:
        await self._call("delete", None, message_id)
        self._texts.pop(message_id, None)

    async def finish(self, part_ids: Sequence[str], *, answered: bool) -> None:
        self._record.final = "".join(self._texts.get(i, "") for i in part_ids)
        self._record.done_at = time.perf_counter()


class LoopLag:
    """Samples event-loop lag: how late a ``period`` timer fires, while running."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        period = self.period
        clock = time.perf_counter
        while True:
            start = clock()
            await asyncio.sleep(period)
            self.samples.append(max(0.0, clock() - start - period))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopLag]:
        self._task = asyncio.create_task(self._run(), name="bench-loop-lag")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def mark(self) -> int:
        return len(self.samples)

    def since(self, mark: int, until: int | None = None) -> list[float]:
        return self.samples[mark:until]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]
