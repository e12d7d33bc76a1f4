"""The Home tab end to end: signed Slack requests → Bolt → the history (fake Chatbase over
HTTP, real Redis) → views.publish on the fake Slack; Continue binds a DM thread."""

from __future__ import annotations

from typing import Any

from adapters.slack import home
from bridge.core import history
from tests.fakes.chatbase import Answer
from tests.fakes.slack import (
    event_envelope,
    home_action,
    home_opened_event,
    mention_event,
    message_event,
)
from tests.fakes.slack_stack import SlackStack, slack_stack

ASKER = "slack.T0TEAM.U0ASKER"  # the userId the bridge derives for U0ASKER


def sections(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in view["blocks"] if b["type"] == "section" and "accessory" in b]


def titles(view: dict[str, Any]) -> list[str]:
    return [b["text"]["text"].split("\n")[0] for b in sections(view)]


async def open_home(stack: SlackStack, user: str = "U0ASKER") -> dict[str, Any]:
    await stack.deliver(event_envelope(home_opened_event(user=user)))
    await stack.idle()
    return stack.slack.home_views[user]


async def press(stack: SlackStack, action_id: str, value: str | None = None,
                user: str = "U0ASKER") -> None:
    await stack.interact(home_action(action_id=action_id, value=value, user=user))
    await stack.idle()


async def test_home_lists_the_persons_conversations_and_continue_binds_a_dm_thread(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_stack(redis_url, redis_prefix) as stack:
        for ts, question in (("1700000001.000100", "How do refunds work?"),
                             ("1700000002.000100", "When are you open?")):
            stack.chatbase.script(Answer(text=f"Answer to: {question}"))
            await stack.deliver(event_envelope(mention_event(text=f"<@UBOT> {question}",
                                                             ts=ts)))
            await stack.idle()
        older, newer = sorted(stack.chatbase.conversations.values(), key=lambda c: c.seq)
        newer.updated_at = older.updated_at + 60  # the second was active later
        view = await open_home(stack)
        assert titles(view) == ["*When are you open?*", "*How do refunds work?*"]
        assert [b["accessory"]["action_id"] for b in sections(view)] == [home.CONTINUE] * 2
        # Someone else's Home tab does not list them.
        assert sections(await open_home(stack, user="U0OTHER")) == []
        # Continue on the older one: a message in the person's DM, headed by the
        # conversation and its last exchange, and a reply in its thread continues it.
        await press(stack, home.CONTINUE, older.id)
        dm = stack.slack.dms["U0ASKER"]
        [heading] = stack.slack.thread(dm, None)
        assert heading.text.startswith("**Continuing: How do refunds work?**")
        assert "Answer to: How do refunds work?" in heading.text
        stack.chatbase.script(Answer(text="Within 30 days."))
        await stack.deliver(event_envelope(message_event(
            text="And after that?", ts="1700000003.000100", channel=dm,
            thread_ts=heading.ts)))
        await stack.idle()
        assert stack.chatbase.chat_calls[-1].body["conversationId"] == older.id
        assert stack.slack.home_views["U0ASKER"]["blocks"][2]["elements"][0]["text"] \
            == home.CONTINUED


async def test_ended_conversations_pages_and_failures(redis_url: str, redis_prefix: str) -> None:
    async with slack_stack(redis_url, redis_prefix) as stack:
        fake = stack.chatbase
        fake.seed_conversation(user_id=ASKER, title="Handed over", status="taken_over",
                               updated_at=10_000)
        for n in range(6):
            fake.seed_conversation(user_id=ASKER, title=f"Topic {n}", updated_at=9_000 - n)
        view = await open_home(stack)
        first = sections(view)[0]
        assert "taken over by a person, can't be continued" in first["text"]["text"]
        assert first["accessory"]["action_id"] == home.NEW_TOPIC
        more = [e for b in view["blocks"] if b["type"] == "actions"
                for e in b["elements"] if e["action_id"] == home.MORE]
        assert len(more) == 1
        await press(stack, home.MORE, more[0]["value"])
        assert titles(stack.slack.home_views["U0ASKER"]) == ["*Topic 4*", "*Topic 5*"]
        # Starting over on an ended topic: the DM is reset and says so.
        await press(stack, home.NEW_TOPIC, "Handed over")
        [started] = stack.slack.thread(stack.slack.dms["U0ASKER"], None)
        assert "Handed over" in started.text
        # A press naming someone else's conversation is refused, and nothing is bound.
        theirs = fake.seed_conversation(user_id="slack.T0TEAM.U0OTHER", title="Private")
        await press(stack, home.CONTINUE, theirs.id)
        notice = stack.slack.home_views["U0ASKER"]["blocks"][2]["elements"][0]["text"]
        assert notice == history.NOT_YOURS
        assert len(stack.slack.thread(stack.slack.dms["U0ASKER"], None)) == 1


async def test_a_chatbase_failure_is_a_line_in_the_tab(redis_url: str, redis_prefix: str) -> None:
    async with slack_stack(redis_url, redis_prefix) as stack:
        stack.chatbase.fail_next(503, "SERVICE_UNDER_MAINTENANCE",
                                 endpoint="list_user_conversations", times=5)
        view = await open_home(stack)
        texts = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
        assert texts == [history.UNAVAILABLE]


async def test_other_tabs_publish_nothing(redis_url: str, redis_prefix: str) -> None:
    async with slack_stack(redis_url, redis_prefix) as stack:
        await stack.deliver(event_envelope(home_opened_event(tab="about")))
        await stack.idle()
        assert stack.slack.home_views == {}
