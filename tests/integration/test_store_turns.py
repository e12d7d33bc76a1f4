"""The per-conversation turn lock across replicas: order, dead holders, timeouts, leases."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.core.errors import StoreError, TurnTimeout
from bridge.store import Store, Turn

MakeStore = Callable[..., Store]

# A replica in a process of its own, so it can die the hard way (SIGKILL) mid-turn.
_REPLICA = """
import asyncio, sys
import redis.asyncio as aioredis
from bridge.store import Store

async def main(url, prefix, key, lock_ttl):
    store = Store(redis=aioredis.Redis.from_url(url), prefix=prefix, conversation_ttl=60,
                  reply_ttl=60, dedup_ttl=60, lock_ttl=float(lock_ttl), lock_wait=60)
    async with store.turn(key, on_wait=lambda pos: print("queued", flush=True)):
        print("held", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
async def replicas(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> AsyncIterator[MakeStore]:
    clients: list[aioredis.Redis] = []

    def make(**overrides: Any) -> Store:
        client = aioredis.Redis.from_url(redis_url)
        clients.append(client)
        options: dict[str, Any] = {
            "redis": client, "prefix": redis_prefix, "conversation_ttl": 600,
            "reply_ttl": 600, "dedup_ttl": 600, "lock_ttl": 30, "lock_wait": 10.0,
        }
        options.update(overrides)
        return Store(**options)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def spawn(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[[str, float], Any]]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(key: str, lock_ttl: float) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _REPLICA, redis_url, redis_prefix, key, str(lock_ttl),
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        return (await proc.stdout.readline()).decode().strip()


class ParkedClock:
    """Wall time, but sleeps never end: a holder whose heartbeat never beats."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def _queue(redis_client: aioredis.Redis, prefix: str, key: str) -> list[bytes | str]:
    return await redis_client.lrange(f"{prefix}turnq:{key}", 0, -1)


async def test_waiters_of_two_replicas_are_served_in_arrival_order(
    replicas: MakeStore,
) -> None:
    a, b = replicas(), replicas()
    order: list[int] = []
    seen: list[str | None] = []

    async def waiter(i: int, store: Store, queued: asyncio.Event) -> None:
        async with store.turn("k", on_wait=lambda _pos: queued.set()) as turn:
            seen.append(turn.state.conversation_id if turn.state else None)
            order.append(i)
            turn.remember(f"conv-{i}", None, None)

    tasks = []
    async with a.turn("k") as turn:
        turn.remember("conv-holder", None, None)
        for i in range(6):
            queued = asyncio.Event()
            tasks.append(asyncio.create_task(waiter(i, (a, b)[i % 2], queued)))
            await queued.wait()
        assert order == []
    await asyncio.gather(*tasks)
    assert order == list(range(6))
    # Each turn saw what the previous one remembered.
    assert seen == ["conv-holder", *(f"conv-{i}" for i in range(5))]


async def test_wait_position_is_reported(replicas: MakeStore) -> None:
    a, b = replicas(), replicas()
    positions: list[int] = []
    queued = asyncio.Event()

    def on_wait(pos: int) -> None:
        positions.append(pos)
        queued.set()

    async with a.turn("k"):
        task = asyncio.create_task(_enter(b.turn("k", on_wait=on_wait)))
        await queued.wait()
    await task
    assert positions == [1]


async def _enter(lock: Any) -> None:
    async with lock:
        pass


async def test_a_waiter_gives_up_after_lock_wait_and_leaves_the_queue(
    replicas: MakeStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    a, b = replicas(), replicas(lock_wait=0.3)
    async with a.turn("k"):
        started = time.monotonic()
        with pytest.raises(TurnTimeout) as caught:
            async with b.turn("k"):
                pytest.fail("entered a held turn")
        assert 0.3 <= time.monotonic() - started < 3
        assert isinstance(caught.value, StoreError)
        assert len(await _queue(redis_client, redis_prefix, "k")) == 1
    assert await _queue(redis_client, redis_prefix, "k") == []
    async with asyncio.timeout(5), b.turn("k"):
        pass


async def test_a_cancelled_waiter_leaves_the_queue(
    replicas: MakeStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    a, b = replicas(), replicas()
    queued = asyncio.Event()
    async with a.turn("k"):
        task = asyncio.create_task(_enter(b.turn("k", on_wait=lambda _pos: queued.set())))
        await queued.wait()
        assert len(await _queue(redis_client, redis_prefix, "k")) == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(await _queue(redis_client, redis_prefix, "k")) == 1


async def test_heartbeat_keeps_a_long_turn_past_its_lease(replicas: MakeStore) -> None:
    a, b = replicas(lock_ttl=2), replicas(lock_wait=4.0)
    async with a.turn("k") as turn:
        # Without renewal the 2 s lease would lapse and b would take the turn.
        with pytest.raises(TurnTimeout):
            async with b.turn("k"):
                pytest.fail("a live holder lost its turn")
        assert not turn.lost


async def test_a_dead_holder_is_skipped_once_its_lease_lapses(
    replicas: MakeStore, spawn: Callable[[str, float], Any]
) -> None:
    proc = await spawn("k", 1.0)
    assert await _line(proc) == "held"
    store = replicas()
    queued = asyncio.Event()
    waiter = asyncio.create_task(_enter(store.turn("k", on_wait=lambda _pos: queued.set())))
    await queued.wait()
    proc.kill()
    await proc.wait()
    killed = time.monotonic()
    async with asyncio.timeout(10):
        await waiter
    # Lease (1 s) plus at most one poll interval, with room for a slow machine.
    assert time.monotonic() - killed < 4


async def test_a_waiter_that_died_in_the_queue_is_skipped(
    replicas: MakeStore, spawn: Callable[[str, float], Any]
) -> None:
    holder, behind = replicas(lock_ttl=1), replicas()
    async with holder.turn("k"):
        proc = await spawn("k", 30.0)
        assert await _line(proc) == "queued"
        proc.kill()
        await proc.wait()
        queued = asyncio.Event()
        waiter = asyncio.create_task(
            _enter(behind.turn("k", on_wait=lambda _pos: queued.set()))
        )
        await queued.wait()
        released = time.monotonic()
    async with asyncio.timeout(10):
        await waiter
    # The dead waiter was handed a 1 s lease it never took up.
    assert time.monotonic() - released < 4


async def test_only_the_lease_owner_releases(
    replicas: MakeStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    stale = replicas(lock_ttl=1, clock=ParkedClock())
    b, c = replicas(), replicas()
    order: list[str] = []
    b_in, b_may_leave, c_queued = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run_b() -> None:
        async with b.turn("k"):
            order.append("b")
            b_in.set()
            await b_may_leave.wait()

    async def run_c() -> None:
        async with c.turn("k", on_wait=lambda _pos: c_queued.set()):
            order.append("c")

    lock = stale.turn("k")
    turn: Turn = await lock.__aenter__()
    task_b = asyncio.create_task(run_b())
    async with asyncio.timeout(10):
        await b_in.wait()  # the stale holder's lease lapsed: it never renewed it
    task_c = asyncio.create_task(run_c())
    await c_queued.wait()
    turn.remember("late", None, None)
    await lock.__aexit__(None, None, None)  # the stale holder finishes late
    # ... and does not overwrite the conversation of the turn that began meanwhile.
    assert await b.get_conversation("k") is None
    queue = await _queue(redis_client, redis_prefix, "k")
    assert len(queue) == 2
    assert await redis_client.get(f"{redis_prefix}turnl:k") == queue[0]
    assert order == ["b"]
    b_may_leave.set()
    await asyncio.gather(task_b, task_c)
    assert order == ["b", "c"]
