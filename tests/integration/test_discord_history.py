"""Discord /history end to end: the ephemeral list of a person's conversations, its pages,
"Continue here" opening a thread bound to the conversation, and who may press what."""

from __future__ import annotations

import time
from typing import Any

from adapters.discord import history as views
from bridge.core import history
from tests.fakes.chatbase import Answer
from tests.fakes.discord_rest import Call, Channel
from tests.fakes.discord_stack import DiscordStack, discord_stack

NONE = {"parse": []}
EPHEMERAL = 64
CALLBACK = "/interactions/{interaction_id}/{token}/callback"
START_THREAD = "/channels/{channel_id}/threads"


def callbacks(s: DiscordStack, interaction: dict[str, Any]) -> list[Call]:
    return [c for c in s.discord.calls_to("POST", CALLBACK)
            if c.path.startswith(f"/interactions/{interaction['id']}/")]


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for row in message["components"] for b in row["components"]]


def button(message: dict[str, Any], label: str) -> dict[str, Any]:
    (found,) = [b for b in buttons(message) if b["label"] == label]
    return found


async def listed(s: DiscordStack, user: dict[str, Any], channel: Channel) -> dict[str, Any]:
    """Use /history: acknowledged at once with an ephemeral "thinking" response, which is
    then edited into the list; returns that (ephemeral) message."""
    interaction = await s.discord.slash(user, channel, "history")
    (deferred,) = await s.discord.wait_for(lambda: callbacks(s, interaction))
    assert deferred.body["type"] == 5 and deferred.body["data"]["flags"] == EPHEMERAL
    state = s.discord.interactions[interaction["token"]]

    def shown() -> dict[str, Any] | None:
        message = s.discord.messages.get(state.original_id or "")
        return message if message is not None and message["content"] else None

    message: dict[str, Any] = await s.discord.wait_for(shown)
    assert message["flags"] & EPHEMERAL
    return message


async def told(s: DiscordStack, press: dict[str, Any]) -> str:
    """The ephemeral follow-up line a press was answered with (after a silent ack)."""
    (ack,) = await s.discord.wait_for(lambda: callbacks(s, press))
    assert ack.body["type"] == 6
    state = s.discord.interactions[press["token"]]
    (line,) = await s.discord.wait_for(lambda: state.followups)
    message = s.discord.messages[line]
    assert message["flags"] & EPHEMERAL
    text: str = message["content"]
    return text


async def test_history_lists_the_persons_conversations_newest_first_with_pages(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann, bob = s.discord.user("ann"), s.discord.user("bob")
        mine, now = f"discord.{ann['id']}", int(time.time())
        refunds = s.chatbase.seed_conversation(
            user_id=mine, title="Refunds", updated_at=now - 2 * 3600 - 30,
            messages=[("user", "How do refunds work?")])
        ended = s.chatbase.seed_conversation(
            user_id=mine, title=None, updated_at=now - 120, status="ended",
            messages=[("user", "What are your opening hours?"), ("assistant", "9 to 5.")])
        older = [s.chatbase.seed_conversation(user_id=mine, title=f"Older {n}",
                                              updated_at=now - 86_400 * (3 + n))
                 for n in range(5)]
        s.chatbase.seed_conversation(user_id=f"discord.{bob['id']}", title="Bob's secret",
                                     updated_at=now)

        message = await listed(s, ann, s.channel)
        lines = message["content"].splitlines()
        assert lines[0] == views.HEADER
        assert lines[1:] == [
            "- **What are your opening hours?** · 2 minutes ago · ended",
            "- **Refunds** · 2 hours ago",
            "- **Older 0** · 3 days ago",
            "- **Older 1** · 4 days ago",
            "- **Older 2** · 5 days ago",
        ]
        # A Continue button per ongoing conversation (not the ended one), all carrying ann's
        # id, and More for the next page.
        continues = [b for b in buttons(message) if b["label"].startswith("Continue here")]
        assert [b["custom_id"] for b in continues] == [
            f"cbb:h:c:{ann['id']}:{c.id}" for c in (refunds, *older[:3])]
        assert continues[0]["label"] == "Continue here: Refunds"
        assert not any(ended.id in b["custom_id"] for b in buttons(message))
        more = button(message, "More")
        assert more["custom_id"].startswith(f"cbb:h:m:{ann['id']}:")

        press = await s.discord.press(ann, message, more["custom_id"])
        await s.discord.wait_for(
            lambda: s.discord.messages[message["id"]]["content"].startswith(views.HEADER_MORE))
        (ack,) = callbacks(s, press)
        assert ack.body["type"] == 6  # the list itself pages, silently acknowledged
        paged = s.discord.messages[message["id"]]
        assert paged["content"].splitlines()[1:] == [
            "- **Older 3** · 6 days ago", "- **Older 4** · 1 week ago"]
        assert [b["label"] for b in buttons(paged)] == [
            "Continue here: Older 3", "Continue here: Older 4", "Newest"]
        assert "Bob" not in message["content"] + paged["content"]
        edits = s.discord.calls_to(
            "PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}")
        assert edits and all(c.body["allowed_mentions"] == NONE for c in edits)

        await s.discord.press(ann, paged, button(paged, "Newest")["custom_id"])
        await s.discord.wait_for(
            lambda: s.discord.messages[message["id"]]["content"].startswith(views.HEADER))


async def test_continue_here_opens_a_thread_headed_by_the_last_exchange_and_continues_it(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann = s.discord.user("ann")
        old = s.chatbase.seed_conversation(
            user_id=f"discord.{ann['id']}", title="Refunds <@&123> @everyone",
            messages=[("user", "Can I get a refund?"), ("assistant", "Yes, within 30 days.")])
        message = await listed(s, ann, s.channel)
        press = await s.discord.press(
            ann, message, button(message, "Continue here: Refunds <@&123> @everyone")["custom_id"])
        line = await told(s, press)

        (started,) = s.discord.calls_to("POST", START_THREAD)
        assert started.channel_id == s.channel.id
        assert started.body["name"] == "Refunds <@&123> @everyone"
        assert started.body["type"] == 11  # public
        thread = next(c for c in s.discord.guilds[s.guild.id].channels.values()
                      if c.parent_id == s.channel.id)
        assert line == f"Continuing **Refunds <@&123> @everyone** in <#{thread.id}>."
        (heading,) = s.discord.messages_in(thread.id)
        assert heading["content"] == (
            "**Continuing: Refunds <@&123> @everyone**\n\n> Can I get a refund?\n\n"
            "Yes, within 30 days.\n\n"
            "_Mention me in this thread to continue the conversation._")
        (posted,) = s.discord.message_calls(thread.id)
        assert posted.body["allowed_mentions"] == NONE
        await s.adapter.wait_idle()

        # Without the message-content intent, a mention in the thread continues it.
        s.chatbase.script(Answer(text="After 30 days, store credit."))
        await s.discord.send_message(ann, thread, "and after 30 days?", mention_bot=True)
        await s.discord.wait_for(lambda: any(
            m["content"] == "After 30 days, store credit." for m in s.discord.messages_in(
                thread.id)))
        (chat,) = s.chatbase.chat_calls
        assert chat.body["conversationId"] == old.id
        assert chat.body["message"] == "and after 30 days?"


async def test_with_message_content_any_message_in_the_thread_continues_it(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix,
                             BRIDGE_DISCORD_MESSAGE_CONTENT="true") as s:
        ann = s.discord.user("ann")
        old = s.chatbase.seed_conversation(
            user_id=f"discord.{ann['id']}", title="Plans",
            messages=[("user", "Which plan?"), ("assistant", "The yearly one.")])
        message = await listed(s, ann, s.channel)
        press = await s.discord.press(ann, message,
                                      button(message, "Continue here: Plans")["custom_id"])
        await told(s, press)
        thread = next(c for c in s.discord.guilds[s.guild.id].channels.values()
                      if c.parent_id == s.channel.id)
        (heading,) = s.discord.messages_in(thread.id)
        assert heading["content"].endswith(
            "_Reply in this thread to continue the conversation._")
        await s.adapter.wait_idle()
        s.chatbase.script(Answer(text="Monthly works too."))
        await s.discord.send_message(ann, thread, "and monthly?")
        await s.chatbase.wait_for(lambda: len(s.chatbase.chat_calls) == 1)
        assert s.chatbase.chat_calls[0].body["conversationId"] == old.id


async def test_in_a_dm_the_conversation_continues_in_the_dm(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        carol = s.discord.user("carol")
        dm = s.discord.add_dm(carol["id"])
        old = s.chatbase.seed_conversation(
            user_id=f"discord.{carol['id']}", title="Invoices",
            messages=[("user", "Where is my invoice?"), ("assistant", "In Billing.")])
        message = await listed(s, carol, dm)
        press = await s.discord.press(carol, message,
                                      button(message, "Continue here: Invoices")["custom_id"])
        assert await told(s, press) == "Continuing **Invoices** here."
        assert s.discord.calls_to("POST", START_THREAD) == []
        heading = next(m for m in s.discord.messages_in(dm.id)
                       if m["content"].startswith("**Continuing: Invoices**"))
        assert heading["content"].endswith("_Reply here to continue the conversation._")
        assert not heading["flags"] & EPHEMERAL
        await s.adapter.wait_idle()
        s.chatbase.script(Answer(text="Also by email."))
        await s.discord.send_message(carol, dm, "anywhere else?")
        await s.chatbase.wait_for(lambda: len(s.chatbase.chat_calls) == 1)
        assert s.chatbase.chat_calls[0].body["conversationId"] == old.id


async def test_someone_elses_press_is_refused(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann, bob = s.discord.user("ann"), s.discord.user("bob")
        old = s.chatbase.seed_conversation(user_id=f"discord.{ann['id']}", title="Refunds",
                                           messages=[("user", "Refund?")])
        message = await listed(s, ann, s.channel)
        reads = len(s.chatbase.calls("get_conversation"))

        # Bob pressing ann's button: refused at once, privately, nothing read or opened.
        press = await s.discord.press(bob, message,
                                      button(message, "Continue here: Refunds")["custom_id"])
        (refused,) = await s.discord.wait_for(lambda: callbacks(s, press))
        assert refused.body["type"] == 4 and refused.body["data"]["flags"] == EPHEMERAL
        assert refused.body["data"]["content"] == views.NOT_YOUR_LIST

        # A button claiming to be bob's but naming ann's conversation: Chatbase's userId
        # decides.
        forged = f"cbb:h:c:{bob['id']}:{old.id}"
        tampered = {**message, "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "Continue", "custom_id": forged}]}]}
        press = await s.discord.press(bob, tampered, forged)
        assert await told(s, press) == history.NOT_YOURS
        assert len(s.chatbase.calls("get_conversation")) == reads + 1
        await s.adapter.wait_idle()
        assert s.discord.calls_to("POST", START_THREAD) == []
        assert s.chatbase.chat_calls == []


async def test_an_ended_conversation_pressed_from_an_old_list_is_refused_politely(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann = s.discord.user("ann")
        old = s.chatbase.seed_conversation(user_id=f"discord.{ann['id']}", title="Refunds")
        message = await listed(s, ann, s.channel)
        s.chatbase.end_conversation(old.id)  # ended after the list was shown
        press = await s.discord.press(ann, message,
                                      button(message, "Continue here: Refunds")["custom_id"])
        assert await told(s, press) == history.ENDED.format(status="ended")
        assert s.discord.calls_to("POST", START_THREAD) == []


async def test_a_chatbase_refusal_while_listing_shows_a_line_and_no_history_says_so(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann, bob, carol = (s.discord.user(n) for n in ("ann", "bob", "carol"))
        for user in (ann, bob):
            s.chatbase.seed_conversation(user_id=f"discord.{user['id']}", title="Refunds")
        # Longer than the client would wait: it gives up at once.
        s.chatbase.rate_limit_next(endpoint="list_user_conversations", retry_after=3600)
        busy = await listed(s, ann, s.channel)
        assert busy["content"] == history.BUSY and busy["components"] == []

        # Every try the client makes (the first and its two retries) fails.
        s.chatbase.fail_next(500, "INTERNAL_SERVER_ERROR",
                             endpoint="list_user_conversations", times=3)
        down = await listed(s, bob, s.channel)
        assert down["content"] == history.UNAVAILABLE and down["components"] == []

        empty = await listed(s, carol, s.channel)
        assert empty["content"] == views.EMPTY


async def test_pseudonymous_user_ids_list_the_same_persons_conversations(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix,
                             BRIDGE_USER_ID_SECRET="s3cret-value") as s:
        ann, bob = s.discord.user("ann"), s.discord.user("bob")
        s.chatbase.script(Answer(text="Hello."))
        question = await s.discord.send_message(ann, s.channel, "hi there", mention_bot=True)
        await s.discord.wait_for(lambda: any(
            m["content"] == "Hello." for m in s.discord.messages_in(question["id"])))
        await s.adapter.wait_idle()
        user_id = s.chatbase.chat_calls[0].body["userId"]
        assert ann["id"] not in user_id

        mine = await listed(s, ann, s.channel)
        assert mine["content"].splitlines()[1].startswith("- **hi there** · ")
        theirs = await listed(s, bob, s.channel)
        assert theirs["content"] == views.EMPTY
        assert {c.path.split("/users/")[1].split("/")[0]
                for c in s.chatbase.calls("list_user_conversations")} >= {user_id}
