"""Redis faults: down at start, gone in the middle of a run and back, hung, and slow.

Expected: a Redis that is down at start is one plain sentence naming REDIS_URL (never its
password); a Redis lost mid-run costs memory and de-duplication, not answers, and nothing
false is said about it; when it returns the bridge uses it again without a restart; a hung
Redis counts as down after REDIS_TIMEOUT; a slow Redis makes answers slower, never wrong,
and Slack is still acknowledged in time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.views import POSITIVE_ID
from adapters.slack.adapter import RESET_FAILED, RESET_NOTHING
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from bridge.core.errors import StoreError
from tests.fakes import secrets
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.discord_stack import discord_stack
from tests.fakes.slack import event_envelope, mention_event, slash_command
from tests.fakes.slack_stack import slack_stack
from tests.integration.cli_process import bare_env, run_cli
from tests.reliability.redis_tools import DedicatedRedis, RedisProxy
from tests.reliability.rig import recording, rig

PASSWORD = "hunter2-redis-password"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_down_at_start_is_one_sentence_naming_redis_url(tmp_path: Path) -> None:
    secrets.register(PASSWORD)
    port = closed_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    settings = Settings(_env_file=None, CHATBASE_API_KEY="k" * 12,  # type: ignore[call-arg]
                        CHATBASE_AGENT_ID="agent", REDIS_URL=url)
    with pytest.raises(StoreError) as raised:
        async with Runtime(settings=settings):
            pass
    message = str(raised.value)
    assert "REDIS_URL" in message and f"127.0.0.1:{port}" in message
    assert PASSWORD not in message

    # The same through the command line: exit status 1, one line, no traceback.
    env = bare_env(tmp_path, CHATBASE_API_KEY="k" * 12, CHATBASE_AGENT_ID="agent",
                   REDIS_URL=url, SLACK_BOT_TOKEN="xoxb-never-used",
                   SLACK_SIGNING_SECRET="never-used-secret", BRIDGE_HTTP_HOST="127.0.0.1",
                   BRIDGE_HTTP_PORT="0")
    done = await run_cli("run", env=env, cwd=tmp_path)
    assert done.status == 1, done.err
    last = done.err.strip().splitlines()[-1]
    assert last.startswith("error: Cannot reach Redis at 127.0.0.1:") and "(REDIS_URL)" in last
    assert "Traceback" not in done.err and PASSWORD not in done.err + done.out


async def test_redis_lost_mid_run_then_back(redis_prefix: str) -> None:
    async with DedicatedRedis() as redis, rig(redis.url, redis_prefix) as r:
        await r.service.handle_message(r.message("before", user="U1"), r.sink())
        assert "conversationId" not in r.fake.chat_calls[0].body

        # Redis dies while an answer is streaming: the answer still ends exactly.
        gate = Gate()
        r.fake.script(Answer(text="streaming through the outage", gate=gate))
        during = r.sink()
        with recording() as logs, logged("could not release a conversation turn") as retrying:
            task = asyncio.create_task(r.service.handle_message(r.message("during"), during))
            await r.fake.wait_requests(2, endpoint="chat")
            await redis.kill()
            gate.open()
            # The answer is shown; its turn keeps trying to let go of the lock...
            await retrying.wait()
            assert during.joined() == "streaming through the outage" and not task.done()
            await redis.start()  # ...and manages once Redis is back.
            await task
        assert during.answered is True
        assert logs.find("could not release a conversation turn", "REDIS_URL",
                         level=logging.INFO), logs.lines()
        await redis.kill()

        # While it is down, messages are still answered: no memory, nothing false said.
        down = r.sink()
        with recording() as logs:
            await r.service.handle_message(r.message("while down", user="U1"), down)
        assert down.joined() == "Echo: while down"  # no "new conversation" note
        body = r.fake.chat_calls[-1].body
        assert "conversationId" not in body and body["userId"] == "slack.T1.U1"
        for part in ("answering without de-duplication", "answering without conversation "
                     "memory", "pacing falls back to this process only",
                     "Chatbase request budget falls back to this process only"):
            assert logs.find(part, "REDIS_URL", f"unix:{redis.socket}"), logs.lines()

        # Redis is back (empty, as a restarted server without persistence is): memory and
        # exactly-once work again without restarting the bridge.
        await redis.start()
        with recording() as logs:
            first = r.message("after", user="U2", event_id="ev-after")
            await r.service.handle_message(first, r.sink())
            again = r.sink()
            await r.service.handle_message(first, again)  # a redelivery
            await r.service.handle_message(r.message("follow-up", user="U2"), r.sink())
        assert again.calls == []
        calls = r.fake.chat_calls
        assert [c.body["message"] for c in calls[-2:]] == ["after", "follow-up"]
        assert calls[-1].body["conversationId"] == _conversation_of(r, "after")
        assert logs.lines(logging.WARNING) == []


async def test_a_hung_redis_counts_as_down_after_redis_timeout(
    redis_url: str, redis_prefix: str
) -> None:
    """A Redis that stops answering without closing anything (paused, or a network that
    drops packets) costs each round trip REDIS_TIMEOUT and is then handled as one that is
    down: the answer still comes, without memory, and the warnings name the setting. Once it
    answers again it is used again, on new connections."""
    async with RedisProxy(redis_url) as proxy, \
            rig(redis_url, redis_prefix, redis_urls=[proxy.url], REDIS_TIMEOUT="0.3") as r:
        await r.service.handle_message(r.message("before", user="U1"), r.sink())
        conversation = _conversation_of(r, "before")
        proxy.delay = 3600.0  # from now on nothing crosses the proxy, either way
        hung = r.sink()
        with recording() as logs:
            await r.service.handle_message(r.message("while hung", user="U1"), hung)
        assert hung.joined() == "Echo: while hung"
        assert "conversationId" not in r.fake.chat_calls[-1].body
        assert logs.find("answering without conversation memory",
                         "did not answer within 0.3s (REDIS_TIMEOUT)", "(REDIS_URL)"), \
            logs.lines()
        proxy.delay = 0.0
        back = r.sink()
        with recording() as logs:
            await r.service.handle_message(r.message("after", user="U1"), back)
        assert back.joined() == "Echo: after"
        assert r.fake.chat_calls[-1].body["conversationId"] == conversation
        assert logs.lines(logging.WARNING) == []


@contextmanager
def logged(text: str) -> Iterator[asyncio.Event]:
    """An event set when a log record containing ``text`` is made."""
    seen = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Watch()
    logging.getLogger().addHandler(handler)
    try:
        yield seen
    finally:
        logging.getLogger().removeHandler(handler)


def _conversation_of(r: object, message: str) -> str:
    fake = r.fake  # type: ignore[attr-defined]
    for conversation in fake.conversations.values():
        if any(m.text == message for m in conversation.messages):
            return str(conversation.id)
    raise AssertionError(f"no conversation holds {message!r}")


async def test_slow_redis_makes_answers_slower_not_wrong(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisProxy(redis_url, delay=0.02) as proxy, \
            rig(redis_url, redis_prefix, replicas=2, redis_urls=[proxy.url, proxy.url]) as r:
        gate = Gate()
        r.fake.script(Answer(text="answer 0", gate=gate))
        turns = [r.message(f"turn {i}", user="U1") for i in range(3)]
        others = [r.message(f"other {i}", user=f"U{i + 2}") for i in range(3)]
        sinks = [r.sink() for _ in range(6)]
        started = time.monotonic()
        first = asyncio.create_task(r.replicas[0].service.handle_message(turns[0], sinks[0]))
        await r.fake.wait_requests(1, endpoint="chat")
        rest = [asyncio.create_task(r.replicas[i % 2].service.handle_message(m, s))
                for i, (m, s) in enumerate(zip(turns[1:] + others, sinks[1:], strict=True))]
        # The other people's answers go ahead; the later turns of the held conversation wait.
        await r.fake.wait_requests(4, endpoint="chat")
        assert {c.body["message"] for c in r.fake.chat_calls} == {
            "turn 0", "other 0", "other 1", "other 2"}
        gate.open()
        await asyncio.gather(first, *rest)
        elapsed = time.monotonic() - started
        assert [s.joined() for s in sinks] == [
            "answer 0", "Echo: turn 1", "Echo: turn 2",
            "Echo: other 0", "Echo: other 1", "Echo: other 2"]
        conversation = _conversation_of(r, "turn 0")
        later = [c for c in r.fake.chat_calls if c.body["message"] in ("turn 1", "turn 2")]
        assert [c.body.get("conversationId") for c in later] == [conversation] * 2
        # The proxy really was in the way: a turn's round trips each paid 40 ms.
        assert proxy.connections >= 2 and elapsed >= 0.12


async def test_slow_redis_still_lets_slack_acknowledge_in_time(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisProxy(redis_url, delay=0.05) as proxy, \
            slack_stack(proxy.url, redis_prefix) as stack:
        delivered = await stack.deliver(event_envelope(
            mention_event(text="<@UBOT> slow but sure", ts="1700000001.000100")))
        assert delivered.status == 200 and delivered.seconds < 0.5
        await stack.idle()
        assert stack.slack.thread_texts("C0CHAN", "1700000001.000100") == [
            "Echo: slow but sure"]
        # A reset answers within Slack's three seconds: done when Redis is merely slow...
        reset = await stack.command(slash_command(channel="D0DM"))
        assert reset.status == 200 and reset.json()["text"] == RESET_NOTHING
        # ...and a plain apology when Redis is slower than that.
        proxy.delay = 1.5
        with recording() as logs:
            late = await stack.command(slash_command(channel="D0DM"))
        assert late.status == 200 and late.seconds < 3.0
        assert late.json()["text"] == RESET_FAILED
        assert logs.find("reset failed")
        proxy.delay = 0.0


async def test_slow_redis_still_lets_discord_acknowledge_every_interaction_in_time(
    redis_url: str, redis_prefix: str
) -> None:
    """Discord gives an interaction 3 s for its first response; /ask, /reset and a button
    press are acknowledged before a slow Redis has answered anything."""
    callback = "/interactions/{interaction_id}/{token}/callback"
    slow = 1.5  # each way: one Redis round trip takes 3 s

    async with RedisProxy(redis_url) as proxy, discord_stack(
            proxy.url, redis_prefix, BRIDGE_DISCORD_FEEDBACK_BUTTONS="true") as s:
        ann = s.discord.user("ann")
        s.chatbase.script(Answer(text="Slowly but surely."))

        def acknowledged(interaction: dict[str, Any]) -> list[Any]:
            return [c for c in s.discord.calls_to("POST", callback)
                    if c.path.startswith(f"/interactions/{interaction['id']}/")]

        def answer_of(interaction: dict[str, Any]) -> str:
            state = s.discord.interactions[interaction["token"]]
            message = s.discord.messages.get(state.original_id or "")
            return str(message["content"]) if message else ""

        proxy.delay = slow
        for name, options in (("ask", {"question": "hi"}), ("reset", {})):
            started = time.monotonic()
            interaction = await s.discord.slash(ann, s.channel, name, **options)
            (ack,) = await s.discord.wait_for(lambda i=interaction: acknowledged(i))
            assert ack.at - started < slow, name
            assert ack.body["type"] == 5
            await s.discord.wait_for(lambda i=interaction: answer_of(i), within=30)
            # The answer needed Redis, so it came after the delay: it really was in the way.
            assert time.monotonic() - started > slow
        await s.adapter.wait_idle()
        asked = next(m for m in s.discord.messages.values()
                     if m["content"] == "Slowly but surely.")
        await s.discord.wait_for(lambda: s.discord.messages[asked["id"]]["components"],
                                 within=30)

        started = time.monotonic()
        press = await s.discord.press(ann, s.discord.messages[asked["id"]], POSITIVE_ID)
        (ack,) = await s.discord.wait_for(lambda: acknowledged(press))
        assert ack.at - started < slow and ack.body["type"] == 6
        await s.chatbase.wait_for(lambda: len(s.chatbase.feedback_calls) == 1, within=30)
        proxy.delay = 0.0


async def test_a_busy_replica_is_not_refused_by_its_own_connection_pool(
    redis_url: str, redis_prefix: str
) -> None:
    """Hundreds of Redis commands at once (answers in flight, turns queued in BLPOP) wait
    for a pooled connection instead of failing as if Redis were down."""
    from bridge.store import Store, connect

    settings = Settings(_env_file=None, REDIS_URL=redis_url,  # type: ignore[call-arg]
                        BRIDGE_REDIS_PREFIX=redis_prefix)
    async with connect(settings) as client:
        store = Store.from_settings(client, settings)
        claims = await asyncio.gather(*(store.claim(f"busy-{n}") for n in range(300)))
        assert all(claim.first for claim in claims)
        # A queue of waiters on one conversation holds a connection each while it waits.
        async with store.turn("busy-conversation"):
            waiting = [asyncio.create_task(_take_turn(store)) for _ in range(150)]
            extra = await asyncio.gather(*(store.claim(f"more-{n}") for n in range(50)))
        assert all(claim.first for claim in extra)
        await asyncio.gather(*waiting)
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*", count=500)]
        if keys:
            await client.delete(*keys)


async def _take_turn(store: object) -> None:
    async with store.turn("busy-conversation"):  # type: ignore[attr-defined]
        pass


async def test_a_release_lost_to_a_redis_outage_holds_the_next_turn_one_short_lease(
    redis_url: str, redis_prefix: str
) -> None:
    """Redis stays away longer than the release retries: the lease is not removed, so the
    conversation's next turn waits for it to lapse. That is one short lease (renewed by the
    heartbeat while a turn runs), not minutes."""
    from bridge.store import Store, connect

    assert Settings(_env_file=None).lock_ttl <= 30  # type: ignore[call-arg]
    lease = 3
    env = {"BRIDGE_REDIS_PREFIX": redis_prefix, "BRIDGE_LOCK_WAIT": 60,
           "BRIDGE_LOCK_TTL": lease}
    async with RedisProxy(redis_url) as proxy:
        through = Settings(_env_file=None, REDIS_URL=proxy.url, **env)  # type: ignore[call-arg]
        direct = Settings(_env_file=None, REDIS_URL=redis_url, **env)  # type: ignore[call-arg]
        async with connect(through) as near, connect(direct) as far:
            first, second = Store.from_settings(near, through), Store.from_settings(far, direct)
            with pytest.raises(StoreError):
                async with first.turn("outage"):
                    proxy.cut(60)  # the release and all its retries meet a dead Redis
            lost = time.monotonic()
            async with asyncio.timeout(lease + 10), second.turn("outage"):
                waited = time.monotonic() - lost
            # At most one lease plus one poll of the queue, with room for a slow machine.
            assert waited < lease + 2.5
            keys = [k async for k in far.scan_iter(match=f"{redis_prefix}*", count=500)]
            if keys:
                await far.delete(*keys)


async def test_a_turn_released_during_a_redis_blip_does_not_hold_up_the_next(
    redis_url: str, redis_prefix: str
) -> None:
    """A release lost to a blip would leave the lease for BRIDGE_LOCK_TTL (300 s): the
    conversation's next message would wait that long."""
    from bridge.store import Store, connect

    env = {"BRIDGE_REDIS_PREFIX": redis_prefix, "BRIDGE_LOCK_WAIT": 5}
    async with RedisProxy(redis_url) as proxy:
        through = Settings(_env_file=None, REDIS_URL=proxy.url, **env)  # type: ignore[call-arg]
        direct = Settings(_env_file=None, REDIS_URL=redis_url, **env)  # type: ignore[call-arg]
        async with connect(through) as near, connect(direct) as far:
            first, second = Store.from_settings(near, through), Store.from_settings(far, direct)
            with recording() as logs:
                async with first.turn("blip") as turn:
                    turn.remember("conv-1", "m1", None)
                    proxy.cut(0.3)  # the release meets a dead connection, then refusals
            assert logs.find("could not release a conversation turn", level=logging.INFO)
            started = time.monotonic()
            async with second.turn("blip") as turn:
                assert turn.state is not None and turn.state.conversation_id == "conv-1"
            assert time.monotonic() - started < 1.0
            keys = [k async for k in far.scan_iter(match=f"{redis_prefix}*", count=500)]
            if keys:
                await far.delete(*keys)
