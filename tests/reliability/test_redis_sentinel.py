"""Redis behind Sentinel, as self-hosted production runs it: a primary, a replica and three
sentinels (quorum 2, requirepass), the bridge finding the primary through them with its own
ACL user.

Expected: the bridge, built by ``compose`` from REDIS_SENTINELS, answers every question
completely while a failover happens under answers in flight; once the sentinels name the new
primary, de-duplication, conversation memory and the stop listener work on it without a
restart; ``check`` names the setting at fault (unreachable sentinels, a wrong master name,
a refused sentinel password).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bridge.app.checks import check_redis
from bridge.app.settings import Settings
from tests.fakes import secrets
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.slack import event_envelope, mention_event
from tests.fakes.slack_stack import SlackStack, slack_stack
from tests.reliability.redis_servers import (
    MASTER,
    SentinelSet,
    free_port,
    minimal_acl,
    redis_binary,
    redis_server,
    sentinel_set,
    until,
)
from tests.reliability.redis_tools import RedisProxy
from tests.reliability.rig import recording

PASSWORD = "bridge-sentinel-" + os.urandom(6).hex()


@asynccontextmanager
async def cluster(prefix: str) -> AsyncIterator[SentinelSet]:
    binary = redis_binary()
    secrets.register(PASSWORD)
    # ACL users are not replicated: the primary and the replica both define the bridge's.
    async with sentinel_set(binary, data_conf=[
            f"user bridge {minimal_acl(prefix, PASSWORD)}"]) as found:
        secrets.register(found.sentinel_password)
        yield found


def sentinel_env(found: SentinelSet, **overrides: str) -> dict[str, str]:
    return {"REDIS_SENTINELS": found.addresses, "REDIS_SENTINEL_MASTER": MASTER,
            "REDIS_USERNAME": "bridge", "REDIS_PASSWORD": PASSWORD,
            "REDIS_SENTINEL_PASSWORD": found.sentinel_password, **overrides}


def _ask(n: int, *, thread_ts: str | None = None) -> dict[str, Any]:
    return event_envelope(mention_event(text=f"<@UBOT> question {n}", ts=f"1700000{n:03d}.000100",
                                        thread_ts=thread_ts))


def _thread(n: int) -> str:
    return f"1700000{n:03d}.000100"


async def _answered(stack: SlackStack, n: int) -> list[str]:
    return stack.slack.thread_texts("C0CHAN", _thread(n))


async def test_answers_survive_a_failover_and_dedup_works_on_the_new_primary(
    redis_prefix: str,
) -> None:
    started = time.monotonic()
    async with cluster(redis_prefix) as found, \
            slack_stack("", redis_prefix, **sentinel_env(found)) as stack:
        old_primary = found.primary.address
        # Before: answered and remembered through the primary the sentinels name.
        before = [_ask(n) for n in range(3)]
        for event in before:
            assert (await stack.deliver(event)).status == 200
        await stack.idle()
        for n in range(3):
            assert await _answered(stack, n) == [f"Echo: question {n}"]
        # In flight across the failover: text shown, the rest held at Chatbase.
        gates = [Gate() for _ in range(3)]
        stack.chatbase.script(*(Answer(text=f"answer {n} arrives in several parts", gate=g)
                                for n, g in zip(range(3, 6), gates, strict=True)))
        during = [_ask(n) for n in range(3, 6)]
        asked = len(stack.chatbase.calls("chat"))
        for i, event in enumerate(during, start=1):
            assert (await stack.deliver(event)).status == 200
            # The scripted answers go out in the order the requests arrive: one question at
            # a time, so question n gets answer n.
            await stack.chatbase.wait_requests(asked + i, endpoint="chat", within=10)
        for gate in gates:
            gate.release(1)
        for gate in gates:
            await gate.wait_sent(1, within=10)
        # Everything so far is on the replica too, so none of it can be lost with the old
        # primary (the test's own wait; replication is asynchronous in production).
        assert await found.primary.admin().execute_command("WAIT", 1, 5000) == 1

        new_primary = await found.failover()
        assert new_primary != old_primary
        for gate in gates:
            gate.open()
        # Asked while the bridge's connections to the old primary are being closed.
        late = [_ask(n) for n in range(6, 8)]
        for event in late:
            assert (await stack.deliver(event)).status == 200
        await stack.idle()

        # No answer lost: every question has its complete final answer, once.
        for n in range(3, 6):
            assert await _answered(stack, n) == [f"answer {n} arrives in several parts"]
        for n in range(6, 8):
            assert await _answered(stack, n) == [f"Echo: question {n}"]

        # On the new primary: redeliveries of events claimed before the failover, and of a
        # new one, are dropped; a follow-up continues its remembered conversation.
        async def claims_on_new_primary() -> bool:
            fresh = _ask(8)
            await stack.deliver(fresh)
            await stack.idle()
            if await _answered(stack, 8) != ["Echo: question 8"]:
                return False
            chats = len(stack.chatbase.chat_calls)
            for event in (*before, *during, fresh):
                await stack.deliver(event, retry_num=1)
            await stack.idle()
            return len(stack.chatbase.chat_calls) == chats

        # (The demoted primary is a read-only replica now: a claim that did not reach the new
        # primary would have failed, and its message been answered again.)
        assert await claims_on_new_primary()
        follow = event_envelope(mention_event(text="<@UBOT> and then?", ts="1700000999.000200",
                                              thread_ts=_thread(1)))
        await stack.deliver(follow)
        await stack.idle()
        last = stack.chatbase.chat_calls[-1].body
        first = next(c.body for c in stack.chatbase.chat_calls
                     if c.body.get("message") == "question 1")
        assert last["message"] == "and then?"
        assert last.get("conversationId") and last["conversationId"] == _conversation_of(
            stack, "question 1"), (last, first)

        # The stop listener subscribed again, on the new primary, through the sentinels.
        async def listening() -> bool:
            channels = await found.primary.admin().pubsub_channels(f"{redis_prefix}stops")
            return bool(channels) and stack.store.stops.ready.is_set()

        await until(listening, within=20, what="the stop listener on the new primary")
    assert time.monotonic() - started < 60


def _conversation_of(stack: SlackStack, message: str) -> str:
    for conversation in stack.chatbase.conversations.values():
        if any(m.text == message for m in conversation.messages):
            return str(conversation.id)
    raise AssertionError(f"no conversation holds {message!r}")


async def test_check_names_the_sentinel_setting_at_fault(redis_prefix: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    nobody = await check_redis(_settings({"REDIS_SENTINELS": closed,
                                          "REDIS_SENTINEL_MASTER": MASTER}))
    assert nobody.status != "ok"
    assert "no sentinel in REDIS_SENTINELS could be asked" in nobody.detail, nobody.detail
    assert closed in nobody.detail and "connection refused" in nobody.detail

    async with cluster(redis_prefix) as found:
        good = await check_redis(_settings(sentinel_env(found)))
        assert good.status == "ok" and found.primary.address in good.detail, good.detail
        assert "REDIS_SENTINELS" in good.detail

        wrong_name = await check_redis(_settings(sentinel_env(
            found, REDIS_SENTINEL_MASTER="no-such-master")))
        assert "REDIS_SENTINEL_MASTER" in wrong_name.detail and wrong_name.config
        assert "no-such-master" in wrong_name.detail

        refused = await check_redis(_settings(sentinel_env(
            found, REDIS_SENTINEL_PASSWORD="not-the-sentinel-password")))
        assert "REDIS_SENTINEL_PASSWORD" in refused.detail and refused.config, refused.detail

        wrong_user_pw = await check_redis(_settings(sentinel_env(
            found, REDIS_PASSWORD="not-the-bridge-password")))
        assert "refused the credentials (REDIS_USERNAME/REDIS_PASSWORD)" in \
            wrong_user_pw.detail, wrong_user_pw.detail
        for result in (nobody, good, wrong_name, refused, wrong_user_pw):
            assert PASSWORD not in result.detail
            assert found.sentinel_password not in result.detail


def _settings(env: dict[str, str]) -> Settings:
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
    secrets.register_settings(settings)
    return settings



async def test_a_primary_demoted_behind_one_address_is_left_without_losing_a_command(
    redis_prefix: str,
) -> None:
    """A failover behind a DNS name (managed Redis): the name moves to the new primary while
    the bridge's pooled connections still reach the old one, now a replica. The command that
    meets READONLY there ran nowhere; it is retried once on a new connection, which reaches
    the new primary, so nothing fails and nothing runs twice."""
    from bridge.store import Store, connect

    binary = redis_binary()
    async with redis_server(binary, []) as first, redis_server(binary, []) as second, \
            RedisProxy(f"redis://{first.address}") as name:
        settings = _settings({"REDIS_URL": name.url, "BRIDGE_REDIS_PREFIX": redis_prefix})
        async with connect(settings) as client:
            store = Store.from_settings(client, settings)
            assert (await store.claim("before")).first
            # The failover: the old primary follows the new one, the name moves.
            await first.admin().execute_command("REPLICAOF", "127.0.0.1", str(second.port))
            name.retarget(f"redis://{second.address}")
            with recording() as logs:
                assert (await store.claim("after")).first
                assert not (await store.claim("after")).first
                async with store.turn("k") as turn:
                    turn.remember("conv-after", None, None)
            assert await second.admin().exists(f"{redis_prefix}event:after")
            assert (await store.get_conversation("k")) is not None
            assert not logs.find("READONLY", level=logging.DEBUG), logs.lines()
