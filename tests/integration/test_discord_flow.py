"""Discord end to end: gateway events in, the real service and Redis, answers out over REST."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.common import SOMETHING_WENT_WRONG
from bridge.core.models import InboundMessage, Platform
from bridge.core.ports import ReplySink
from bridge.core.split import join_bodies, split_text
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.discord_rest import Call
from tests.fakes.discord_stack import DiscordStack, discord_stack
from tests.fakes.harness import counter_value

NONE = {"parse": []}
MARK = " ▌"
THREADS = "/channels/{channel_id}/messages/{message_id}/threads"
TYPING = "/channels/{channel_id}/typing"


def writes(s: DiscordStack, channel_id: str) -> list[Call]:
    return s.discord.message_calls(channel_id)


def bot_messages(s: DiscordStack, channel_id: str) -> list[dict[str, Any]]:
    return [m for m in s.discord.messages_in(channel_id)
            if m["author"]["id"] == s.discord.bot_id]


async def wait_final(s: DiscordStack, channel_id: str, text: str) -> list[dict[str, Any]]:
    """Wait until the bot's messages in ``channel_id`` joined read exactly ``text``."""
    def done() -> list[dict[str, Any]] | None:
        found = bot_messages(s, channel_id)
        return found if found and "".join(m["content"] for m in found) == text else None

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
        # A thread opens from the question and typing shows in it, before any text.
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
        # The chat call carried the question without the mention, for this user.
        body = s.chatbase.chat_calls[0].body
        assert body["message"] == "How do refunds work?"
        assert body["userId"] == f"discord.{asker['id']}"
        await s.adapter.wait_idle()
        record = await s.store.find_reply(Platform.DISCORD, s.channel.id, message["id"])
        assert record is not None and record.thread == thread_id
        assert record.asker == asker["id"]
        assert s.discord.rate_limited == []
        assert counter_value(s.metrics, "bridge_platform_calls", platform="discord",
                             call="thread") == 1


async def test_without_thread_permission_the_answer_is_an_inline_reply(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        closed = s.discord.add_channel(s.guild, "no-threads", threads_allowed=False)
        await s.start_adapter()
        s.chatbase.script(Answer(text="Inline answer."))
        bob = s.discord.user("bob")
        question = await s.discord.send_message(bob, closed, "hi?", mention_bot=True)
        await wait_final(s, closed.id, "Inline answer.")
        assert s.discord.calls_to("POST", THREADS) == []
        post = writes(s, closed.id)[0]
        assert post.body["message_reference"]["message_id"] == int(question["id"])
        # The next mention there continues the same (channel) conversation.
        s.chatbase.script(Answer(text="Second."))
        await s.discord.send_message(bob, closed, "more?", mention_bot=True)
        await s.chatbase.wait_for(lambda: len(s.chatbase.chat_calls) == 2)
        assert "conversationId" in s.chatbase.chat_calls[1].body


async def test_follow_ups_in_the_thread_continue_without_a_mention(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix,
                             BRIDGE_DISCORD_MESSAGE_CONTENT="true") as s:
        assert s.discord.gateway.identifies[-1]["intents"] & (1 << 15)
        ann, bob = s.discord.user("ann"), s.discord.user("bob")
        s.chatbase.script(Answer(text="First answer."))
        question = await s.discord.send_message(ann, s.channel, "first?", mention_bot=True)
        thread = await s.discord.wait_for(lambda: s.discord.channel(question["id"]))
        await wait_final(s, thread.id, "First answer.")
        await s.adapter.wait_idle()

        s.chatbase.script(Answer(text="Follow-up answer."))
        await s.discord.send_message(ann, thread, "and annual plans?")
        await wait_final(s, thread.id, "First answer.Follow-up answer.")
        _, follow = s.chatbase.chat_calls
        assert follow.body["message"] == "and annual plans?"
        conversation_id = next(iter(s.chatbase.conversations))
        assert follow.body["conversationId"] == conversation_id

        # Someone else talking in the thread without a mention is not the bot's business.
        await s.adapter.wait_idle()
        await s.discord.send_message(bob, thread, "I have the same question")
        await s.adapter.wait_idle()
        assert len(s.chatbase.chat_calls) == 2
        # A mention by them inside the thread is answered there, in their own conversation.
        s.chatbase.script(Answer(text="Bob's answer."))
        await s.discord.send_message(bob, thread, "and me?", mention_bot=True)
        await wait_final(s, thread.id, "First answer.Follow-up answer.Bob's answer.")
        assert [c.body["message"] for c in s.chatbase.chat_calls][2:] == ["and me?"]
        assert "conversationId" not in s.chatbase.chat_calls[2].body


async def test_a_dm_is_answered_in_the_dm(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        carol = s.discord.user("carol")
        dm = s.discord.add_dm(carol["id"])
        s.chatbase.script(Answer(text="Hello in private."))
        await s.discord.send_message(carol, dm, "hello")
        await wait_final(s, dm.id, "Hello in private.")
        assert s.chatbase.chat_calls[0].body["userId"] == f"discord.{carol['id']}"
        post = writes(s, dm.id)[0]
        assert "message_reference" not in post.body
        # One rolling conversation.
        s.chatbase.script(Answer(text=" Again."))
        await s.discord.send_message(carol, dm, "again")
        await wait_final(s, dm.id, "Hello in private. Again.")
        assert "conversationId" in s.chatbase.chat_calls[1].body


async def test_everyone_bots_and_unmentioned_messages_are_ignored(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        dan = s.discord.user("dan")
        robot = {**s.discord.user("robot"), "bot": True}
        await s.discord.send_message(dan, s.channel, "@everyone lunch?", mention_everyone=True)
        await s.discord.send_message(dan, s.channel, "no mention here")
        await s.discord.send_message(robot, s.channel, "beep", mention_bot=True)
        await s.discord.send_message(dan, s.channel, "webhook", mention_bot=True,
                                     webhook_id="123456789012345678")
        # A real question after them: once it is answered, the ones before were seen.
        s.chatbase.script(Answer(text="Answered."))
        question = await s.discord.send_message(dan, s.channel, "real one", mention_bot=True)
        await wait_final(s, question["id"], "Answered.")
        await s.adapter.wait_idle()
        assert [c.body["message"] for c in s.chatbase.chat_calls] == ["real one"]
        assert len(s.discord.calls_to("POST", THREADS)) == 1
        # The four above, and the bot's own answer arriving back over the gateway.
        assert counter_value(s.metrics, "bridge_events", platform="discord",
                             result="ignored") == 5


async def test_a_long_answer_continues_in_follow_up_messages_code_intact(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        intro = "".join(f"Paragraph {i} explains one more detail of the setup.\n\n"
                        for i in range(30))
        code = "".join(f"    step_{i} = configure(option_{i}, value={i})\n" for i in range(60))
        outro = "".join(f"Note {i}: remember to check the logs after each change.\n"
                        for i in range(40))
        answer = intro + "```python\n" + code + "```\n\n" + outro
        assert len(answer) > 5000 and answer.index("```") < 2000 < answer.rindex("```")
        s.chatbase.script(Answer(text=answer))
        question = await s.discord.send_message(s.discord.user("eve"), s.channel,
                                                "show me the setup", mention_bot=True)
        expected = split_text(answer, 2000 - len(MARK))
        parts = await wait_final(s, question["id"], "".join(p.text for p in expected))
        assert [m["content"] for m in parts] == [p.text for p in expected]
        assert join_bodies(expected) == answer
        assert len(parts) >= 3
        for message in parts:
            assert len(message["content"]) <= 2000
            assert message["content"].count("```") % 2 == 0  # every part renders on its own
        await s.adapter.wait_idle()
        for message in parts:
            record = await s.store.find_reply(Platform.DISCORD, s.channel.id, message["id"])
            assert record is not None and record.part_ids == tuple(m["id"] for m in parts)


async def test_three_answers_in_one_channel_share_its_budget_without_429s(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        closed = s.discord.add_channel(s.guild, "busy", threads_allowed=False)
        await s.start_adapter()
        texts = [" ".join(f"{name}-word-{i}" for i in range(12))
                 for name in ("alpha", "beta", "gamma")]
        for text in texts:
            s.chatbase.script(Answer(text=text, delta_delay=0.03))
        askers = [s.discord.user(f"user{i}") for i in range(3)]
        await asyncio.gather(*(
            s.discord.send_message(user, closed, f"question {i}", mention_bot=True)
            for i, user in enumerate(askers)
        ))

        def finished() -> bool:
            contents = sorted(m["content"] for m in bot_messages(s, closed.id))
            return contents == sorted(texts)

        await s.discord.wait_for(finished, within=30)
        await s.adapter.wait_idle()
        assert s.discord.rate_limited == []
        assert s.rate_limited_count() == 0
        calls = writes(s, closed.id)
        assert len(calls) > 5  # more than one window's worth went through the one bucket
        for call in calls:
            assert call.body["allowed_mentions"] == NONE


async def test_the_catch_all_tells_the_user_something_went_wrong(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        async def broken(message: InboundMessage, sink: ReplySink) -> None:
            await sink.working()
            raise RuntimeError("a bug in the core")

        s.service.handle_message = broken  # type: ignore[method-assign]
        question = await s.discord.send_message(s.discord.user("ann"), s.channel, "hello?",
                                                mention_bot=True)
        told = await s.discord.wait_for(lambda: bot_messages(s, question["id"]))
        await s.adapter.wait_idle()
        assert [m["content"] for m in told] == [SOMETHING_WENT_WRONG]
        assert s.adapter.in_flight == 0


async def test_an_edit_refused_with_30046_continues_the_answer_in_a_new_message(
    redis_url: str, redis_prefix: str
) -> None:
    """Discord caps edits of messages older than an hour (error 30046): the message keeps
    what it shows and the rest of the answer follows in a new message, ending exact."""
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Part one.\n\n", "Part ", "two."], gate=gate))
        asker = s.discord.user("ann")
        question = await s.discord.send_message(asker, s.channel, "Tell me", mention_bot=True)
        thread_id = question["id"]
        gate.release(1)
        (posted,) = await s.discord.wait_for(lambda: bot_messages(s, thread_id))
        assert posted["content"] == "Part one.\n\n" + MARK
        s.discord.old_messages.add(posted["id"])
        gate.open()
        first, rest = await s.discord.wait_for(
            lambda: (found := bot_messages(s, thread_id)) and len(found) == 2
            and found[1]["content"] == "Part two." and found)
        assert first["id"] == posted["id"] and first["content"] == "Part one.\n\n" + MARK
        assert first["content"].removesuffix(MARK) + rest["content"] == "Part one.\n\nPart two."
        refused = [c for c in writes(s, thread_id) if c.status == 400]
        assert len(refused) == 1 and refused[0].method == "PATCH"
        await s.adapter.wait_idle()
        # Both messages belong to the answer: feedback on either finds it.
        for message in (first, rest):
            assert await s.store.find_reply(Platform.DISCORD, s.channel.id, message["id"])
