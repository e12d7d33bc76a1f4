"""BRIDGE_ROUTES on Slack, end to end: signed requests → Bolt → RelayService (real Redis) →
the fake Chatbase serving several agents, each with its own API key → the fake Slack.

The default agent is the fake's own (``agent-test``, CHATBASE_API_KEY); ``agent-b`` and
``agent-c`` have keys of their own, named by ``api_key_env`` in the routes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.slack.adapter import EVENTS_PATH, SlackAdapter
from adapters.slack.sink import SlackPacing
from bridge.app.compose import compose
from bridge.app.settings import Settings
from bridge.core.clock import SystemClock
from tests.fakes import secrets
from tests.fakes.chatbase import Answer, FakeChatbase, RecordedRequest
from tests.fakes.slack import FakeSlack, Tiers, event_envelope, mention_event, message_event
from tests.fakes.slack import reaction_event as slack_reaction
from tests.fakes.slack_stack import JITTER, SCALE, SlackStack, slack_stack

DEFAULT = "agent-test"
AGENT_B, KEY_B, KEY_B_ENV = "agent-b", "sk-routing-agent-b-key", "CHATBASE_KEY_B"
AGENT_C, KEY_C, KEY_C_ENV = "agent-c", "sk-routing-agent-c-key", "CHATBASE_KEY_C"
ROUTED, OTHER, ELSEWHERE = "C0ROUTED", "C0CHAN", "C0ELSE"
TEAM = "T0TEAM"
TS_ROUTED = "1700000001.000100"
TS_OTHER = "1700000002.000100"


def routes(table: dict[str, Any]) -> str:
    return json.dumps(table)


def b_route() -> dict[str, str]:
    return {"agent": AGENT_B, "api_key_env": KEY_B_ENV}


@pytest.fixture(autouse=True)
def agent_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the routes name; Settings reads them from the environment."""
    monkeypatch.setenv(KEY_B_ENV, KEY_B)
    monkeypatch.setenv(KEY_C_ENV, KEY_C)
    secrets.register(KEY_B, KEY_C)


def serve_agents(fake: FakeChatbase) -> None:
    fake.add_agent(AGENT_B, api_key=KEY_B)
    fake.add_agent(AGENT_C, api_key=KEY_C)


async def mention(stack: SlackStack, channel: str, ts: str, text: str = "question") -> None:
    delivered = await stack.deliver(event_envelope(mention_event(
        text=f"<@UBOT> {text}", ts=ts, channel=channel)))
    assert delivered.status == 200


async def follow_up(stack: SlackStack, channel: str, thread_ts: str, ts: str,
                    text: str) -> None:
    """A reply in the bot's thread, without a mention."""
    delivered = await stack.deliver(event_envelope(message_event(
        text=text, ts=ts, channel=channel, channel_type="channel", thread_ts=thread_ts)))
    assert delivered.status == 200


async def react(stack: SlackStack, channel: str, reply_ts: str, name: str) -> None:
    await stack.deliver(event_envelope(slack_reaction(reaction=name, channel=channel,
                                                      ts=reply_ts)))
    await stack.idle()


def reply_ts(stack: SlackStack, channel: str, thread_ts: str) -> str:
    [reply] = stack.slack.thread(channel, thread_ts)
    return reply.ts


def only(calls: list[RecordedRequest]) -> RecordedRequest:
    [call] = calls
    return call


# --------------------------------------------------------------------------- routing


async def test_two_channels_reach_two_agents_and_threads_stay_with_theirs(
    redis_url: str, redis_prefix: str
) -> None:
    table = routes({f"slack:{TEAM}/{ROUTED}": b_route()})
    async with slack_stack(redis_url, redis_prefix, BRIDGE_ROUTES=table) as stack:
        fake = stack.chatbase
        serve_agents(fake)
        fake.answer_text_for = lambda message: f"Echo: {message}"
        await mention(stack, ROUTED, TS_ROUTED, "routed question")
        await mention(stack, OTHER, TS_OTHER, "default question")
        await stack.idle()

        routed = only(fake.calls("chat", agent=AGENT_B))
        assert routed.path == f"/agents/{AGENT_B}/chat"
        assert routed.api_key == KEY_B and routed.body["message"] == "routed question"
        default = only(fake.calls("chat", agent=DEFAULT))
        assert default.api_key == fake.api_key and default.body["message"] == "default question"
        assert stack.slack.thread_texts(ROUTED, TS_ROUTED) == ["Echo: routed question"]
        assert stack.slack.thread_texts(OTHER, TS_OTHER) == ["Echo: default question"]
        owners = {c.id: c.agent_id for c in fake.conversations.values()}
        assert len(owners) == 2 and set(owners.values()) == {AGENT_B, DEFAULT}
        by_agent = {agent: cid for cid, agent in owners.items()}

        # Follow-ups in each thread continue their own agent's conversation.
        await follow_up(stack, ROUTED, TS_ROUTED, "1700000003.000100", "routed again")
        await follow_up(stack, OTHER, TS_OTHER, "1700000004.000100", "default again")
        await stack.idle()
        b_calls = fake.calls("chat", agent=AGENT_B)
        d_calls = fake.calls("chat", agent=DEFAULT)
        assert [c.body["message"] for c in b_calls] == ["routed question", "routed again"]
        assert [c.body["message"] for c in d_calls] == ["default question", "default again"]
        assert b_calls[1].body["conversationId"] == by_agent[AGENT_B]
        assert d_calls[1].body["conversationId"] == by_agent[DEFAULT]
        assert {c.api_key for c in b_calls} == {KEY_B}
        assert {c.api_key for c in d_calls} == {fake.api_key}
        assert len(fake.conversations) == 2
        assert len(fake.chat_calls) == 4
        assert stack.slack.thread_texts(ROUTED, TS_ROUTED)[-1] == "Echo: routed again"
        assert stack.slack.thread_texts(OTHER, TS_OTHER)[-1] == "Echo: default again"


async def test_the_most_specific_place_wins_org_team_channel_and_dm(
    redis_url: str, redis_prefix: str
) -> None:
    table = routes({"slack:E0ORG": b_route(),
                    f"slack:{TEAM}/{ROUTED}": {"agent": AGENT_C, "api_key_env": KEY_C_ENV},
                    f"slack:{TEAM}/dm": {"agent": AGENT_C, "api_key_env": KEY_C_ENV}})
    async with slack_stack(redis_url, redis_prefix, BRIDGE_ROUTES=table) as stack:
        fake = stack.chatbase
        serve_agents(fake)
        asked = [
            # (the envelope's org, channel, ts, question)
            ("E0ORG", OTHER, "1700000001.000100", "org channel"),
            ("E0ORG", ROUTED, "1700000002.000100", "routed channel"),
            (None, OTHER, "1700000003.000100", "no org"),
        ]
        for org, channel, ts, text in asked:
            await stack.deliver(event_envelope(
                mention_event(text=f"<@UBOT> {text}", ts=ts, channel=channel),
                enterprise_id=org))
        await stack.deliver(event_envelope(message_event(text="in a dm",
                                                         ts="1700000004.000100"),
                                           enterprise_id="E0ORG"))
        await stack.idle()
        by_question = {c.body["message"]: (c.agent_id, c.api_key) for c in fake.chat_calls}
        assert by_question == {
            "org channel": (AGENT_B, KEY_B),
            "routed channel": (AGENT_C, KEY_C),
            "no org": (DEFAULT, fake.api_key),
            "in a dm": (AGENT_C, KEY_C),
        }


async def test_feedback_and_regenerate_go_to_the_agent_that_answered(
    redis_url: str, redis_prefix: str
) -> None:
    table = routes({f"slack:{TEAM}/{ROUTED}": b_route()})
    async with slack_stack(redis_url, redis_prefix, BRIDGE_ROUTES=table) as stack:
        fake = stack.chatbase
        serve_agents(fake)
        fake.script(Answer(text="First try."))
        await mention(stack, ROUTED, TS_ROUTED)
        await stack.idle()
        reply = reply_ts(stack, ROUTED, TS_ROUTED)
        [conversation] = fake.conversations.values()
        assert conversation.agent_id == AGENT_B
        first = [m for m in conversation.messages if m.role == "assistant"][-1]

        await react(stack, ROUTED, reply, "+1")
        feedback = only(fake.calls("feedback"))
        assert feedback.agent_id == AGENT_B and feedback.api_key == KEY_B
        assert feedback.path == (f"/agents/{AGENT_B}/conversations/{conversation.id}"
                                 f"/messages/{first.id}/feedback")
        assert [(c.message_id, c.feedback) for c in fake.feedback_calls] == [
            (first.id, "positive")]

        fake.script(Answer(text="Second, better try."))
        await react(stack, ROUTED, reply, "arrows_counterclockwise")
        retry = only(fake.retry_calls)
        assert retry.path == f"/agents/{AGENT_B}/conversations/{conversation.id}/retry"
        assert retry.api_key == KEY_B and retry.body["messageId"] == first.id
        assert stack.slack.thread_texts(ROUTED, TS_ROUTED) == ["Second, better try."]
        assert fake.calls("chat", agent=DEFAULT) == []
        assert fake.calls("retry", agent=DEFAULT) == []


async def test_rerouting_a_channel_starts_a_new_conversation_with_the_new_agent(
    redis_url: str, redis_prefix: str
) -> None:
    before = routes({f"slack:{TEAM}/{ROUTED}": b_route()})
    async with slack_stack(redis_url, redis_prefix, BRIDGE_ROUTES=before) as first:
        serve_agents(first.chatbase)
        # An answer elsewhere first: each FakeSlack numbers its messages from one in the
        # second it starts, so the restarted one's first message cannot reuse this ts.
        await mention(first, OTHER, TS_OTHER)
        await first.idle()
        first.chatbase.script(Answer(text="Agent B speaking."))
        await mention(first, ROUTED, TS_ROUTED, "who are you?")
        await first.idle()
        old_reply = reply_ts(first, ROUTED, TS_ROUTED)
        [old] = [c for c in first.chatbase.conversations.values() if c.agent_id == AGENT_B]
        assert old.agent_id == AGENT_B
        old_answer = [m for m in old.messages if m.role == "assistant"][-1]
        kept = dict(first.chatbase.conversations)

    # The operator routes the channel to agent C and agent B elsewhere; the bridge restarts
    # on the same Redis (and Chatbase still has its conversations).
    after = routes({f"slack:{TEAM}/{ROUTED}": {"agent": AGENT_C, "api_key_env": KEY_C_ENV},
                    f"slack:{TEAM}/{ELSEWHERE}": b_route()})
    async with slack_stack(redis_url, redis_prefix, BRIDGE_ROUTES=after) as second:
        fake = second.chatbase
        serve_agents(fake)
        fake.conversations.update(kept)
        fake.script(Answer(text="Agent C here."))
        await follow_up(second, ROUTED, TS_ROUTED, "1700000005.000100", "and now?")
        await second.idle()
        new_chat = only(fake.chat_calls)
        assert new_chat.path == f"/agents/{AGENT_C}/chat" and new_chat.api_key == KEY_C
        assert "conversationId" not in new_chat.body
        assert new_chat.body["message"] == "and now?"
        [new] = [c for c in fake.conversations.values() if c.agent_id == AGENT_C]
        assert second.slack.thread_texts(ROUTED, TS_ROUTED) == ["Agent C here."]

        # 👍 on the answer agent B wrote before the change still goes to agent B.
        await react(second, ROUTED, old_reply, "+1")
        feedback = only(fake.calls("feedback"))
        assert feedback.path == (f"/agents/{AGENT_B}/conversations/{old.id}"
                                 f"/messages/{old_answer.id}/feedback")
        assert feedback.api_key == KEY_B
        assert [(c.conversation_id, c.feedback) for c in fake.feedback_calls] == [
            (old.id, "positive")]

        # And the thread goes on with agent C's conversation.
        await follow_up(second, ROUTED, TS_ROUTED, "1700000006.000100", "go on")
        await second.idle()
        latest = fake.chat_calls[-1]
        assert latest.agent_id == AGENT_C and latest.body["conversationId"] == new.id
        assert fake.calls("chat", agent=AGENT_B) == []


async def test_an_unrouted_place_without_a_fallback_is_ignored_and_logged_once(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    table = routes({f"slack:{TEAM}/{ROUTED}": DEFAULT})
    caplog.set_level(logging.WARNING)
    async with slack_stack(redis_url, redis_prefix, BRIDGE_ROUTES=table,
                           CHATBASE_AGENT_ID=None) as stack:
        assert stack.settings.chatbase_agent_id is None
        await mention(stack, OTHER, TS_OTHER, "anyone there?")
        await mention(stack, OTHER, "1700000003.000100", "hello?")
        await stack.idle()
        assert stack.chatbase.requests == []
        assert stack.slack.thread(OTHER, TS_OTHER) == []
        assert stack.slack.thread(OTHER, "1700000003.000100") == []
        written = [c.method for c in stack.slack.calls if c.method != "auth.test"]
        assert written == []
        # The routed channel is answered, by the agent its route names.
        stack.chatbase.script(Answer(text="Routed answer."))
        await mention(stack, ROUTED, TS_ROUTED)
        await stack.idle()
        assert only(stack.chatbase.chat_calls).path == f"/agents/{DEFAULT}/chat"
        assert stack.slack.thread_texts(ROUTED, TS_ROUTED) == ["Routed answer."]
    unrouted = [r for r in caplog.records
                if r.levelno == logging.WARNING and "no agent answers" in r.getMessage()]
    assert len(unrouted) == 1, [r.getMessage() for r in unrouted]
    assert f"slack:{TEAM}/{OTHER}" in unrouted[0].getMessage()


# --------------------------------------------------------------------------- rate limits


@asynccontextmanager
async def budgeted_stack(redis_url: str, prefix: str, **env: Any) -> AsyncIterator[SlackStack]:
    """The Slack stack with the product's own Chatbase budgets (``compose`` without a
    ``limiter``: one Redis window per API key), which ``slack_stack`` replaces with a roomy
    one. Answers still waiting for a budget at the end are cut off at once."""
    async with AsyncExitStack() as stack:
        slack = await stack.enter_async_context(
            FakeSlack(tiers=Tiers().scaled(SCALE, jitter=JITTER)))
        chatbase = await stack.enter_async_context(FakeChatbase())
        values: dict[str, Any] = {
            "CHATBASE_API_KEY": chatbase.api_key, "CHATBASE_AGENT_ID": chatbase.agent_id,
            "CHATBASE_API_BASE": chatbase.base_url, "REDIS_URL": redis_url,
            "BRIDGE_REDIS_PREFIX": prefix, "BRIDGE_USER_QUOTA": "0",
            "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url,
            "SLACK_SIGNING_SECRET": slack.signing_secret, **env,
        }
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        secrets.register_settings(settings)
        bridge = await stack.enter_async_context(compose(settings, clock=SystemClock()))
        http_app = web.Application()
        adapter = SlackAdapter(
            settings=settings, relay=bridge.service, metrics=bridge.metrics,
            http_app=http_app, session=bridge.session, pacing=SlackPacing().scaled(SCALE),
            history=bridge.history,
        )
        server = TestServer(http_app, host="127.0.0.1", port=0)
        await server.start_server()
        stack.push_async_callback(server.close)
        slack.events_url = str(server.make_url(EVENTS_PATH))

        async def shut_down() -> None:
            await adapter.stop_intake()
            await bridge.service.drain(0.0)
            await adapter.close()

        stack.push_async_callback(shut_down)
        await adapter.start()
        yield SlackStack(slack=slack, chatbase=chatbase, settings=settings,
                         service=bridge.service, store=bridge.store, metrics=bridge.metrics,
                         adapter=adapter, session=bridge.session, server=server)


async def test_each_api_key_has_its_own_request_budget(
    redis_url: str, redis_prefix: str
) -> None:
    table = routes({f"slack:{TEAM}/{ROUTED}": b_route()})
    async with budgeted_stack(redis_url, redis_prefix, BRIDGE_ROUTES=table,
                              BRIDGE_CHATBASE_RATE_LIMIT="1",
                              BRIDGE_CHATBASE_RATE_WINDOW="3600") as stack:
        fake = stack.chatbase
        serve_agents(fake)
        redis, keys = stack.store.redis, stack.store.keys
        default_budget, b_budget = keys.limit("chatbase"), keys.limit(f"chatbase:{KEY_B_ENV}")

        # The default key spends its one request of the hour...
        await mention(stack, OTHER, TS_OTHER, "first")
        await stack.idle()
        assert len(fake.calls("chat", agent=DEFAULT)) == 1
        assert await redis.zcard(default_budget) == 1
        # ...so the next question on that key waits for the window (an hour).
        await mention(stack, OTHER, "1700000003.000100", "second, over budget")
        # Agent B's key has a budget of its own: its first question goes straight through.
        fake.script(Answer(text="B answers at once."))
        started = time.monotonic()
        await mention(stack, ROUTED, TS_ROUTED, "to agent b")
        await stack.slack.wait_for(
            lambda: stack.slack.thread_texts(ROUTED, TS_ROUTED) == ["B answers at once."])
        assert time.monotonic() - started < 30  # far from the hour a shared budget means
        b_chat = only(fake.calls("chat", agent=AGENT_B))
        assert b_chat.api_key == KEY_B and b_chat.body["message"] == "to agent b"
        assert await redis.zcard(b_budget) == 1
        # The default key's second question is still held back by its own budget.
        assert [c.body["message"] for c in fake.calls("chat", agent=DEFAULT)] == ["first"]
        assert await redis.zcard(default_budget) == 1
        assert [r.endpoint for r in fake.requests] == ["chat", "chat"]
