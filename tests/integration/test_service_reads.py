"""Reading the stream while the reply's writer cannot call the platform (a call out, or
waiting for its next paced slot): the reader holds its reads, the deltas wait in the
connection's buffer, and one read takes them all in. The first text is never held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.chatbase.client import ChatbaseClient
from bridge.core.models import TextDelta
from bridge.core.rendering.renderer import READ_LEAD
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.clock import FakeClock
from tests.fakes.harness import harness


class _Batches(list[int]):
    """The text deltas of each read that had any, in order; ``until`` waits for a count."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Condition()
        self.holds = 0  # reads held through the stream's hold (its socket not read)

    async def add(self, deltas: int) -> None:
        self.append(deltas)
        async with self.changed:
            self.changed.notify_all()

    async def until_total(self, total: int) -> None:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: sum(self) >= total)


class _CountedStream:
    """A ``ChatStream`` whose batches are recorded."""

    def __init__(self, inner: Any, batches: _Batches) -> None:
        self._inner = inner
        self._batches = batches

    @property
    def request_id(self) -> str | None:
        value: str | None = self._inner.request_id
        return value

    async def __aenter__(self) -> _CountedStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)

    async def hold(self, wait: Any) -> None:
        self._batches.holds += 1
        await self._inner.hold(wait)

    async def read_batch(self) -> list[Any]:
        events: list[Any] = await self._inner.read_batch()
        deltas = sum(1 for event in events if type(event) is TextDelta)
        if deltas:
            await self._batches.add(deltas)
        return events

    def result(self) -> Any:
        return self._inner.result()


class _Counted:
    """The Chatbase client, its streams counted; everything else passed through."""

    def __init__(self, inner: ChatbaseClient, batches: _Batches) -> None:
        self._inner = inner
        self._batches = batches

    def chat_stream(self, **kwargs: Any) -> _CountedStream:
        return _CountedStream(self._inner.chat_stream(**kwargs), self._batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_reads_wait_for_the_writers_slot_and_take_the_deltas_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    clock = FakeClock()
    batches = _Batches()
    async with harness(redis_url, redis_prefix, clock=clock,
                       wrap_chatbase=lambda client: _Counted(client, batches)) as h:
        gate = Gate()
        deltas = [f"w{i} " for i in range(11)]
        h.fake.script(Answer(deltas=deltas, gate=gate))
        sink = h.sink()  # one call per second on its budget
        task = asyncio.create_task(h.service.handle_message(h.message("go"), sink))
        gate.release(1)
        # The first delta is read and shown at once, on no clock.
        await sink.wait_calls(1, "post")
        assert batches == [1]
        # The post has set off: the sink's budget takes no other call for a second, so the
        # delta that wakes the reader now is the last it reads before holding, until just
        # before then. The writer, with that delta to show, sleeps until its next slot.
        gate.release(1)
        async with asyncio.timeout(5):  # without the hold only the writer sleeps
            await clock.sleepers(2)
        assert batches == [1, 1]
        slot = clock.now() + 1.0  # the sink's interval after the first post
        assert clock.next_deadline() == pytest.approx(slot - READ_LEAD)
        gate.release(9)
        await gate.wait_sent(11)
        assert batches == [1, 1]  # what was sent meanwhile waits unread
        assert batches.holds == 1  # in the socket: the stream's hold pauses its reading
        # The reader's hold ends first and it takes in what has arrived in one read (a
        # delta still on its way over loopback may come in a second one); the writer,
        # still asleep, then shows it all.
        clock.advance_to_next()
        await batches.until_total(11)
        assert len(batches) <= 4 and max(batches[2:]) >= 5
        assert clock.pending == 1
        clock.advance_to_next()
        async with asyncio.timeout(5):
            await sink.wait_calls(1, "edit")
        shown = sink.text_calls()[-1].text
        assert shown is not None and shown.startswith("".join(deltas))
        gate.open()
        async with asyncio.timeout(10):
            await clock.drive(task)
        assert sink.joined() == "".join(deltas)
