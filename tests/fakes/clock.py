"""A controllable clock for pacing tests: time moves only when the test (or auto mode) says."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class FakeClock:
    """Implements ``bridge.core.ports.Clock``.

    Manual mode: ``sleep`` parks the caller until the test calls ``advance``; tests wait for
    sleepers with ``await clock.sleepers(n)`` (an event, not a timer). Auto mode: every
    sleep completes at once and moves the clock forward, for tests about order, not spacing.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, auto: bool = False) -> None:
        self._now = start
        self.auto = auto
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Condition()
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.auto:
            self._now += seconds
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self._now + seconds, next(self._seq), future))
        async with self._changed:
            self._changed.notify_all()
        await future

    @property
    def pending(self) -> int:
        return sum(1 for _, _, f in self._heap if not f.done())

    def next_deadline(self) -> float | None:
        live = [d for d, _, f in self._heap if not f.done()]
        return min(live) if live else None

    async def sleepers(self, count: int = 1) -> None:
        """Wait until at least ``count`` callers are sleeping."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.pending >= count)

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._heap and self._heap[0][0] <= self._now:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)

    def advance_to_next(self) -> float:
        """Jump to the earliest sleeper's deadline and wake it; returns the new time."""
        deadline = self.next_deadline()
        if deadline is not None and deadline > self._now:
            self.advance(deadline - self._now)
        else:
            self.advance(0)
        return self._now

    async def drive(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` to completion, jumping the clock to each sleeper's deadline
        whenever everything else is parked on the clock."""
        task = asyncio.ensure_future(awaitable)
        while not task.done():
            waiter = asyncio.ensure_future(self.sleepers(1))
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done and not task.done():
                self.advance_to_next()
            else:
                waiter.cancel()
        return task.result()
