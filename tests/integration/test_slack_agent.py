"""Slack's agent experience end to end: agent sessions, the stop button, suggested prompts and
sources, through signed requests (and Socket Mode) → Bolt → RelayService (real Redis, fake
Chatbase) → SlackSink → fake Slack Web API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.core import notices
from bridge.core.ports import PROGRESS_MARK
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.slack import event_envelope, mention_event, message_event
from tests.fakes.slack_stack import SlackStack, slack_stack

TS = "1700000001.000100"
STOPPED = notices.STOPPED


@pytest.fixture
async def stack(redis_url: str, redis_prefix: str) -> AsyncIterator[SlackStack]:
    async with slack_stack(redis_url, redis_prefix) as built:
        yield built


async def ask(stack: SlackStack, text: str = "<@UBOT> tell me", ts: str = TS) -> None:
    delivered = await stack.deliver(event_envelope(mention_event(text=text, ts=ts)))
    assert delivered.status == 200


async def follow_up(stack: SlackStack, text: str, ts: str = "1700000009.000100") -> None:
    await stack.deliver(event_envelope(message_event(
        text=text, ts=ts, channel="C0CHAN", channel_type="channel", thread_ts=TS)))


def writes_with(stack: SlackStack, needle: str) -> int:
    """How many writes (posts, updates, appends) ever carried ``needle``."""
    return sum(1 for m in stack.slack.messages.values() for raw in m.history if needle in raw)


def assert_stopped_cleanly(stack: SlackStack, shown: str) -> None:
    texts = stack.slack.thread_texts("C0CHAN", TS)
    assert "".join(texts) == f"{shown}\n\n{STOPPED}"
    assert writes_with(stack, "(Stopped.)") == 1  # the final text, written once
    assert not any(PROGRESS_MARK.strip() in t for t in texts)
    assert not any(m.streaming for m in stack.slack.messages.values())
    session = stack.slack.session("C0CHAN", TS)
    assert session.history[0] == "processing" and session.status == "active"
    assert stack.slack.rate_limited == []


async def assert_the_conversation_goes_on(stack: SlackStack) -> None:
    stack.chatbase.script(Answer(text="Sure, continuing."))
    await follow_up(stack, "go on please")
    await stack.idle()
    chats = stack.chatbase.chat_calls
    assert len(chats) == 2 and chats[1].body["message"] == "go on please"
    [conversation] = stack.chatbase.conversations
    assert chats[1].body["conversationId"] == conversation
    assert stack.slack.thread_texts("C0CHAN", TS)[-1] == "Sure, continuing."


# ---------------------------------------------------------------------- sessions


async def test_a_failed_answer_leaves_its_session_active(stack: SlackStack) -> None:
    stack.chatbase.fail_next(500, "INTERNAL_SERVER_ERROR", times=5)
    await ask(stack)
    await stack.idle()
    texts = stack.slack.thread_texts("C0CHAN", TS)
    assert len(texts) == 1 and texts[0].strip()  # a notice, not an answer
    assert stack.slack.session("C0CHAN", TS).history == ["processing", "active"]


async def test_an_app_that_is_not_an_agent_keeps_the_thinking_status(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix, fake={"agent": False}) as stack:
        for n in range(3):
            await ask(stack, ts=f"170000000{n}.000100")
            await stack.idle()
        assert len(stack.slack.calls_to("agents.sessions.setStatus")) == 1
        statuses = [c.args["status"] for c in
                    stack.slack.calls_to("assistant.threads.setStatus")]
        assert statuses == ["is thinking…", ""] * 3
        assert all(stack.slack.thread_texts("C0CHAN", f"170000000{n}.000100")
                   for n in range(3))
        assert stack.slack.sessions == {}


# ---------------------------------------------------------------------- stop


async def start_slow_answer(stack: SlackStack, shown: int) -> tuple[Gate, list[str]]:
    gate = Gate()
    deltas = ["Refunds ", "take ", "five ", "working ", "days."]
    stack.chatbase.script(Answer(deltas=deltas, gate=gate))
    await ask(stack)
    gate.release(shown)
    expected = "".join(deltas[:shown])
    await stack.slack.wait_for(lambda: stack.slack.thread_texts("C0CHAN", TS) == [expected])
    return gate, deltas


async def test_the_stop_button_stops_the_answer_and_keeps_what_was_shown(
    stack: SlackStack,
) -> None:
    gate, deltas = await start_slow_answer(stack, shown=2)
    [stream] = stack.slack.thread("C0CHAN", TS)
    stopped = await stack.slack.press_stop("C0CHAN", TS)
    assert stopped == [stream.ts]
    await stack.chatbase.wait_for(lambda: stack.chatbase.streams_aborted == 1)
    await stack.idle()
    assert gate.sent == 2  # nothing more was asked of Chatbase
    assert_stopped_cleanly(stack, "".join(deltas[:2]))
    await assert_the_conversation_goes_on(stack)


async def test_a_stream_the_reader_stopped_stops_the_answer_too(stack: SlackStack) -> None:
    # Slack stops the stream but the event does not arrive (say, not subscribed yet): the
    # next append hears stopped_by_user, and that stops the answer the same way.
    gate, deltas = await start_slow_answer(stack, shown=2)
    await stack.slack.press_stop("C0CHAN", TS, deliver=False)
    gate.release(1)
    await stack.chatbase.wait_for(lambda: stack.chatbase.streams_aborted == 1)
    await stack.idle()
    assert [c.error for c in stack.slack.calls_to("chat.appendStream")][-1] == "stopped_by_user"
    assert_stopped_cleanly(stack, "".join(deltas[:3]))
    await assert_the_conversation_goes_on(stack)


async def test_the_stop_button_works_over_socket_mode(redis_url: str, redis_prefix: str) -> None:
    async with slack_stack(redis_url, redis_prefix, mode="socket") as stack:
        await stack.slack.wait_for(lambda: stack.slack.socket_connections == 1)
        gate = Gate()
        stack.chatbase.script(Answer(deltas=["One ", "two ", "three."], gate=gate))
        response = await stack.dispatch_socket(event_envelope(mention_event(
            text="<@UBOT> count", ts=TS)))
        assert response.status == 200
        gate.release(1)
        await stack.slack.wait_for(lambda: stack.slack.thread_texts("C0CHAN", TS) == ["One "])
        await stack.slack.press_stop("C0CHAN", TS)
        await stack.chatbase.wait_for(lambda: stack.chatbase.streams_aborted == 1)
        await stack.idle()
        assert_stopped_cleanly(stack, "One ")


async def test_a_stopped_posted_answer_loses_its_progress_mark(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix,
                           BRIDGE_SLACK_NATIVE_STREAMING="false") as stack:
        gate = Gate()
        stack.chatbase.script(Answer(deltas=["Half ", "of it."], gate=gate))
        await ask(stack)
        gate.release(1)
        await stack.slack.wait_for(
            lambda: stack.slack.thread_texts("C0CHAN", TS) == ["Half " + PROGRESS_MARK])
        assert await stack.slack.press_stop("C0CHAN", TS) == []  # no stream to stop
        await stack.chatbase.wait_for(lambda: stack.chatbase.streams_aborted == 1)
        await stack.idle()
        assert_stopped_cleanly(stack, "Half ")


async def test_a_stop_for_a_finished_answer_only_settles_the_session(stack: SlackStack) -> None:
    stack.chatbase.script(Answer(text="All done."))
    await ask(stack)
    await stack.idle()
    await stack.slack.press_stop("C0CHAN", TS)
    await stack.idle()
    assert stack.slack.thread_texts("C0CHAN", TS) == ["All done."]
    assert stack.slack.session("C0CHAN", TS).history[-2:] == ["active", "active"]
    assert stack.chatbase.streams_aborted == 0


# ---------------------------------------------------------------------- prompts


async def test_the_messages_tab_gets_the_suggested_prompts(
    redis_url: str, redis_prefix: str
) -> None:
    prompts = '[{"title": "Refunds", "message": "How do refunds work?"}]'
    async with slack_stack(redis_url, redis_prefix,
                           BRIDGE_SLACK_SUGGESTED_PROMPTS=prompts) as stack:
        for tab in ("messages", "home"):
            await stack.slack.deliver_event({"type": "app_home_opened", "user": "U0ASKER",
                                             "channel": "D0DM", "tab": tab,
                                             "event_ts": "1700000001.000001"})
        await stack.idle()
        [call] = stack.slack.prompts_set
        assert call["channel_id"] == "D0DM"
        assert call["prompts"] == [{"title": "Refunds", "message": "How do refunds work?"}]
        assert stack.chatbase.chat_calls == []


async def test_no_suggested_prompts_when_the_setting_is_empty(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix,
                           BRIDGE_SLACK_SUGGESTED_PROMPTS="[]") as stack:
        await stack.slack.deliver_event({"type": "app_home_opened", "user": "U0ASKER",
                                         "channel": "D0DM", "tab": "messages",
                                         "event_ts": "1700000001.000001"})
        await stack.idle()
        assert stack.slack.calls_to("assistant.threads.setSuggestedPrompts") == []


# ---------------------------------------------------------------------- sources


async def test_sources_are_listed_once_each_in_order_and_cannot_ping(stack: SlackStack) -> None:
    stack.chatbase.script(Answer(deltas=["Refunds take ", "five days."], sources=[
        {"type": "source-url", "sourceId": "s1", "url": "https://example.com/refunds",
         "title": "<!channel> @here Refund policy"},
        {"type": "source-url", "sourceId": "s2", "url": "https://example.com/faq",
         "title": "FAQ"},
        {"type": "source-url", "sourceId": "s1", "url": "https://example.com/refunds",
         "title": "<!channel> @here Refund policy"},
    ]))
    await ask(stack)
    await stack.idle()
    [text] = stack.slack.thread_texts("C0CHAN", TS)
    assert text.startswith("Refunds take five days.\n\n**Sources**\n")
    assert text.count("https://example.com/refunds") == 1
    assert text.count("https://example.com/faq") == 1
    assert text.index("https://example.com/refunds") < text.index("https://example.com/faq")
    assert "Refund policy" in text and "FAQ" in text
    assert stack.slack.live_tokens() == []
    assert "@here" not in text  # the label's "@" cannot start a mention either
