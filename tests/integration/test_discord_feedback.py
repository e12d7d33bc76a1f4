"""Discord feedback end to end: reactions (any skin tone), removal, 🔄, persistent buttons."""

from __future__ import annotations

from typing import Any

from adapters.discord.views import NEGATIVE_ID, POSITIVE_ID
from tests.fakes.chatbase import Answer
from tests.fakes.discord_stack import DiscordStack, discord_stack


async def answered(s: DiscordStack, asker: dict[str, Any], text: str) -> dict[str, Any]:
    """Ask in the channel (a thread opens) and return the bot's finished answer message."""
    s.chatbase.script(Answer(text=text))
    question = await s.discord.send_message(asker, s.channel, "a question", mention_bot=True)

    def found() -> dict[str, Any] | None:
        for message in s.discord.messages_in(question["id"]):
            if message["author"]["id"] == s.discord.bot_id and message["content"] == text:
                return message
        return None

    message: dict[str, Any] = await s.discord.wait_for(found)
    await s.adapter.wait_idle()  # remembered in Redis
    return message


async def test_reactions_with_skin_tones_become_feedback_and_removal_clears_it(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann, bob = s.discord.user("ann"), s.discord.user("bob")
        reply = await answered(s, ann, "Here you go.")
        feedback = s.chatbase.feedback_calls

        await s.discord.react(ann, reply, "👍🏽")
        await s.chatbase.wait_for(lambda: len(feedback) == 1)
        assert feedback[0].feedback == "positive"
        conversation_id = next(iter(s.chatbase.conversations))
        assert feedback[0].conversation_id == conversation_id

        await s.discord.react(ann, reply, "👍🏽", added=False)
        await s.chatbase.wait_for(lambda: len(feedback) == 2)
        assert feedback[1].feedback is None

        # Only the asker's reactions count by default: bob's 👎🏿 is ignored, ann's counts.
        await s.discord.react(bob, reply, "👎🏿")
        await s.adapter.wait_idle()
        await s.discord.react(ann, reply, "👎🏿")
        await s.chatbase.wait_for(lambda: len(feedback) == 3)
        await s.adapter.wait_idle()
        assert [f.feedback for f in feedback] == ["positive", None, "negative"]


async def test_reactions_on_other_messages_are_ignored(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann = s.discord.user("ann")
        own = await s.discord.send_message(ann, s.channel, "my own message")
        await s.discord.react(ann, own, "👍")
        await s.adapter.wait_idle()
        assert s.chatbase.feedback_calls == []
        assert s.discord.calls_to("GET", "/channels/{channel_id}") == []


async def test_regenerate_rewrites_the_answer_in_place(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann = s.discord.user("ann")
        reply = await answered(s, ann, "First try.")
        s.chatbase.script(Answer(text="A better second try."))
        await s.discord.react(ann, reply, "🔄")
        await s.discord.wait_for(
            lambda: s.discord.messages[reply["id"]]["content"] == "A better second try.")
        assert len(s.chatbase.retry_calls) == 1
        assert [m["id"] for m in s.discord.messages_in(reply["channel_id"])
                if m["author"]["id"] == s.discord.bot_id] == [reply["id"]]


async def test_buttons_survive_a_restart(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix,
                             BRIDGE_DISCORD_FEEDBACK_BUTTONS="true") as s:
        ann = s.discord.user("ann")
        reply = await answered(s, ann, "Answer with buttons.")
        await s.discord.wait_for(lambda: s.discord.messages[reply["id"]]["components"])
        buttons = s.discord.messages[reply["id"]]["components"][0]["components"]
        assert [b["custom_id"] for b in buttons] == [POSITIVE_ID, NEGATIVE_ID]

        # The process restarts: a new client, the same message and custom ids.
        first = s.adapter
        await first.stop_intake()
        await first.close()
        s.adapters.remove(first)
        await s.start_adapter()

        press = await s.discord.press(ann, s.discord.messages[reply["id"]], NEGATIVE_ID)
        await s.chatbase.wait_for(lambda: len(s.chatbase.feedback_calls) == 1)
        assert s.chatbase.feedback_calls[0].feedback == "negative"
        # The press was acknowledged silently (a deferred update), within Discord's 3 s.
        (callback,) = [c for c in s.discord.calls_to(
            "POST", "/interactions/{interaction_id}/{token}/callback")
            if c.path.startswith(f"/interactions/{press['id']}/")]
        assert callback.body["type"] == 6


async def test_a_reaction_in_a_thread_the_bot_no_longer_caches_still_counts(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann = s.discord.user("ann")
        reply = await answered(s, ann, "Old answer.")
        thread = s.discord.channel(reply["channel_id"])
        assert thread is not None
        # The thread was archived and the bot restarted: its cache does not know it.
        thread.archived = True
        first = s.adapter
        await first.stop_intake()
        await first.close()
        s.adapters.remove(first)
        await s.start_adapter()

        # An emoji that means nothing costs nothing: no lookup, no feedback.
        await s.discord.react(ann, reply, "🎉")
        await s.adapter.wait_idle()
        assert s.discord.calls_to("GET", "/channels/{channel_id}") == []

        await s.discord.react(ann, reply, "👍")
        await s.chatbase.wait_for(lambda: len(s.chatbase.feedback_calls) == 1)
        assert s.chatbase.feedback_calls[0].feedback == "positive"
        (fetched,) = s.discord.calls_to("GET", "/channels/{channel_id}")
        assert fetched.channel_id == thread.id
