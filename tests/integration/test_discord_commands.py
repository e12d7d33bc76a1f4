"""Discord slash commands end to end: /ask deferred then rendered, /reset ephemeral."""

from __future__ import annotations

from typing import Any

from bridge.core.split import split_text
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.discord_rest import Call
from tests.fakes.discord_stack import DiscordStack, discord_stack

NONE = {"parse": []}
CALLBACK = "/interactions/{interaction_id}/{token}/callback"
WEBHOOK_EDIT = "/webhooks/{application_id}/{token}/messages/{message_id}"
FOLLOWUP = "/webhooks/{application_id}/{token}"
EPHEMERAL = 64


def callbacks(s: DiscordStack, interaction: dict[str, Any]) -> list[Call]:
    return [c for c in s.discord.calls_to("POST", CALLBACK)
            if c.path.startswith(f"/interactions/{interaction['id']}/")]


def original(s: DiscordStack, interaction: dict[str, Any]) -> dict[str, Any]:
    state = s.discord.interactions[interaction["token"]]
    assert state.original_id is not None
    return s.discord.messages[state.original_id]


async def reset_answer(s: DiscordStack, interaction: dict[str, Any]) -> str:
    """/reset's answer: acknowledged first with an ephemeral "thinking" response (before
    Redis is touched), then that response edited to say what happened."""
    (deferred,) = await s.discord.wait_for(lambda: callbacks(s, interaction))
    assert deferred.body["type"] == 5 and deferred.body["data"]["flags"] == EPHEMERAL
    text: str = await s.discord.wait_for(lambda: original(s, interaction)["content"])
    assert original(s, interaction)["flags"] & EPHEMERAL
    return text


async def test_commands_are_synced_at_start(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        names = sorted(c["name"] for c in s.discord.commands["global"])
        assert names == ["ask", "history", "reset"]
        ask = next(c for c in s.discord.commands["global"] if c["name"] == "ask")
        assert ask["options"][0]["name"] == "question" and ask["options"][0]["required"]


async def test_command_guilds_get_an_instant_guild_sync(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        await s.start_adapter(discord_command_guilds=[s.guild.id])
        assert "global" not in s.discord.commands
        names = sorted(c["name"] for c in s.discord.commands[s.guild.id])
        assert names == ["ask", "history", "reset"]


async def test_ask_is_deferred_then_rendered_in_the_response(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Slash ", "answer, ", "@everyone."], gate=gate))
        ann = s.discord.user("ann")
        interaction = await s.discord.slash(ann, s.channel, "ask", question="What is up?")
        # Acknowledged at once with "thinking", before Chatbase said anything.
        await s.discord.wait_for(lambda: callbacks(s, interaction))
        (deferred,) = callbacks(s, interaction)
        assert deferred.body["type"] == 5
        assert gate.sent == 0
        gate.open()
        await s.discord.wait_for(
            lambda: original(s, interaction)["content"] == "Slash answer, @everyone.")
        edits = s.discord.calls_to("PATCH", WEBHOOK_EDIT)
        assert edits and all(c.body["allowed_mentions"] == NONE for c in edits)
        assert all(c.path.endswith("/messages/@original") for c in edits)
        body = s.chatbase.chat_calls[0].body
        assert body["message"] == "What is up?"
        assert body["userId"] == f"discord.{ann['id']}"
        assert s.discord.calls_to("POST", "/channels/{channel_id}/messages/{message_id}/threads"
                                  ) == []


async def test_a_long_ask_answer_continues_in_follow_ups(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        answer = "".join(f"Line {i} of a long slash answer.\n" for i in range(150))
        s.chatbase.script(Answer(text=answer))
        interaction = await s.discord.slash(s.discord.user("ann"), s.channel, "ask",
                                            question="long please")
        state = s.discord.interactions[interaction["token"]]
        expected = [p.text for p in split_text(answer, 2000 - len(" ▌"))]
        assert len(expected) >= 3

        def shown() -> list[str]:
            ids = [state.original_id, *state.followups] if state.original_id else []
            return [s.discord.messages[i]["content"] for i in ids if i in s.discord.messages]

        await s.discord.wait_for(lambda: shown() == expected)
        posts = s.discord.calls_to("POST", FOLLOWUP)
        assert posts and all(c.body["allowed_mentions"] == NONE for c in posts)


async def test_reset_forgets_the_conversation_and_answers_ephemerally(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann = s.discord.user("ann")
        s.chatbase.script(Answer(text="One."), Answer(text="Two."), Answer(text="Three."))
        for expected in ("One.", "Two."):
            asked = await s.discord.slash(ann, s.channel, "ask", question="again")
            await s.discord.wait_for(lambda a=asked, e=expected: s.discord.interactions[
                a["token"]].original_id and original(s, a)["content"] == e)
            await s.adapter.wait_idle()
        assert "conversationId" in s.chatbase.chat_calls[1].body

        reset = await s.discord.slash(ann, s.channel, "reset")
        assert (await reset_answer(s, reset)).startswith("Started a new conversation")

        asked = await s.discord.slash(ann, s.channel, "ask", question="fresh")
        await s.discord.wait_for(lambda: s.discord.interactions[asked["token"]].original_id
                                 and original(s, asked)["content"] == "Three.")
        third = s.chatbase.chat_calls[2].body
        assert "conversationId" not in third and third["userId"] == f"discord.{ann['id']}"


async def test_a_mention_thread_and_reset_inside_it(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        ann = s.discord.user("ann")
        s.chatbase.script(Answer(text="In the thread."))
        question = await s.discord.send_message(ann, s.channel, "start", mention_bot=True)
        thread = await s.discord.wait_for(lambda: s.discord.channel(question["id"]))
        await s.discord.wait_for(lambda: any(
            m["content"] == "In the thread." for m in s.discord.messages_in(thread.id)))
        await s.adapter.wait_idle()
        # /reset in the thread forgets that thread's conversation, not some other one.
        reset = await s.discord.slash(ann, thread, "reset")
        assert (await reset_answer(s, reset)).startswith("Started a new conversation")
        reset_channel = await s.discord.slash(ann, s.channel, "reset")
        assert (await reset_answer(s, reset_channel)).startswith("There was no conversation")


async def test_ask_outside_the_allowed_channels_or_while_stopping_is_refused_privately(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        allowed = s.discord.add_channel(s.guild, "allowed")
        await s.start_adapter(discord_allowed_channels=[allowed.id])
        ann = s.discord.user("ann")
        elsewhere = await s.discord.slash(ann, s.channel, "ask", question="here?")
        (refused,) = await s.discord.wait_for(lambda: callbacks(s, elsewhere))
        assert refused.body["type"] == 4 and refused.body["data"]["flags"] == EPHEMERAL
        assert "does not answer in this channel" in refused.body["data"]["content"]

        await s.adapter.stop_intake()
        stopping = await s.discord.slash(ann, allowed, "ask", question="now?")
        (later,) = await s.discord.wait_for(lambda: callbacks(s, stopping))
        assert later.body["data"]["flags"] == EPHEMERAL
        assert "restarting" in later.body["data"]["content"]
        assert s.chatbase.chat_calls == []
