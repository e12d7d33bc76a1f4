"""Discord Stop button and sources end to end: the button rides on the answer being written,
the asker or a moderator stops it, anyone else is told no; sources are listed, inert."""

from __future__ import annotations

from typing import Any

from adapters.discord.adapter import ONLY_ASKER_MAY_STOP
from adapters.discord.views import NEGATIVE_ID, POSITIVE_ID, STOP_LABEL, stop_custom_id
from bridge.core.notices import STOPPED
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.discord_rest import EVERYONE_PERMISSIONS, MANAGE_MESSAGES, Call
from tests.fakes.discord_stack import DiscordStack, discord_stack

MARK = " ▌"
NONE = {"parse": []}
CALLBACK = "/interactions/{interaction_id}/{token}/callback"


def bot_messages(s: DiscordStack, channel_id: str) -> list[dict[str, Any]]:
    """The bot's messages everyone sees (ephemeral ones, flag 64, only their addressee)."""
    return [m for m in s.discord.messages_in(channel_id)
            if m["author"]["id"] == s.discord.bot_id and not int(m.get("flags") or 0) & 64]


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [button for row in message.get("components") or []
            for button in row["components"]]


async def wait_final(s: DiscordStack, channel_id: str, text: str) -> list[dict[str, Any]]:
    """Wait until the bot's messages in ``channel_id`` joined read exactly ``text``."""
    def done() -> list[dict[str, Any]] | None:
        found = bot_messages(s, channel_id)
        return found if found and "".join(m["content"] for m in found) == text else None

    result: list[dict[str, Any]] = await s.discord.wait_for(done)
    return result


async def streaming(s: DiscordStack, asker: dict[str, Any], gate: Gate
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask in the channel (a thread opens), let the first delta out and return the question
    and the bot's message as first posted."""
    question = await s.discord.send_message(asker, s.channel, "How do refunds work?",
                                            mention_bot=True)
    gate.release(1)
    (posted,) = await s.discord.wait_for(lambda: bot_messages(s, question["id"]))
    return question, posted


def callback_of(s: DiscordStack, press: dict[str, Any]) -> Call:
    (call,) = [c for c in s.discord.calls_to("POST", CALLBACK)
               if c.path.startswith(f"/interactions/{press['id']}/")]
    return call


async def test_the_askers_stop_button_stops_a_slow_answer(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Refunds ", "take ", "five days."], gate=gate))
        ann = s.discord.user("ann")
        question, posted = await streaming(s, ann, gate)
        thread_id = question["id"]
        # While it is written the answer carries one Stop button naming the asker and the
        # question, on the post itself (no extra call).
        assert posted["content"] == "Refunds " + MARK
        (stop,) = buttons(posted)
        assert stop["custom_id"] == stop_custom_id(ann["id"], question["id"])
        assert stop["label"] == STOP_LABEL
        assert len(stop["custom_id"]) <= 100
        assert [c.method for c in s.discord.message_calls(thread_id)] == ["POST"]

        press = await s.discord.press(ann, s.discord.messages[posted["id"]], stop["custom_id"])
        final = "Refunds \n\n" + STOPPED
        (message,) = await wait_final(s, thread_id, final)
        assert message["id"] == posted["id"]
        assert message["components"] == []  # the final edit took the button away
        await s.chatbase.wait_for(lambda: s.chatbase.streams_aborted == 1)
        assert s.chatbase.streams_finished == 0
        # Acknowledged silently (a deferred update), no message of its own.
        assert callback_of(s, press).body["type"] == 6
        await s.adapter.wait_idle()
        assert gate.sent == 1  # nothing more was read after the stop

        # Feedback on the stopped answer still reaches Chatbase.
        await s.discord.react(ann, message, "👍")
        await s.chatbase.wait_for(lambda: len(s.chatbase.feedback_calls) == 1)
        (conversation_id,) = s.chatbase.conversations
        assert s.chatbase.feedback_calls[0].conversation_id == conversation_id
        assert s.chatbase.feedback_calls[0].feedback == "positive"

        # A follow-up continues the same conversation.
        thread = s.discord.channel(thread_id)
        assert thread is not None
        s.chatbase.script(Answer(text="Annual plans too."))
        await s.discord.send_message(ann, thread, "and annual plans?", mention_bot=True)
        await wait_final(s, thread_id, final + "Annual plans too.")
        assert s.chatbase.chat_calls[1].body["conversationId"] == conversation_id


async def test_someone_elses_press_is_refused_and_the_answer_finishes(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Refunds ", "take ", "five days."], gate=gate))
        ann, bob = s.discord.user("ann"), s.discord.user("bob")
        question, posted = await streaming(s, ann, gate)
        (stop,) = buttons(posted)

        press = await s.discord.press(bob, posted, stop["custom_id"])
        refused = await s.discord.wait_for(
            lambda: s.discord.interaction(press["id"]).response_type)
        # A message only bob sees, saying who may stop it.
        assert refused == 4
        body = callback_of(s, press).body
        assert body["data"]["content"] == ONLY_ASKER_MAY_STOP
        assert body["data"]["flags"] & 64
        assert body["data"]["allowed_mentions"] == NONE

        gate.open()
        (message,) = await wait_final(s, question["id"], "Refunds take five days.")
        assert message["components"] == []  # a finished answer has no Stop button
        await s.adapter.wait_idle()
        assert s.chatbase.streams_aborted == 0
        assert s.chatbase.streams_finished == 1


async def test_a_member_who_may_manage_messages_can_stop_it(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["One ", "two ", "three."], gate=gate))
        ann, mod = s.discord.user("ann"), s.discord.user("mod")
        question, posted = await streaming(s, ann, gate)
        (stop,) = buttons(posted)
        press = await s.discord.press(mod, posted, stop["custom_id"],
                                      permissions=EVERYONE_PERMISSIONS | MANAGE_MESSAGES)
        (message,) = await wait_final(s, question["id"], "One \n\n" + STOPPED)
        assert message["components"] == []
        assert callback_of(s, press).body["type"] == 6
        await s.chatbase.wait_for(lambda: s.chatbase.streams_aborted == 1)


async def test_a_press_after_the_answer_ended_is_acknowledged_quietly(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Done ", "now."], gate=gate))
        ann = s.discord.user("ann")
        question, posted = await streaming(s, ann, gate)
        (stop,) = buttons(posted)
        gate.open()
        await wait_final(s, question["id"], "Done now.")
        await s.adapter.wait_idle()
        # A press that raced the last edit: Discord sends the message as it is now, without
        # the button.
        assert s.discord.messages[posted["id"]]["components"] == []
        press = await s.discord.press(ann, s.discord.messages[posted["id"]], stop["custom_id"])
        await s.discord.wait_for(lambda: s.discord.interaction(press["id"]).response_type)
        await s.adapter.wait_idle()
        assert callback_of(s, press).body["type"] == 6
        assert [m["content"] for m in bot_messages(s, question["id"])] == ["Done now."]
        assert s.chatbase.streams_aborted == 0


async def test_with_feedback_buttons_the_finished_answer_swaps_stop_for_them(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix,
                             BRIDGE_DISCORD_FEEDBACK_BUTTONS="true") as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Slow ", "answer."], gate=gate))
        ann = s.discord.user("ann")
        question, posted = await streaming(s, ann, gate)
        assert [b["custom_id"] for b in buttons(posted)] == [
            stop_custom_id(ann["id"], question["id"])]
        gate.open()
        await s.discord.wait_for(
            lambda: [b.get("custom_id") for b in buttons(s.discord.messages[posted["id"]])]
            == [POSITIVE_ID, NEGATIVE_ID])
        assert s.discord.messages[posted["id"]]["content"] == "Slow answer."


async def test_a_part_sealed_for_a_continuation_loses_its_stop_button(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        first = "".join(f"Line {i} of a long answer.\n" for i in range(70))  # ~1,800 chars
        second = "".join(f"More {i} after the split.\n" for i in range(20))
        s.chatbase.script(Answer(deltas=[first, second, "The end."], gate=gate))
        ann = s.discord.user("ann")
        question, posted = await streaming(s, ann, gate)
        assert buttons(posted)
        gate.release(1)

        def two_parts() -> list[dict[str, Any]] | None:
            found = bot_messages(s, question["id"])
            return found if len(found) == 2 else None

        sealed, live = await s.discord.wait_for(two_parts)
        await s.discord.wait_for(lambda: s.discord.messages[sealed["id"]]["components"] == [])
        (stop,) = buttons(live)
        assert stop["custom_id"] == stop_custom_id(ann["id"], question["id"])
        gate.open()
        parts = await wait_final(s, question["id"], first + second + "The end.")
        assert [m["components"] for m in parts] == [[], []]


async def test_ask_answers_carry_the_stop_button_too(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Asked ", "and answered."], gate=gate))
        ann = s.discord.user("ann")
        command = await s.discord.slash(ann, s.channel, "ask", question="refunds?")
        gate.release(1)
        interaction = s.discord.interaction(command["id"])
        original = await s.discord.wait_for(
            lambda: (m := s.discord.messages.get(interaction.original_id or ""))
            and m["content"] == "Asked " + MARK and m)
        (stop,) = buttons(original)
        assert stop["custom_id"] == stop_custom_id(ann["id"], command["id"])
        await s.discord.press(ann, original, stop["custom_id"])
        await s.discord.wait_for(
            lambda: s.discord.messages[original["id"]]["content"] == "Asked \n\n" + STOPPED)
        assert s.discord.messages[original["id"]]["components"] == []
        await s.chatbase.wait_for(lambda: s.chatbase.streams_aborted == 1)


async def test_sources_are_listed_once_each_in_order_and_cannot_ping(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        s.chatbase.script(Answer(text="See the policy.", sources=[
            {"type": "source-url", "sourceId": "s1", "url": "https://example.com/refunds",
             "title": "Refund policy"},
            {"type": "source-url", "sourceId": "s2", "url": "https://example.com/all",
             "title": "@everyone read this"},
            {"type": "source-url", "sourceId": "s3", "url": "https://example.com/refunds",
             "title": "Refund policy"},
        ]))
        question = await s.discord.send_message(s.discord.user("ann"), s.channel, "refunds?",
                                                mention_bot=True)
        expected = ("See the policy.\n\n**Sources**\n"
                    "1. [Refund policy](https://example.com/refunds)\n"
                    "2. [@\u200beveryone read this](https://example.com/all)")
        (message,) = await wait_final(s, question["id"], expected)
        for call in s.discord.message_calls(question["id"]):
            assert call.body["allowed_mentions"] == NONE
        assert message["mention_everyone"] is False


async def test_sources_can_be_turned_off(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix, BRIDGE_SHOW_SOURCES="false") as s:
        s.chatbase.script(Answer(text="Just the answer.", sources=[
            {"type": "source-url", "sourceId": "s1", "url": "https://example.com/a",
             "title": "A page"},
        ]))
        question = await s.discord.send_message(s.discord.user("ann"), s.channel, "q?",
                                                mention_bot=True)
        await wait_final(s, question["id"], "Just the answer.")
        await s.adapter.wait_idle()
        assert [m["content"] for m in bot_messages(s, question["id"])] == ["Just the answer."]


async def test_a_press_reaching_a_restarted_bot_is_routed_by_its_custom_id(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Cut ", "short."], gate=gate))
        ann = s.discord.user("ann")
        _, posted = await streaming(s, ann, gate)
        (stop,) = buttons(posted)
        # The process restarts: the answer is cut off, a new client knows nothing of it.
        first = s.adapter
        await first.stop_intake()
        await first.close()
        s.adapters.remove(first)
        await s.start_adapter()
        shown = s.discord.messages[posted["id"]]["content"]

        press = await s.discord.press(ann, s.discord.messages[posted["id"]], stop["custom_id"])
        await s.discord.wait_for(lambda: s.discord.interaction(press["id"]).response_type)
        await s.adapter.wait_idle()
        assert callback_of(s, press).body["type"] == 6
        assert s.discord.messages[posted["id"]]["content"] == shown
