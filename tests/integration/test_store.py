"""The Redis store against a real Redis: claims, conversations, replies, pacing, errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.app.settings import load_settings
from bridge.core.errors import StoreError
from bridge.core.models import Platform, ReplyRecord
from bridge.store import RedisLimiter, Store, connect

MakeStore = Callable[..., Store]


@pytest.fixture
async def replicas(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> AsyncIterator[MakeStore]:
    """Makes stores on clients of their own, as separate replicas would have."""
    clients: list[aioredis.Redis] = []

    def make(**overrides: Any) -> Store:
        client = aioredis.Redis.from_url(redis_url)
        clients.append(client)
        options: dict[str, Any] = {
            "redis": client, "prefix": redis_prefix, "conversation_ttl": 600,
            "reply_ttl": 900, "dedup_ttl": 300, "lock_ttl": 30, "lock_wait": 10.0,
        }
        options.update(overrides)
        return Store(**options)

    yield make
    for client in clients:
        await client.aclose()


class AutoClock:
    """Sleeps return at once and move time forward: order, not spacing, is under test."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def record(*parts: str, message_id: str = "A1") -> ReplyRecord:
    return ReplyRecord(
        conversation_id="conv-1", assistant_message_id=message_id,
        conversation_key="slack:T1:C1:1.2:U1", asker="U1", platform=Platform.SLACK,
        workspace="T1", channel="C1", thread="1.2", part_ids=parts,
    )


# ------------------------------------------------------------------ claims


async def test_concurrent_claims_of_one_event_have_exactly_one_winner(
    replicas: MakeStore,
) -> None:
    a, b = replicas(), replicas()
    claims = await asyncio.gather(
        *((a if i % 2 else b).claim("Ev1", quota_subject="U1") for i in range(40))
    )
    assert sum(c.first for c in claims) == 1
    assert [c.quota_count for c in claims if c.first] == [1]


async def test_quota_counts_new_claims_only(replicas: MakeStore) -> None:
    store = replicas()
    counts = []
    for event in ("e1", "e2", "e1", "e3"):
        claim = await store.claim(event, quota_subject="slack:T1:U1", quota_window=120)
        counts.append((claim.first, claim.quota_count))
        if claim.first:
            assert 0 < claim.quota_reset_in <= 120
    assert counts == [(True, 1), (True, 2), (False, 0), (True, 3)]
    other = await store.claim("e4", quota_subject="slack:T1:U2", quota_window=120)
    assert other.quota_count == 1
    plain = await store.claim("e5")
    assert (plain.first, plain.quota_count) == (True, 0)


async def test_claim_loads_scripts_again_after_a_flush(
    replicas: MakeStore, redis_client: aioredis.Redis
) -> None:
    store = replicas()
    assert (await store.claim("before")).first
    await redis_client.script_flush()
    assert (await store.claim("after")).first
    assert not (await store.claim("after")).first


# ------------------------------------------------------------------ conversations


async def test_a_turn_remembers_the_conversation_and_every_reply_part(
    replicas: MakeStore,
) -> None:
    store = replicas()
    assert await store.get_conversation("k1") is None
    assert not await store.has_conversation("k1")
    async with store.turn("k1") as turn:
        assert turn.state is None
        # The first turn is under way: a follow-up already belongs to the conversation.
        assert await store.has_conversation("k1")
        turn.remember("conv-1", "A1", record("p1", "p2"))
    state = await store.get_conversation("k1")
    assert state is not None
    assert (state.conversation_id, state.latest_message_id) == ("conv-1", "A1")
    assert abs(state.last_turn_at - store.clock.now()) < 60
    assert await store.has_conversation("k1")
    for part in ("p1", "p2"):
        assert await store.find_reply(Platform.SLACK, "C1", part) == record("p1", "p2")
    assert await store.find_reply(Platform.DISCORD, "C1", "p1") is None
    # Slack timestamps repeat across channels; Discord snowflakes do not.
    assert await store.find_reply(Platform.SLACK, "C2", "p1") is None

    async with store.turn("k1") as turn:
        assert turn.state == state
        turn.forget()
    assert await store.get_conversation("k1") is None


async def test_discord_replies_are_found_from_the_thread_they_live_in(
    replicas: MakeStore,
) -> None:
    store = replicas()
    answer = ReplyRecord(
        conversation_id="conv-1", assistant_message_id="A1", conversation_key="k",
        asker="U1", platform=Platform.DISCORD, workspace="G1", channel="C-parent",
        thread="T-thread", part_ids=("111", "112"),
    )
    async with store.turn("k") as turn:
        turn.remember("conv-1", "A1", answer)
    assert await store.find_reply(Platform.DISCORD, "T-thread", "112") == answer
    assert await store.find_reply(Platform.DISCORD, "C-parent", "111") == answer


async def test_forget_after_remember_and_remember_after_forget(replicas: MakeStore) -> None:
    store = replicas()
    async with store.turn("k") as turn:
        turn.remember("old", "A0", None)
    async with store.turn("k") as turn:
        turn.forget()  # CHAT_CONVERSATION_NOT_ONGOING: the retry starts a new one
        turn.remember("new", "A1", None)
    state = await store.get_conversation("k")
    assert state is not None and state.conversation_id == "new"
    assert await store.forget_conversation("k")
    assert not await store.forget_conversation("k")


async def test_writes_go_out_even_when_the_turn_fails(replicas: MakeStore) -> None:
    store = replicas()
    with pytest.raises(RuntimeError):
        async with store.turn("k") as turn:
            turn.remember("conv-9", "A9", record("p9"))
            raise RuntimeError("render failed after the answer was shown")
    assert await store.find_reply(Platform.SLACK, "C1", "p9") is not None
    async with asyncio.timeout(5), store.turn("k") as turn:  # the lock was released
        assert turn.state is not None and turn.state.conversation_id == "conv-9"


async def test_update_reply_repoints_parts_and_unmaps_stale_ones(replicas: MakeStore) -> None:
    store = replicas()
    async with store.turn("k") as turn:
        turn.remember("conv-1", "A1", record("p1", "p2", "p3"))
    regenerated = record("p1", "p2", message_id="A2")
    await store.update_reply(regenerated, stale_part_ids=["p3", "p2"])
    assert await store.find_reply(Platform.SLACK, "C1", "p1") == regenerated
    assert await store.find_reply(Platform.SLACK, "C1", "p2") == regenerated
    assert await store.find_reply(Platform.SLACK, "C1", "p3") is None


async def test_feedback_reactions_track_the_set_per_user(replicas: MakeStore) -> None:
    store = replicas()

    async def change(user: str, add: str | None, remove: str | None) -> frozenset[str]:
        return await store.feedback_reactions(
            assistant_message_id="A1", user=user, add=add, remove=remove
        )

    assert await change("U1", "positive", None) == {"positive"}
    assert await change("U1", "negative", None) == {"positive", "negative"}
    assert await change("U2", "negative", None) == {"negative"}
    assert await change("U1", None, "positive") == {"negative"}
    assert await change("U1", None, "negative") == frozenset()
    assert await change("U1", None, "negative") == frozenset()


async def test_an_uncontended_turn_takes_three_round_trips(replicas: MakeStore) -> None:
    store = replicas()
    await store.claim("warm-up", quota_subject="U1")  # loads the scripts
    async with store.turn("warm"):
        pass
    before = store.round_trips
    await store.claim("Ev", quota_subject="U1")
    async with store.turn("k") as turn:
        turn.remember("conv-1", "A1", record("p1", "p2", "p3"))
    assert store.round_trips - before == 3


# ------------------------------------------------------------------ pacing


async def test_reserve_spaces_concurrent_callers_of_two_replicas(replicas: MakeStore) -> None:
    a, b = replicas(), replicas()
    now, interval = 5000.0, 0.2
    slots = await asyncio.gather(
        *((a if i % 2 else b).reserve("slack:T1:chat.update", interval, now) for i in range(30))
    )
    slots.sort()
    assert slots[0] == now
    assert len(set(slots)) == 30
    assert all(later - earlier >= interval - 1e-9 for earlier, later in pairwise(slots))
    # A bucket whose next free time has passed constrains nothing.
    assert await a.reserve("slack:T1:chat.update", interval, now + 100) == now + 100
    # Buckets are independent.
    assert await b.reserve("slack:T2:chat.update", interval, now) == now


async def test_push_back_delays_the_bucket_but_never_advances_it(
    replicas: MakeStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = replicas()
    await store.push_back("discord:C1", 130.0, now=100.0)
    await store.push_back("discord:C1", 110.0, now=100.0)  # an older, shorter 429
    assert await store.reserve("discord:C1", 1.0, 100.0) == 130.0
    assert await store.reserve("discord:C1", 1.0, 100.0) == 131.0
    ttl = await redis_client.pttl(f"{redis_prefix}pace:discord:C1")
    assert 0 < ttl <= (132.0 + 1.0 - 100.0) * 1000 + 1000


async def test_limiter_admits_exactly_limit_per_window_across_replicas(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        limiters = [
            RedisLimiter(redis=c, key=f"{redis_prefix}limit:chatbase", limit=5, window=10.0)
            for c in clients
        ]
        waits = await asyncio.gather(
            *(limiters[i % 2].try_acquire(1000.0) for i in range(12))
        )
        assert sorted(waits) == [0.0] * 5 + [10.0] * 7
        assert await limiters[0].try_acquire(1009.5) == pytest.approx(0.5)
        waits = await asyncio.gather(*(limiters[i % 2].try_acquire(1010.0) for i in range(7)))
        assert sorted(waits) == [0.0] * 5 + [pytest.approx(10.0)] * 2
    finally:
        for client in clients:
            await client.aclose()


async def test_limiter_acquire_waits_on_the_injected_clock(replicas: MakeStore) -> None:
    clock = AutoClock(2000.0)
    a = replicas(clock=clock).limiter("chatbase", limit=3, window=10.0)
    b = replicas(clock=clock).limiter("chatbase", limit=3, window=10.0)
    admitted = []
    for i in range(7):
        await (a if i % 2 else b).acquire()
        admitted.append(clock.now())
    assert admitted == [2000.0] * 3 + [2010.0] * 3 + [2020.0]


# ------------------------------------------------------------------ hygiene


async def test_every_key_written_has_a_ttl(
    replicas: MakeStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    a, b = replicas(), replicas(lock_wait=0.2)
    await a.claim("Ev1", quota_subject="U1")
    await a.claim("Ev1", quota_subject="U1")
    async with a.turn("k") as turn:
        turn.remember("conv-1", "A1", record("p1", "p2"))
        with pytest.raises(StoreError):
            async with b.turn("k"):
                pass
        queued = asyncio.Event()
        waiter = asyncio.create_task(
            _enter_and_leave(a.turn("k", on_wait=lambda _pos: queued.set()))
        )
        await queued.wait()
        held = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}turn*")]
        assert {key.decode()[len(redis_prefix):].split(":")[0] for key in held} >= {
            "turnq", "turnl"
        }
        for key in held:
            assert await redis_client.pttl(key) > 0, key
    await waiter
    await a.update_reply(record("p1", "p3", message_id="A2"), stale_part_ids=["p2"])
    await a.feedback_reactions(assistant_message_id="A1", user="U1", add="positive",
                               remove=None)
    await a.reserve("bucket", 0.5, 10.0)
    await a.push_back("bucket2", 50.0, now=10.0)
    await a.limiter("chatbase", limit=2, window=5.0).try_acquire(10.0)

    keys = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")]
    kinds = {key.decode()[len(redis_prefix):].split(":")[0] for key in keys}
    assert kinds >= {"event", "quota", "conv", "reply", "fb", "pace", "limit"}
    for key in keys:
        assert await redis_client.pttl(key) > 0, key


async def _enter_and_leave(lock: Any) -> None:
    async with lock:
        pass


# ------------------------------------------------------------------ connecting


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_redis_is_a_plain_error_without_the_password() -> None:
    port = _closed_port()
    settings = load_settings(REDIS_URL=f"redis://bridge:s3cret-pw@127.0.0.1:{port}/0")
    with pytest.raises(StoreError) as caught:
        async with connect(settings):
            pass
    message = str(caught.value)
    assert message.startswith(f"Cannot reach Redis at 127.0.0.1:{port} (REDIS_URL): ")
    assert "s3cret-pw" not in message

    client = aioredis.Redis.from_url(f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    store = Store(redis=client, prefix="x:", conversation_ttl=60, reply_ttl=60, dedup_ttl=60,
                  lock_ttl=5, lock_wait=1.0)
    try:
        for call in (store.ping(), store.claim("e"), store.reserve("b", 1.0, 1.0)):
            with pytest.raises(StoreError, match="REDIS_URL") as caught:
                await call
            assert "s3cret-pw" not in str(caught.value)
            assert f"127.0.0.1:{port}" in str(caught.value)
    finally:
        await client.aclose()


async def test_connect_to_a_given_url(redis_url: str) -> None:
    async with connect(load_settings(REDIS_URL=redis_url)) as client:
        assert await client.ping()


async def test_embedded_redis_keeps_data_across_a_restart(tmp_path: Path) -> None:
    settings = load_settings(REDIS_URL="", BRIDGE_DATA_DIR=str(tmp_path / "data"))
    async with connect(settings) as client:
        await client.set("cbb-test:persisted", "yes", ex=600)
    assert any((tmp_path / "data").iterdir())
    async with connect(settings) as client:
        assert await client.get("cbb-test:persisted") == b"yes"
        assert await client.ttl("cbb-test:persisted") > 0
