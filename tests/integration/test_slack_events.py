"""Slack over the HTTP Events API, end to end: signed requests → Bolt → RelayService (real
Redis, fake Chatbase) → SlackSink → fake Slack Web API."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest

from tests.fakes.chatbase import Answer, Gate
from tests.fakes.harness import counter_value
from tests.fakes.slack import event_envelope, mention_event, message_event
from tests.fakes.slack_stack import SlackStack, slack_stack

TS = "1700000001.000100"


@pytest.fixture
async def stack(redis_url: str, redis_prefix: str) -> AsyncIterator[SlackStack]:
    async with slack_stack(redis_url, redis_prefix) as built:
        yield built


def methods(stack: SlackStack, *names: str) -> list[str]:
    return [c.method for c in stack.slack.calls if not names or c.method in names]


async def test_mention_is_acknowledged_first_then_streamed_in_its_thread(
    stack: SlackStack,
) -> None:
    gate = Gate()
    stack.chatbase.script(Answer(deltas=["Refunds ", "take **five** days.", "\n\n- ask us"],
                                 gate=gate))
    body = event_envelope(mention_event(text="<@UBOT> how long do refunds take?", ts=TS))
    delivered = await stack.deliver(body)
    # Acknowledged while the answer is still held back by the gate: the work runs after.
    assert delivered.status == 200 and delivered.body == ""
    assert delivered.seconds < 3.0  # Slack's acknowledgement deadline
    assert gate.sent == 0
    gate.release(1)
    await stack.slack.wait_for(lambda: bool(stack.slack.calls_to("chat.startStream")))
    gate.release(1)
    await stack.slack.wait_for(lambda: bool(stack.slack.calls_to("chat.appendStream")))
    gate.open()
    await stack.idle()
    assert stack.chatbase.chat_calls[0].body["message"] == "how long do refunds take?"
    assert stack.slack.thread_texts("C0CHAN", TS) == [
        "Refunds take **five** days.\n\n- ask us"
    ]
    sequence = methods(stack, "agents.sessions.setStatus", "chat.startStream",
                       "chat.appendStream", "chat.stopStream", "chat.postMessage")
    assert sequence[0] == "agents.sessions.setStatus"
    assert sequence[-1] == "agents.sessions.setStatus"
    streamed = [m for m in sequence if m.startswith("chat.")]
    assert streamed[0] == "chat.startStream" and streamed[-1] == "chat.stopStream"
    assert "chat.postMessage" not in streamed
    # The answer ran in an agent session titled with the question, left active at the end.
    session = stack.slack.session("C0CHAN", TS)
    assert session.history[0] == "processing" and session.status == "active"
    assert session.title == "how long do refunds take?" and session.initiator == "U0ASKER"
    assert stack.slack.calls_to("assistant.threads.setStatus") == []
    assert stack.slack.rate_limited == []


async def test_bad_or_stale_signatures_are_refused_and_nothing_is_answered(
    stack: SlackStack,
) -> None:
    body = event_envelope(mention_event(text="<@UBOT> hi", ts=TS))
    wrong = await stack.deliver(body, secret="not-the-secret")
    stale = await stack.deliver(body, timestamp=int(time.time()) - 6 * 60)
    unsigned = await stack.deliver(body, sign=False)
    assert (wrong.status, stale.status, unsigned.status) == (401, 401, 401)
    await stack.idle()
    assert stack.chatbase.chat_calls == []
    assert methods(stack) == ["auth.test"]


async def test_url_verification_is_answered(stack: SlackStack) -> None:
    answer = await stack.deliver({"token": "x", "challenge": "abc123",
                                  "type": "url_verification"})
    assert answer.status == 200 and "abc123" in answer.body


async def test_a_redelivered_event_is_answered_once(stack: SlackStack) -> None:
    body = event_envelope(mention_event(text="<@UBOT> once please", ts=TS))
    first = await stack.deliver(body)
    again = await stack.deliver(body, retry_num=1)
    third = await stack.deliver(body, retry_num=2)
    assert (first.status, again.status, third.status) == (200, 200, 200)
    await stack.idle()
    assert len(stack.chatbase.chat_calls) == 1
    assert len(stack.slack.thread(channel="C0CHAN", thread_ts=TS)) == 1


async def test_the_duplicate_message_event_of_a_mention_is_not_answered(
    stack: SlackStack,
) -> None:
    mention = event_envelope(mention_event(text="<@UBOT> hello", ts=TS))
    duplicate = event_envelope(message_event(text="<@UBOT> hello", ts=TS, channel="C0CHAN",
                                             channel_type="channel"))
    await stack.deliver(mention)
    await stack.deliver(duplicate)
    await stack.idle()
    assert len(stack.chatbase.chat_calls) == 1


async def test_top_level_dm_is_posted_and_updated(stack: SlackStack) -> None:
    gate = Gate()
    stack.chatbase.script(Answer(deltas=["Hello", " there,", " friend."], gate=gate))
    await stack.deliver(event_envelope(message_event(text="hi", ts=TS)))
    gate.release(1)
    await stack.slack.wait_for(lambda: bool(stack.slack.calls_to("chat.postMessage")))
    gate.open()
    await stack.idle()
    assert stack.slack.thread_texts("D0DM", None) == ["Hello there, friend."]
    assert not any(m.startswith("chat.") and "Stream" in m for m in methods(stack))
    first = stack.slack.calls_to("chat.postMessage")[0].args
    assert "thread_ts" not in first and first["blocks"][0]["type"] == "markdown"
    assert first["blocks"][0]["text"].startswith("Hello")
    assert methods(stack, "chat.update")  # the answer grew in place
    # A top-level DM has no thread to show a status in.
    assert stack.slack.calls_to("assistant.threads.setStatus") == []


async def test_an_expired_stream_is_finished_with_update(stack: SlackStack) -> None:
    gate = Gate()
    stack.chatbase.script(Answer(deltas=["Step one.", " Step two.", " Step three."],
                                 gate=gate))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> steps?", ts=TS)))
    gate.release(1)
    await stack.slack.wait_for(lambda: bool(stack.slack.calls_to("chat.startStream", ok=True)))
    ts = stack.slack.calls_to("chat.startStream", ok=True)[0]
    message = stack.slack.thread("C0CHAN", TS)[0]
    assert ts.args["thread_ts"] == TS
    stack.slack.expire_stream(message.ts)  # five minutes pass, as far as Slack is concerned
    gate.open()
    await stack.idle()
    assert stack.slack.thread_texts("C0CHAN", TS) == ["Step one. Step two. Step three."]
    assert stack.slack.calls_to("chat.update", ok=True)


async def test_an_answer_over_the_limits_continues_in_the_thread(stack: SlackStack) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 40 for i in range(20)]
    text = "\n\n".join(paragraphs)  # about 22,000 characters
    stack.chatbase.script(Answer(text=text))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> tell me all", ts=TS)))
    await stack.idle()
    parts = stack.slack.thread_texts("C0CHAN", TS)
    assert len(parts) >= 3
    assert all(len(p) <= 8_000 for p in parts)
    assert "".join(parts) == text
    assert stack.slack.rate_limited == []


async def test_a_long_streamed_answer_continues_in_new_streams(stack: SlackStack) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 40 for i in range(20)]
    text = "\n\n".join(paragraphs)
    deltas = [p + "\n\n" for p in paragraphs[:-1]] + [paragraphs[-1]]
    gate = Gate()
    stack.chatbase.script(Answer(text=text, deltas=deltas, gate=gate))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> tell me all", ts=TS)))
    slack = stack.slack
    # Paragraph by paragraph, each shown before the next arrives: parts fill up while
    # streaming and the renderer moves on to a new message mid-answer.
    for shown in range(1, len(deltas)):
        gate.release(1)
        await slack.wait_for(
            lambda n=shown: "".join(slack.thread_texts("C0CHAN", TS)).count("Paragraph") >= n
        )
    gate.open()
    await stack.idle()
    parts = slack.thread("C0CHAN", TS)
    assert len(parts) >= 3
    assert all(p.source == "stream" and not p.streaming for p in parts)
    assert all(len(p.text) <= 8_000 for p in parts)
    assert "".join(p.text for p in parts) == text
    assert slack.rate_limited == []


async def test_a_long_code_block_is_split_with_its_fences_intact(stack: SlackStack) -> None:
    code = "\n".join(f"print({i})  # line {i} of a long listing" for i in range(400))
    text = f"Here is the script:\n\n```python\n{code}\n```\n\nRun it."
    stack.chatbase.script(Answer(text=text))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> script", ts=TS)))
    await stack.idle()
    parts = stack.slack.thread_texts("C0CHAN", TS)
    assert len(parts) >= 2
    for part in parts:
        assert part.count("```") % 2 == 0
    assert parts[-1].endswith("Run it.")


async def test_model_text_cannot_ping_anyone(stack: SlackStack) -> None:
    nasty = "Attention <!channel> <!here> <!everyone>: <@U0BOSS> said <#C0GEN> & <!subteam^S1>"
    stack.chatbase.script(Answer(deltas=[nasty[:25], nasty[25:]]))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> ping them", ts=TS)))
    stack.chatbase.script(Answer(text=nasty))
    await stack.deliver(event_envelope(message_event(text="and here?", ts="1700000002.000100")))
    await stack.idle()
    assert stack.slack.live_tokens() == []
    assert stack.slack.thread_texts("C0CHAN", TS) == [nasty]
    assert stack.slack.thread_texts("D0DM", None) == [nasty]


async def test_ten_concurrent_answers_in_one_workspace_get_no_429(stack: SlackStack) -> None:
    # Ten answers of 60 deltas each, streamed at model speed: unpaced, that is 600 appends
    # in about a second against Slack's 100 a minute (scaled: 100 per 6 s).
    texts = [f"Answer {i}: " + "".join(f"w{n:02d} " for n in range(60)) for i in range(10)]
    stack.chatbase.script(*[
        Answer(text=t, deltas=[t[:10], *(f"w{n:02d} " for n in range(60))], delta_delay=0.02)
        for t in texts
    ])
    threads = [f"17000000{i:02d}.000100" for i in range(10)]
    for i, ts in enumerate(threads):
        await stack.deliver(event_envelope(
            mention_event(text=f"<@UBOT> question {i}", ts=ts, user=f"U0USER{i}")
        ))
    await stack.chatbase.wait_for(lambda: len(stack.chatbase.chat_calls) == 10)
    await stack.idle()
    slack = stack.slack
    answered = {ts: slack.thread_texts("C0CHAN", ts) for ts in threads}
    assert all(len(parts) == 1 for parts in answered.values()), (answered, [
        (c.method, c.error, c.args.get("thread_ts")) for c in slack.calls if not c.ok])
    # Each question got its own answer (which one depends on arrival order at Chatbase).
    assert sorted(parts[0] for parts in answered.values()) == sorted(texts)
    assert slack.calls_to("chat.startStream", ok=True)  # at least the first ones streamed
    assert len(slack.calls_to("chat.appendStream")) < 150  # coalesced, not one per delta
    assert slack.rate_limited == []
    assert counter_value(stack.metrics, "bridge_platform_rate_limited", platform="slack") == 0


async def test_follow_ups_in_a_thread_need_a_conversation(stack: SlackStack) -> None:
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> first", ts=TS)))
    await stack.idle()

    def follow_up(user: str, ts: str, thread: str | None = TS) -> dict[str, object]:
        return event_envelope(message_event(text="and then?", ts=ts, user=user,
                                            channel="C0CHAN", channel_type="channel",
                                            thread_ts=thread))

    await stack.deliver(follow_up("U0ASKER", "1700000005.000100"))
    await stack.deliver(follow_up("U0STRANGER", "1700000006.000100"))
    await stack.deliver(follow_up("U0ASKER", "1700000007.000100", thread=None))
    await stack.idle()
    chats = stack.chatbase.chat_calls
    assert len(chats) == 2
    assert chats[1].body["message"] == "and then?"
    assert "conversationId" not in chats[0].body
    assert chats[1].body["conversationId"] in stack.chatbase.conversations
    assert len(stack.slack.thread_texts("C0CHAN", TS)) == 2


async def test_a_follow_up_during_the_first_answer_joins_its_conversation(
    stack: SlackStack,
) -> None:
    gate = Gate()
    stack.chatbase.script(Answer(deltas=["Still ", "writing."], gate=gate))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> first", ts=TS)))
    gate.release(1)
    await gate.wait_sent(1)
    # Sent while the first answer streams, before its conversation is stored.
    await stack.deliver(event_envelope(message_event(
        text="and then?", ts="1700000005.000100", channel="C0CHAN", channel_type="channel",
        thread_ts=TS)))
    await stack.chatbase.wait_for(lambda: stack.chatbase.streams_started == 1)
    gate.open()
    await stack.idle()
    chats = stack.chatbase.chat_calls
    assert [c.body["message"] for c in chats] == ["first", "and then?"]
    assert chats[1].body["conversationId"] in stack.chatbase.conversations


async def test_bots_self_and_edits_are_ignored(stack: SlackStack) -> None:
    for extra in ({"bot_id": "B0OTHER"}, {"user": "UBOT", "bot_id": "BBOT"},
                  {"subtype": "message_changed"}):
        await stack.deliver(event_envelope(message_event(text="hi", ts=TS, **extra)))
    await stack.idle()
    assert stack.chatbase.chat_calls == []


async def test_enterprise_grid_user_ids_name_the_org(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix,
                           fake={"enterprise_id": "E0ORG"}) as stack:
        body = event_envelope(mention_event(text="<@UBOT> hi", ts=TS),
                              enterprise_id="E0ORG")
        await stack.deliver(body)
        await stack.idle()
        user_id = stack.chatbase.chat_calls[0].body["userId"]
        assert user_id.startswith("slack.") and "E0ORG" in user_id.upper()
        assert stack.slack.thread_texts("C0CHAN", TS)


async def test_events_outside_the_allowed_channels_are_ignored(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix,
                           BRIDGE_SLACK_ALLOWED_CHANNELS="C0OK") as stack:
        await stack.deliver(event_envelope(mention_event(text="<@UBOT> hi", ts=TS)))
        await stack.deliver(event_envelope(mention_event(text="<@UBOT> ok", ts=TS,
                                                         channel="C0OK")))
        await stack.idle()
        assert [c.body["message"] for c in stack.chatbase.chat_calls] == ["ok"]


async def test_after_stop_intake_events_are_refused_for_redelivery(stack: SlackStack) -> None:
    await stack.adapter.stop_intake()
    assert not stack.adapter.is_ready()
    refused = await stack.deliver(event_envelope(mention_event(text="<@UBOT> hi", ts=TS)))
    assert refused.status == 503


async def test_events_the_bridge_does_not_use_are_still_acknowledged(stack: SlackStack) -> None:
    body = event_envelope({"type": "app_home_opened", "user": "U0ASKER", "tab": "messages",
                           "channel": "D0DM", "event_ts": TS})
    delivered = await stack.deliver(body)
    assert delivered.status == 200
    assert stack.chatbase.chat_calls == []


async def test_message_text_and_secrets_stay_out_of_logs_above_debug(
    stack: SlackStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stack.chatbase.script(Answer(deltas=["narwhal ", "axolotl"]))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> zebra quokka", ts=TS)))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> zebra quokka", ts=TS)),
                        secret="wrong")
    await stack.idle()
    assert stack.slack.thread_texts("C0CHAN", TS) == ["narwhal axolotl"]
    loud = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert loud  # something was logged at INFO or above
    for secret in ("zebra quokka", "narwhal", "axolotl", stack.slack.bot_token,
                   stack.slack.signing_secret):
        assert not any(secret in line for line in loud), secret
    everything = [r.getMessage() for r in caplog.records]
    assert not any(stack.slack.bot_token in line for line in everything)
