"""Reactions, native feedback buttons, 🔄 regenerate and the reset command, end to end:
signed Slack requests → Bolt → RelayService (real Redis) → fake Chatbase / fake Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.chatbase import Answer
from tests.fakes.slack import (
    block_action,
    event_envelope,
    mention_event,
    message_event,
    reaction_event,
    slash_command,
)
from tests.fakes.slack_stack import SlackStack, slack_stack

TS = "1700000001.000100"


@pytest.fixture
async def stack(redis_url: str, redis_prefix: str) -> AsyncIterator[SlackStack]:
    async with slack_stack(redis_url, redis_prefix,
                           BRIDGE_SLACK_FEEDBACK_BUTTONS="true") as built:
        yield built


async def answered(stack: SlackStack, text: str = "The answer.") -> str:
    """Ask in a channel; returns the ts of the bot's (one-part) answer."""
    stack.chatbase.script(Answer(text=text))
    await stack.deliver(event_envelope(mention_event(text="<@UBOT> question", ts=TS)))
    await stack.idle()
    [reply] = stack.slack.thread("C0CHAN", TS)
    return reply.ts


async def react(stack: SlackStack, reply: str, name: str, *, user: str = "U0ASKER",
                added: bool = True) -> None:
    await stack.deliver(event_envelope(reaction_event(reaction=name, channel="C0CHAN",
                                                      ts=reply, user=user, added=added)))
    await stack.idle()


def verdicts(stack: SlackStack) -> list[str | None]:
    return [call.feedback for call in stack.chatbase.feedback_calls]


async def test_thumbs_from_the_asker_become_chatbase_feedback(stack: SlackStack) -> None:
    reply = await answered(stack)
    await react(stack, reply, "+1::skin-tone-3")
    await react(stack, reply, "+1::skin-tone-3", added=False)
    await react(stack, reply, "thumbsdown")
    assert verdicts(stack) == ["positive", None, "negative"]
    [conversation] = stack.chatbase.conversations.values()
    answer = [m for m in conversation.messages if m.role == "assistant"][-1]
    assert {c.message_id for c in stack.chatbase.feedback_calls} == {answer.id}
    assert answer.feedback == "negative"


async def test_reactions_by_others_or_on_other_messages_are_ignored(stack: SlackStack) -> None:
    reply = await answered(stack)
    await react(stack, reply, "+1", user="U0STRANGER")
    await react(stack, reply, "heart")
    await stack.deliver(event_envelope(reaction_event(reaction="+1", channel="C0CHAN", ts=TS,
                                                      item_user="U0ASKER")))
    await stack.idle()
    assert verdicts(stack) == []


async def test_feedback_buttons_are_on_the_answer_and_clicks_count(stack: SlackStack) -> None:
    reply = await answered(stack)
    assert stack.slack.messages[reply].has_feedback_buttons
    assert stack.slack.messages[reply].text == "The answer."
    pressed = await stack.interact(block_action(value="negative", channel="C0CHAN",
                                                message_ts=reply))
    assert pressed.status == 200
    await stack.interact(block_action(value="positive", channel="C0CHAN", message_ts=reply,
                                      user="U0STRANGER"))
    await stack.idle()
    assert verdicts(stack) == ["negative"]


async def test_regenerate_rewrites_the_answer_in_place(stack: SlackStack) -> None:
    reply = await answered(stack, "First try.")
    stack.chatbase.script(Answer(text="Second, better try."))
    await react(stack, reply, "arrows_counterclockwise", user="U0STRANGER")  # not the asker
    assert stack.chatbase.retry_calls == []
    await react(stack, reply, "arrows_counterclockwise")
    assert len(stack.chatbase.retry_calls) == 1
    assert stack.slack.thread_texts("C0CHAN", TS) == ["Second, better try."]
    assert stack.slack.thread("C0CHAN", TS)[0].ts == reply
    assert stack.slack.messages[reply].has_feedback_buttons
    # Feedback now lands on the regenerated answer.
    await react(stack, reply, "+1")
    [conversation] = stack.chatbase.conversations.values()
    latest = [m for m in conversation.messages if m.role == "assistant"][-1]
    assert stack.chatbase.feedback_calls[-1].message_id == latest.id
    assert latest.text == "Second, better try."


async def test_reset_in_a_dm_starts_a_new_conversation(stack: SlackStack) -> None:
    await stack.deliver(event_envelope(message_event(text="remember 42", ts=TS)))
    await stack.idle()
    done = await stack.command(slash_command())
    assert done.status == 200
    assert done.json() == {"text": "Done. Your next message starts a new conversation.",
                           "response_type": "ephemeral"}
    again = await stack.command(slash_command())
    assert again.json()["text"].startswith("There was no conversation")
    await stack.deliver(event_envelope(message_event(text="what number?",
                                                     ts="1700000002.000100")))
    await stack.idle()
    first, second = stack.chatbase.chat_calls
    assert "conversationId" not in first.body and "conversationId" not in second.body
    assert len(stack.chatbase.conversations) == 2


async def test_reset_a_channel_thread_by_its_link(stack: SlackStack) -> None:
    await answered(stack)
    link = f"https://fake.slack.com/archives/C0CHAN/p{TS.replace('.', '')}"
    hint = await stack.command(slash_command(channel="C0CHAN"))
    assert "link" in hint.json()["text"]
    done = await stack.command(slash_command(channel="C0CHAN", text=link))
    assert done.json()["text"].startswith("Done.")
    # The thread is no longer a conversation: a follow-up without a mention is not answered.
    await stack.deliver(event_envelope(message_event(
        text="and?", ts="1700000003.000100", channel="C0CHAN", channel_type="channel",
        thread_ts=TS)))
    await stack.idle()
    assert len(stack.chatbase.chat_calls) == 1


async def test_a_renamed_command_gets_a_hint_and_other_actions_are_acknowledged(
    stack: SlackStack,
) -> None:
    hint = await stack.command(slash_command(command="/ask-bot-reset"))
    assert hint.status == 200
    assert "BRIDGE_SLACK_RESET_COMMAND" in hint.json()["text"]
    assert hint.json()["response_type"] == "ephemeral"
    other = await stack.interact(block_action(value="x", channel="C0CHAN", message_ts=TS,
                                              action_id="something_else"))
    assert other.status == 200
    await stack.idle()
    assert stack.chatbase.feedback_calls == [] and stack.chatbase.chat_calls == []
