"""Discord end to end: gateway events in, the real service and Redis, answers out over REST."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.models import Platform
from bridge.split import join_bodies, split_text
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.discord_rest import Call
from tests.fakes.discord_stack import DiscordStack, discord_stack

NONE = {"parse": []}
MARK = " ▌"
THREADS = "/channels/{channel_id}/messages/{message_id}/threads"
MESSAGES = "/channels/{channel_id}/messages"
MESSAGE = "/channels/{channel_id}/messages/{message_id}"
TYPING = "/channels/{channel_id}/typing"


def writes(s: DiscordStack, channel_id: str) -> list[Call]:
    return s.discord.message_calls(channel_id)


async def wait_final(s: DiscordStack, channel_id: str, text: str) -> list[dict[str, Any]]:
    """Wait until the messages in ``channel_id`` read ``text`` once joined (no mark left)."""
    def done() -> list[dict[str, Any]] | None:
        found = s.discord.messages_in(channel_id)
        bot = [m for m in found if m["author"]["id"] == s.discord.bot_id]
        return bot if bot and "".join(m["content"] for m in bot) == text else None

    result: list[dict[str, Any]] = await s.discord.wait_for(done)
    return result


async def test_mention_opens_a_thread_types_posts_edits_and_ends_exact(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Refunds ", "take ", "five ", "days. @everyone"],
                                 gate=gate))
        asker = s.discord.user("ann")
        question = await s.discord.send_message(asker, s.channel, "How do refunds work?",
                                                mention_bot=True)
        thread_id = question["id"]
        # A thread opens from the question, typing shows in it, before any text.
        await s.discord.wait_for(lambda: s.discord.calls_to("POST", TYPING))
        (opened,) = s.discord.calls_to("POST", THREADS)
        assert opened.body["name"] == "How do refunds work?"
        assert s.discord.calls_to("POST", TYPING)[0].channel_id == thread_id
        assert writes(s, thread_id) == []

        gate.release(1)
        first = await s.discord.wait_for(lambda: writes(s, thread_id))
        assert first[0].method == "POST"
        # The first post carries real text right away, with the still-writing mark.
        assert first[0].body["content"] == "Refunds " + MARK
        gate.release(1)
        await s.discord.wait_for(lambda: len(writes(s, thread_id)) >= 2)
        gate.open()
        final = "Refunds take five days. @everyone"
        (message,) = await wait_final(s, thread_id, final)
        calls = writes(s, thread_id)
        assert [c.method for c in calls[1:]] == ["PATCH"] * (len(calls) - 1)
        for call in calls:
            assert call.body["allowed_mentions"] == NONE  # @everyone stays inert
        assert all(c.at >= opened.at for c in calls)
        # The chat call carried the question without the mention, for this user.
        body = s.chatbase.chat_calls[0].body
        assert body["message"] == "How do refunds work?"
        assert body["userId"] == f"discord.{asker['id']}"
        await s.adapter.settled()
        record = await s.store.find_reply(Platform.DISCORD, s.channel.id, message["id"])
        assert record is not None and record.thread == thread_id
        assert record.asker == asker["id"]
        assert s.discord.rate_limited == []


async def test_without_thread_permission_the_answer_is_an_inline_reply(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        closed = s.discord.add_channel(s.guild, "no-threads", threads_allowed=False)
        # The bot learns of the channel the way it would: a reconnect brings a fresh
        # GUILD_CREATE. Here the adapter is simply started after the channel exists.
        await s.adapter.close()
        s.adapters.clear()
        await s.start_adapter()
        s.chatbase.script(Answer(text="Inline answer."))
        question = await s.discord.send_message(s.discord.user("bob"), closed, "hi?",
                                                mention_bot=True)
        await wait_final(s, closed.id, "Inline answer.")
        assert s.discord.calls_to("POST", THREADS) == []
        post = writes(s, closed.id)[0]
        assert post.body["message_reference"]["message_id"] == int(question["id"])
