"""Real ``chatbase-bridge run`` processes (Slack HTTP mode) against the fakes and one Redis:
SIGTERM with twenty answers in flight, and two replicas sharing events, budgets and turns.

Both replicas take events on their own port; Slack would send an event to one of them, but a
retry may reach the other, so the same signed event is posted to both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bridge.core import notices
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.slack import FakeSlack, event_envelope, mention_event, message_event
from tests.reliability.keyspace import turn_queue_watch
from tests.reliability.processes import Bridge, TimedChatbase, bridge_env, deliver

CUT = notices.CUT_OFF.format(reason=notices.SHUTTING_DOWN)


async def test_sigterm_with_twenty_answers_in_flight(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with TimedChatbase() as chatbase, FakeSlack() as slack, \
            aiohttp.ClientSession() as session:
        bridge = Bridge(bridge_env(tmp_path, chatbase, slack, redis_url, redis_prefix,
                                   BRIDGE_SHUTDOWN_GRACE="3"), tmp_path)
        await bridge.start()
        try:
            gates = [Gate() for _ in range(20)]
            chatbase.script(*(Answer(deltas=[f"Answer {i} starts ", "and is complete."],
                                     gate=g) for i, g in enumerate(gates)))
            # Twenty DMs from twenty workspaces (each its own Slack budget), one at a time
            # so that script i answers DM i.
            for i in range(20):
                status = await deliver(session, bridge, slack, event_envelope(
                    message_event(text=f"q{i}", ts=f"17000000{i:02d}.000100",
                                  channel=f"D0DM{i:02d}", team=f"T0TEAM{i:02d}"),
                    team_id=f"T0TEAM{i:02d}"))
                assert status == 200
                await chatbase.wait_requests(i + 1, endpoint="chat", within=10)
                gates[i].release(1)
            await slack.wait_for(lambda: len(slack.calls_to("chat.postMessage", ok=True)) == 20)

            stopping = asyncio.create_task(bridge.stop())
            await bridge.wait_line(r"SIGTERM received")
            for gate in gates[:10]:  # these finish within the grace period
                gate.open()
            assert await stopping == 0, bridge.log
        finally:
            await bridge.kill()

        shown = [slack.thread_texts(f"D0DM{i:02d}", None) for i in range(20)]
        assert shown[:10] == [[f"Answer {i} starts and is complete."] for i in range(10)]
        assert shown[10:] == [[f"Answer {i} starts \n\n{CUT}"] for i in range(10, 20)]
        assert "cutting off 10 answer(s) still in flight" in bridge.log
        assert "Traceback" not in bridge.log
        assert slack.bot_token not in bridge.log and chatbase.api_key not in bridge.log


async def test_two_replicas_answer_each_event_once_and_take_turns(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with TimedChatbase() as chatbase, FakeSlack() as slack, \
            aiohttp.ClientSession() as session, \
            turn_queue_watch(redis_url, redis_prefix) as queued:
        env = bridge_env(tmp_path, chatbase, slack, redis_url, redis_prefix)
        bridges = [Bridge(env, tmp_path), Bridge(env, tmp_path)]
        try:
            await asyncio.gather(*(b.start() for b in bridges))
            # The same signed event to both replicas, at the same time: one answer.
            events = [event_envelope(message_event(
                text=f"walrus question {n}", ts=f"17000000{n:02d}.000100",
                channel=f"D0DM{n:02d}", user=f"U0PERSON{n:02d}")) for n in range(5)]
            statuses = await asyncio.gather(*(deliver(session, b, slack, e)
                                              for e in events for b in bridges))
            assert set(statuses) == {200}
            await slack.wait_for(lambda: all(slack.thread_texts(f"D0DM{n:02d}", None)
                                             for n in range(5)))
            # One turn at a time per conversation, across the processes.
            gate = Gate()
            chatbase.script(Answer(text="narwhal first answer", gate=gate))
            pushes = queued.pushes
            first = event_envelope(message_event(text="turn one", ts="1700000100.000100",
                                                 channel="D0SER", user="U0SER"))
            second = event_envelope(message_event(text="turn two", ts="1700000101.000100",
                                                  channel="D0SER", user="U0SER"))
            assert await deliver(session, bridges[0], slack, first) == 200
            await chatbase.wait_requests(6, endpoint="chat", within=10)
            assert await deliver(session, bridges[1], slack, second) == 200
            await queued.wait(pushes + 2)
            assert len(chatbase.chat_calls) == 6  # turn two waits for turn one
            gate.open()
            await slack.wait_for(lambda: len(slack.thread_texts("D0SER", None)) == 2)

            for n in range(5):
                assert slack.thread_texts(f"D0DM{n:02d}", None) == [
                    f"Echo: walrus question {n}"]
            assert len(chatbase.chat_calls) == 7
            assert slack.thread_texts("D0SER", None) == ["narwhal first answer",
                                                          "Echo: turn two"]
            calls = chatbase.chat_calls
            assert calls[6].body["conversationId"] == _conversation(chatbase, "turn one")

            # Neither process's health or metrics endpoint shows content or identities.
            words = ["walrus", "narwhal", "Echo", "turn one", "U0PERSON", "U0SER", "D0DM",
                     "D0SER", "T0TEAM", slack.bot_token, slack.signing_secret,
                     chatbase.api_key]
            for bridge in bridges:
                for path in ("/healthz", "/readyz", "/metrics"):
                    async with session.get(bridge.url + path) as response:
                        assert response.status == 200
                        body = await response.text()
                    assert not [w for w in words if w in body], (path, body[:500])
                    if path == "/metrics":
                        assert "bridge_answers" in body
        finally:
            codes = await asyncio.gather(*(b.stop() for b in bridges))
        assert codes == [0, 0], bridges[0].log + bridges[1].log
        # Each event went to both; exactly one process answered it, the other dropped it.
        dropped = sum(b.log.count("dropped a duplicate delivery") for b in bridges)
        assert dropped == 5


def _conversation(chatbase: TimedChatbase, text: str) -> str:
    for conversation in chatbase.conversations.values():
        if any(m.text == text for m in conversation.messages):
            return conversation.id
    raise AssertionError(text)


async def test_two_replicas_share_the_chatbase_and_slack_budgets(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    limit, window = 2, 1.0
    async with TimedChatbase() as chatbase, FakeSlack() as slack, \
            aiohttp.ClientSession() as session:
        # Slack's real tiers on both sides: chat.postMessage about one per second per
        # channel (the fake refuses a fourth within three seconds).
        env = bridge_env(tmp_path, chatbase, slack, redis_url, redis_prefix,
                         BRIDGE_CHATBASE_RATE_LIMIT=str(limit),
                         BRIDGE_CHATBASE_RATE_WINDOW=str(window),
                         BRIDGE_SLACK_NATIVE_STREAMING="false")
        bridges = [Bridge(env, tmp_path), Bridge(env, tmp_path)]
        try:
            await asyncio.gather(*(b.start() for b in bridges))
            stamps = [f"17000002{n:02d}.000100" for n in range(4)]
            mentions = [event_envelope(mention_event(text=f"<@UBOT> question {n}", ts=ts,
                                                     user=f"U0ASKER{n}"))
                        for n, ts in enumerate(stamps)]
            statuses = await asyncio.gather(*(
                deliver(session, bridges[n % 2], slack, m) for n, m in enumerate(mentions)))
            assert set(statuses) == {200}
            await slack.wait_for(
                lambda: all(slack.thread_texts("C0CHAN", ts) for ts in stamps)
                and not any("▌" in t for ts in stamps for t in slack.thread_texts("C0CHAN", ts)),
                within=30)
        finally:
            codes = await asyncio.gather(*(b.stop() for b in bridges))
        assert codes == [0, 0]
        assert sorted(slack.thread_texts("C0CHAN", ts)[0] for ts in stamps) == sorted(
            f"Echo: question {n}" for n in range(4))
        # No 429 from Slack although both processes answered into one channel at once.
        assert slack.rate_limited == [], [(c.method, c.at) for c in slack.calls]
        # At most `limit` chat requests reached Chatbase in any window (less the jitter
        # between a request being admitted and arriving).
        times = sorted(chatbase.chat_times)
        assert len(times) == 4
        for i, start in enumerate(times):
            assert sum(1 for t in times[i:] if t - start < window - 0.1) <= limit, times
