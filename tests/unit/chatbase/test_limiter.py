"""The in-process sliding-window limiter, driven by a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from bridge.chatbase.limiter import LocalLimiter, RequestLimiter


class ManualClock:
    """Time moves only when the test says so; sleepers wake when their deadline passes."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.t + seconds, future))
        self._changed.set()
        await future

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = [(d, f) for d, f in self._sleepers if d <= self.t]
        self._sleepers = [(d, f) for d, f in self._sleepers if d > self.t]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    async def wait_sleepers(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self._sleepers) < n:
                self._changed.clear()
                await self._changed.wait()


def test_satisfies_the_protocol() -> None:
    limiter: RequestLimiter = LocalLimiter()
    assert hasattr(limiter, "acquire")


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        LocalLimiter(limit=0)
    with pytest.raises(ValueError):
        LocalLimiter(window=0)


async def test_admits_limit_at_once_then_waits_for_the_window() -> None:
    clock = ManualClock()
    limiter = LocalLimiter(limit=3, window=10.0, clock=clock)
    for _ in range(3):
        await limiter.acquire()
    assert clock.sleeps == []

    clock.advance(4.0)
    fourth = asyncio.create_task(limiter.acquire())
    await clock.wait_sleepers(1)
    assert not fourth.done()
    # The oldest stamp (t=0) leaves the window at t=10: 6 s from now.
    assert clock.sleeps == [pytest.approx(6.0)]
    clock.advance(6.0)
    await asyncio.wait_for(fourth, 5)
    assert clock.now() == 10.0


async def test_sliding_not_fixed_window() -> None:
    clock = ManualClock()
    limiter = LocalLimiter(limit=2, window=10.0, clock=clock)
    await limiter.acquire()  # t=0
    clock.advance(5.0)
    await limiter.acquire()  # t=5
    clock.advance(5.0)
    await limiter.acquire()  # t=10: the t=0 stamp just left
    assert clock.sleeps == []
    third = asyncio.create_task(limiter.acquire())
    await clock.wait_sleepers(1)
    assert clock.sleeps == [pytest.approx(5.0)]  # until the t=5 stamp leaves
    clock.advance(5.0)
    await asyncio.wait_for(third, 5)


async def test_waiters_are_admitted_in_arrival_order() -> None:
    clock = ManualClock()
    limiter = LocalLimiter(limit=1, window=1.0, clock=clock)
    await limiter.acquire()
    order: list[int] = []
    admitted = [asyncio.Event() for _ in range(3)]

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)
        admitted[i].set()

    tasks = [asyncio.create_task(take(i)) for i in range(3)]
    for expected in range(3):
        await clock.wait_sleepers(1)
        clock.advance(1.0)
        await asyncio.wait_for(admitted[expected].wait(), 5)
        assert order == list(range(expected + 1))
    await asyncio.gather(*tasks)
