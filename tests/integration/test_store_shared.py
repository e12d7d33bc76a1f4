"""The store's scripts over one shared, pipelined connection (``bridge.store.shared``),
against a real Redis: replies reach their callers in order however many tasks send at once,
a caller that stops waiting leaves the connection usable, and a connection that fails fails
only the commands waiting on it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.core.errors import StoreError
from bridge.store import Store
from bridge.store.connection import Link
from bridge.store.shared import SharedConnection

_ECHO = "return ARGV[1]"


@pytest.fixture
async def shared(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[SharedConnection]:
    # As the bridge's clients are made (bridge.store.connection.Connector): no socket
    # timeout of redis-py's own, whose wait_for per write can swallow a cancellation on
    # Python 3.11.
    client = aioredis.Redis.from_url(redis_url, socket_timeout=None)
    connection = SharedConnection(client)
    yield connection
    await connection.aclose()
    await client.aclose()


async def test_many_tasks_get_their_own_replies_over_one_connection(
    shared: SharedConnection, redis_prefix: str
) -> None:
    key = f"{redis_prefix}counter"

    async def one(n: int) -> tuple[int, bytes, int, int]:
        # Several commands per task, each awaited before the next: they interleave with the
        # other tasks' on the wire.
        echoed = await shared.execute("EVAL", _ECHO, 0, f"task-{n}")
        client = await shared.execute("CLIENT", "ID")
        count = await shared.execute("INCR", key)
        return n, echoed, client, count

    results = await asyncio.gather(*(one(n) for n in range(200)))
    assert [echoed for _, echoed, _, _ in results] == [f"task-{n}".encode() for n in range(200)]
    assert len({client for _, _, client, _ in results}) == 1  # one connection for all
    assert sorted(count for *_, count in results) == list(range(1, 201))


async def test_an_error_reply_goes_to_its_caller_only(
    shared: SharedConnection, redis_prefix: str
) -> None:
    text = f"{redis_prefix}text"
    await shared.execute("SET", text, "not a number")

    async def one(n: int) -> object:
        if n % 3 == 0:
            try:
                await shared.execute("INCR", text)
            except ResponseError as exc:
                return "error" if "not an integer" in str(exc) else exc
        return await shared.execute("EVAL", _ECHO, 0, str(n))

    results = await asyncio.gather(*(one(n) for n in range(60)))
    assert results == ["error" if n % 3 == 0 else str(n).encode() for n in range(60)]


async def test_a_caller_that_stops_waiting_leaves_the_connection_in_order(
    shared: SharedConnection, redis_prefix: str
) -> None:
    before = await shared.execute("CLIENT", "ID")
    # A command whose reply comes late (BLPOP on an empty list, for 0.2 s), given up on.
    slow = asyncio.create_task(shared.execute("BLPOP", f"{redis_prefix}empty", 0.2))
    await asyncio.sleep(0)  # one turn of the loop: the task has written its command
    slow.cancel()
    # Written behind the BLPOP: its reply comes after the BLPOP's, which is read and
    # dropped, not handed to this caller.
    assert await shared.execute("EVAL", _ECHO, 0, "behind") == b"behind"
    assert await shared.execute("EVAL", _ECHO, 0, "after") == b"after"
    assert await shared.execute("CLIENT", "ID") == before
    assert slow.cancelled()


async def test_a_dropped_connection_fails_its_commands_and_the_next_one_opens_another(
    shared: SharedConnection, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    first = await shared.execute("CLIENT", "ID")
    waiting = asyncio.create_task(shared.execute("BLPOP", f"{redis_prefix}empty", 5))
    behind = asyncio.create_task(shared.execute("EVAL", _ECHO, 0, "queued behind"))
    await asyncio.sleep(0)  # one turn of the loop: both tasks have written their commands
    # Killed from another connection (a Redis restart, a proxy dropping it).
    assert await redis_client.execute_command("CLIENT", "KILL", "ID", first) == 1
    for task in (waiting, behind):
        with pytest.raises(RedisConnectionError):
            await task
    second = await shared.execute("CLIENT", "ID")
    assert second != first
    assert await shared.execute("EVAL", _ECHO, 0, "again") == b"again"


async def test_reset_gives_the_connection_up(shared: SharedConnection, redis_prefix: str) -> None:
    first = await shared.execute("CLIENT", "ID")
    waiting = asyncio.create_task(shared.execute("BLPOP", f"{redis_prefix}empty", 5))
    await asyncio.sleep(0)  # one turn of the loop: the task has written its command
    shared.reset(TimeoutError("overdue"))
    with pytest.raises(RedisConnectionError, match="overdue"):
        await waiting
    assert await shared.execute("CLIENT", "ID") != first


async def test_the_store_runs_its_scripts_on_one_connection_and_returns_it(
    redis_url: str, redis_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = Store(redis=client, prefix=redis_prefix, conversation_ttl=60, reply_ttl=60,
                  dedup_ttl=60, lock_ttl=30, lock_wait=5.0)
    try:
        # Claims and pacing from many tasks at once: every script on the shared connection.
        claims = await asyncio.gather(*(store.claim(f"ev-{n % 50}") for n in range(100)))
        assert sum(c.first for c in claims) == 50
        slots = await asyncio.gather(*(store.reserve("bucket", 1.0, 1000.0) for _ in range(20)))
        assert sorted(slots) == [1000.0 + n for n in range(20)]
        shared_id = await store.link.shared.execute("CLIENT", "ID")
        listed = (await client.execute_command("CLIENT", "LIST")).decode()
        assert f"id={shared_id} " in listed
        await store.aclose()
        listed = (await client.execute_command("CLIENT", "LIST")).decode()
        assert f"id={shared_id} " not in listed
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_script_the_server_forgot_is_loaded_again_on_the_shared_connection(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    link = Link(redis_client, timeout=5.0)
    script = link.script("return 'ran ' .. ARGV[1]")
    try:
        assert await link.run(script, [], ["once"]) == b"ran once"
        assert await link.run(script, [], ["known"]) == b"ran known"
        before = link.round_trips
        await redis_client.script_flush()  # a restarted Redis, or a replica just promoted
        assert await link.run(script, [], ["twice"]) == b"ran twice"
        assert link.round_trips == before + 3  # NOSCRIPT, SCRIPT LOAD, run: each counted
    finally:
        await link.aclose()


async def test_a_client_closed_under_the_link_is_reopened_by_the_next_script(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    link = Link(client, timeout=5.0)
    script = link.script("return 1")
    try:
        assert await link.run(script, [], []) == 1
        await client.aclose()  # the pool's connections, the shared one too, are closed
        assert await link.run(script, [], []) == 1
    finally:
        await link.aclose()
        await client.aclose()


async def test_a_redis_that_refuses_is_a_store_error_naming_the_setting() -> None:
    with socket.socket() as unused:  # a loopback port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}")
    link = Link(client, timeout=5.0)
    try:
        with pytest.raises(StoreError, match=r"REDIS_URL.*connection refused"):
            await link.run(link.script("return 1"), [], [])
    finally:
        await link.aclose()
        await client.aclose()
