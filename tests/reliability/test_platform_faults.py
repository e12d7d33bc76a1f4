"""Platform faults through the real adapters (slack-bolt, discord.py) against the fakes: 429
bursts, 5xx on an edit, the answer's message deleted while it streams, its thread archived,
a missing permission, and the Socket Mode / gateway connection dropped mid-answer.

Expected: the person ends up with the exact answer wherever the platform still lets the bridge
write it; where it does not (archived thread, no permission) the reply gives up after a bounded
number of attempts instead of retrying forever, and the operator log names the platform call
and its error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from bridge.app.compose import compose
from bridge.chatbase.limiter import LocalLimiter
from bridge.core.clock import SystemClock
from bridge.core.rendering.renderer import MAX_FAILURES
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.clock import FakeClock
from tests.fakes.discord_rest import Call, FakeDiscord
from tests.fakes.discord_stack import DiscordStack, discord_stack
from tests.fakes.harness import counter_value
from tests.fakes.slack import event_envelope, mention_event, message_event
from tests.fakes.slack_stack import slack_stack
from tests.reliability.rig import recording
from tests.reliability.slack_rig import SlackRig, slack_rig

TS = "1700000001.000100"
MESSAGES = "/channels/{channel_id}/messages"
MESSAGE = "/channels/{channel_id}/messages/{message_id}"


# --------------------------------------------------------------------------- helpers


class DiscordFaults:
    """Scripted error answers for the fake Discord's REST routes (by method and template)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self._queue: dict[tuple[str, str], deque[tuple[int, int, str]]] = defaultdict(deque)
        self._route: Callable[[Call, dict[str, str]], Awaitable[web.StreamResponse]]
        self._route = fake._route
        fake._route = self._answer  # type: ignore[method-assign]
        self.injected: list[Call] = []

    def fail_next(self, method: str, template: str, status: int, code: int, message: str,
                  *, times: int = 1) -> None:
        self._queue[(method, template)].extend([(status, code, message)] * times)

    async def _answer(self, call: Call, params: dict[str, str]) -> web.StreamResponse:
        queue = self._queue.get((call.method, call.template))
        if queue:
            status, code, message = queue.popleft()
            self.injected.append(call)
            return FakeDiscord._error(status, code, message)
        return await self._route(call, params)


def bot_messages(s: DiscordStack, channel_id: str) -> list[dict[str, Any]]:
    return [m for m in s.discord.messages_in(channel_id)
            if m["author"]["id"] == s.discord.bot_id]


def bot_text(s: DiscordStack, channel_id: str) -> str:
    return "".join(m["content"] for m in bot_messages(s, channel_id))


async def ask_in_thread(s: DiscordStack, gate: Gate, deltas: list[str]) -> str:
    """Start an answer in a new thread and wait until its first text is shown there."""
    s.chatbase.script(Answer(deltas=deltas, gate=gate))
    question = await s.discord.send_message(s.discord.user("ann"), s.channel, "tell me",
                                            mention_bot=True)
    thread_id: str = question["id"]
    gate.release(1)
    await s.discord.wait_for(lambda: bot_messages(s, thread_id))
    return thread_id


@asynccontextmanager
async def discord_on_fake_time(redis_url: str, prefix: str) -> AsyncIterator[DiscordStack]:
    """The Discord stack whose relay service paces and backs off on a fake clock, so a reply
    that keeps failing reaches its give-up point without real waiting."""
    clock = FakeClock(auto=True)
    async with discord_stack(redis_url, prefix, start=False) as s, compose(
        s.settings, redis=s.store.redis, clock=clock, store_clock=SystemClock(),
        metrics=s.metrics, limiter=LocalLimiter(clock=clock),
    ) as bridge:
        s.service = bridge.service
        await s.start_adapter()
        yield s
        await s.adapter.wait_idle()


def threads(rig: SlackRig, ts: str, channel: str = "C0CHAN") -> list[str]:
    return rig.slack.thread_texts(channel, ts)


# --------------------------------------------------------------------------- Slack


async def test_slack_429_burst_across_concurrent_answers(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_rig(redis_url, redis_prefix) as r:
        gates = [Gate() for _ in range(3)]
        texts = [f"Answer {i}: " + "".join(f"w{n} " for n in range(12)) for i in range(3)]
        r.chatbase.script(*(Answer(text=t, deltas=[t[:10], *[t[10:][k:k + 4] for k in
                                                             range(0, len(t) - 10, 4)]],
                                   gate=g) for t, g in zip(texts, gates, strict=True)))
        stamps = [f"170000000{i}.000100" for i in range(3)]
        for i, ts in enumerate(stamps):
            await r.deliver(event_envelope(mention_event(text=f"<@UBOT> q{i}", ts=ts,
                                                         user=f"U0USER{i}")))
            gates[i].release(1)
        await r.slack.wait_for(lambda: len(r.slack.calls_to("chat.startStream", ok=True)) == 3)
        # Slack throttles the workspace's stream writes: the next three answer 429.
        for method in ("chat.appendStream", "chat.stopStream"):
            r.slack.fail_next(method, "ratelimited", times=3, retry_after=0.5)
        with recording() as logs:
            for gate in gates:
                gate.open()
            await r.idle()
        answered = sorted(threads(r, ts)[0] for ts in stamps)
        assert answered == sorted(texts)
        limited = len(r.slack.rate_limited)
        assert limited >= 3
        assert counter_value(r.replicas[0].metrics, "bridge_platform_rate_limited",
                             platform="slack") == limited
        assert logs.find("rate limited", "Slack chat."), logs.lines()


async def test_slack_5xx_on_update_is_retried_and_logged(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_rig(redis_url, redis_prefix) as r:
        gate = Gate()
        r.chatbase.script(Answer(deltas=["Hello", " there,", " friend."], gate=gate))
        await r.deliver(event_envelope(message_event(text="hi", ts=TS)))
        gate.release(1)
        await r.slack.wait_for(lambda: bool(r.slack.calls_to("chat.postMessage", ok=True)))
        r.slack.fail_next("chat.update", "internal_error", status=500)
        with recording() as logs:
            gate.open()
            await r.idle()
        assert r.slack.thread_texts("D0DM", None) == ["Hello there, friend."]
        assert next(c.error for c in r.slack.calls_to("chat.update")) == "internal_error"
        assert logs.find("platform call failed", "Slack chat.update failed: internal_error")


async def test_slack_message_deleted_while_streaming_is_posted_again(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_rig(redis_url, redis_prefix) as r:
        gate = Gate()
        r.chatbase.script(Answer(deltas=["Part one. ", "Part two. ", "Part three."],
                                 gate=gate))
        await r.deliver(event_envelope(mention_event(text="<@UBOT> parts", ts=TS)))
        gate.release(1)
        await r.slack.wait_for(lambda: bool(r.slack.calls_to("chat.startStream", ok=True)))
        (first,) = r.slack.thread("C0CHAN", TS)
        first.deleted = True  # someone deleted the answer while it was being written
        with recording() as logs:
            gate.open()
            await r.idle()
        assert threads(r, TS) == ["Part one. Part two. Part three."]
        (now,) = r.slack.thread("C0CHAN", TS)
        assert now.ts != first.ts and not now.streaming
        assert logs.find("is gone; posting it again", first.ts)


async def test_slack_reply_in_an_archived_thread_or_without_access_gives_up(
    redis_url: str, redis_prefix: str
) -> None:
    writes = ("chat.startStream", "chat.appendStream", "chat.stopStream",
              "chat.postMessage", "chat.update")
    async with slack_rig(redis_url, redis_prefix, clock=FakeClock(auto=True)) as r:
        # Archived while the answer streams: every later write is refused.
        gate = Gate()
        r.chatbase.script(Answer(deltas=["Begun ", "and ", "never finished"], gate=gate))
        await r.deliver(event_envelope(mention_event(text="<@UBOT> one", ts=TS)))
        gate.release(1)
        await r.slack.wait_for(lambda: bool(r.slack.calls_to("chat.startStream", ok=True)))
        for method in writes:
            r.slack.fail_next(method, "is_archived", times=20)
        with recording() as logs:
            gate.open()
            await r.idle()
        assert threads(r, TS) == ["Begun "]  # what was shown stays; nothing is lost silently
        assert logs.find("giving up on this reply", level=logging.ERROR), logs.lines()
        assert logs.find("is_archived")
        assert r.count("failed_render") == 1
        refused = [c for c in r.slack.calls if c.error == "is_archived"]
        assert len(refused) <= MAX_FAILURES + 2  # bounded, not a retry loop

        # Not in the channel at all: nothing can be posted; bounded attempts, logged.
        r.slack._faults.clear()
        for method in writes:
            r.slack.fail_next(method, "not_in_channel", times=20)
        with recording() as logs:
            await r.deliver(event_envelope(mention_event(text="<@UBOT> two", ts=TS[:-1] + "2",
                                                         channel="C0OTHER")))
            await r.idle()
        assert r.slack.thread("C0OTHER", TS[:-1] + "2") == []
        assert logs.find("not_in_channel") and logs.find("giving up on this reply",
                                                          level=logging.ERROR)
        assert len([c for c in r.slack.calls if c.error == "not_in_channel"]) <= MAX_FAILURES


async def test_slack_socket_dropped_mid_answer_reconnects_and_finishes(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix, mode="socket") as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Still ", "here ", "after the drop."], gate=gate))
        await s.slack.send_envelope("events_api", event_envelope(
            mention_event(text="<@UBOT> drop it", ts=TS)))
        gate.release(1)
        await s.slack.wait_for(lambda: bool(s.slack.calls_to("chat.startStream", ok=True)))
        with recording() as logs:
            for ws in list(s.slack._sockets):
                await ws.close()  # Slack closes the socket (a refresh, a deploy)
            await s.slack.wait_for(
                lambda: len(s.slack.calls_to("apps.connections.open")) == 2
                and s.slack.socket_connections == 1)
        assert logs.find("Reconnecting", level=logging.INFO), logs.lines()
        gate.open()
        after = await s.slack.send_envelope("events_api", event_envelope(
            message_event(text="and after?", ts="1700000002.000100")))
        await s.slack.wait_ack(after)
        await s.idle()
        assert s.slack.thread_texts("C0CHAN", TS) == ["Still here after the drop."]
        assert s.slack.thread_texts("D0DM", None) == ["Echo: and after?"]


# --------------------------------------------------------------------------- Discord


async def test_discord_429_burst_mid_answer_is_waited_out(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        thread = await ask_in_thread(s, gate, ["Steady ", "despite ", "the burst."])
        # Another client on the same token uses up the thread's write window.
        async with aiohttp.ClientSession() as session:
            for _ in range(s.discord.rate_limit):
                async with session.post(f"{s.discord.api_base}/channels/{thread}/messages",
                                        json={"content": "noise"},
                                        headers={"Authorization": f"Bot {s.discord.token}"}):
                    pass
        with recording() as logs:
            gate.open()
            await s.adapter.wait_idle()
        mine = [m for m in bot_messages(s, thread) if m["content"] != "noise"]
        assert [m["content"] for m in mine] == ["Steady despite the burst."]
        assert s.discord.rate_limited
        assert logs.find("rate limited", "/channels/"), logs.lines()


async def test_discord_5xx_on_edit_is_retried_and_logged(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        faults = DiscordFaults(s.discord)
        gate = Gate()
        thread = await ask_in_thread(s, gate, ["Edited ", "after ", "a hiccup."])
        faults.fail_next("PATCH", MESSAGE, 503, 0, "Service Unavailable")
        with recording() as logs:
            gate.open()
            await s.adapter.wait_idle()
        assert bot_text(s, thread) == "Edited after a hiccup."
        assert faults.injected
        assert logs.find("platform call failed", "Discord edit failed: HTTP 503")


async def test_discord_message_deleted_while_streaming_is_posted_again(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        thread = await ask_in_thread(s, gate, ["Part one. ", "Part two. ", "Part three."])
        (first,) = bot_messages(s, thread)
        del s.discord.messages[first["id"]]  # a moderator deleted it
        with recording() as logs:
            gate.open()
            await s.adapter.wait_idle()
        (now,) = bot_messages(s, thread)
        assert now["content"] == "Part one. Part two. Part three." and now["id"] != first["id"]
        assert logs.find("is gone; posting it again", first["id"])


async def test_discord_thread_locked_mid_answer_gives_up_bounded(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        thread_id = await ask_in_thread(s, gate, ["Before ", "the lock, ", "after it."])
        thread = s.discord.channel(thread_id)
        assert thread is not None
        thread.locked = True
        with recording() as logs:
            gate.open()
            async with asyncio.timeout(10):
                await s.adapter.wait_idle()
        # Nothing can be written into a locked thread, not even the end of the answer.
        assert bot_text(s, thread_id) == "Before  ▌"
        assert s.adapter.in_flight == 0
        assert logs.find("giving up on this reply", level=logging.ERROR), logs.lines()
        assert logs.find("Thread is locked")
        refused = [c for c in s.discord.message_calls(thread_id) if c.status == 403]
        assert 1 <= len(refused) <= MAX_FAILURES
        assert counter_value(s.metrics, "bridge_answers", platform="discord",
                             outcome="failed_render") == 1


async def test_discord_missing_permission_gives_up_bounded_and_says_why(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_on_fake_time(redis_url, redis_prefix) as s:
        faults = DiscordFaults(s.discord)
        faults.fail_next("POST", MESSAGES, 403, 50013, "Missing Permissions", times=50)
        with recording() as logs:
            await s.discord.send_message(s.discord.user("ann"), s.channel, "anyone?",
                                         mention_bot=True)
            await s.discord.wait_for(lambda: faults.injected)
            async with asyncio.timeout(10):
                await s.adapter.wait_idle()
        assert len(faults.injected) == MAX_FAILURES
        assert logs.find("Discord post failed: HTTP 403, code 50013 (Missing Permissions)")
        assert logs.find("giving up on this reply", level=logging.ERROR)


async def test_discord_gateway_dropped_mid_answer_reconnects_and_finishes(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        thread = await ask_in_thread(s, gate, ["Across ", "the ", "reconnect."])
        client = s.adapter.client
        assert client is not None

        async def identify_at_once(shard_id: int | None, *, initial: bool = False) -> None:
            """discord.py waits 5 s before identifying again (Discord's identify limit);
            the fake has no such limit, and the test need not wait."""

        client.before_identify_hook = identify_at_once  # type: ignore[method-assign]
        # The fake has sent READY once it counts the second IDENTIFY and a live session; that
        # discord.py has read it is known only on its side: wait for its shard_connect too.
        connected = asyncio.ensure_future(client.wait_for(
            "shard_connect", check=lambda shard_id: shard_id == 0, timeout=10.0))
        with recording() as logs:
            for session in s.discord.gateway.live_sessions():
                await session.ws.close(code=4000, message=b"Unknown error")
            await s.discord.wait_for(lambda: len(s.discord.gateway.identifies) == 2
                                     and s.discord.gateway.live_sessions())
            await connected
        assert logs.find("Shard ID 0 session has been invalidated", level=logging.INFO)
        assert logs.find("Shard ID 0 has connected to Gateway", level=logging.INFO)
        gate.open()
        await s.discord.wait_for(lambda: bot_text(s, thread) == "Across the reconnect.")
        # Messages sent after the reconnect are answered too.
        dm = s.discord.add_dm("x")
        await s.discord.send_message(s.discord.user("bob"), dm, "still there?")
        await s.discord.wait_for(lambda: bot_text(s, dm.id) == "Echo: still there?")
        assert s.adapter.is_ready()
