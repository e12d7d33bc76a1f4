"""BRIDGE_ROUTES on Discord, end to end: gateway events in, the real service and Redis, the fake
Chatbase serving two agents with their own keys, answers out over REST.

A route names guild and channel ids, which the settings need before the stack starts, so the
routed server is made here with ids chosen up front and added to the fake Discord before the
bot connects (the stack's own server, made after the settings, is never routed)."""

from __future__ import annotations

import json

import pytest

from tests.fakes import secrets
from tests.fakes.chatbase import Answer, RecordedRequest
from tests.fakes.discord_rest import PUBLIC_THREAD, Channel, Guild, snowflake
from tests.fakes.discord_stack import DiscordStack, discord_stack

DEFAULT = "agent-test"
AGENT_B, KEY_B, KEY_B_ENV = "agent-b", "sk-routing-discord-b-key", "CHATBASE_KEY_B"


@pytest.fixture(autouse=True)
def agent_b_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_B_ENV, KEY_B)
    secrets.register(KEY_B)


def to_b(place: str) -> str:
    return json.dumps({place: {"agent": AGENT_B, "api_key_env": KEY_B_ENV}})


def add_guild(s: DiscordStack, guild_id: str, *channels: Channel) -> Guild:
    guild = Guild(id=guild_id, name="routed guild")
    s.discord.guilds[guild.id] = guild
    for channel in channels:
        guild.channels[channel.id] = channel
    return guild


def bot_text(s: DiscordStack, channel_id: str) -> str:
    return "".join(m["content"] for m in s.discord.messages_in(channel_id)
                   if m["author"]["id"] == s.discord.bot_id)


async def wait_text(s: DiscordStack, channel_id: str, text: str) -> None:
    """Wait until the bot's messages in ``channel_id`` read exactly ``text``."""
    await s.discord.wait_for(lambda: bot_text(s, channel_id) == text)


def only(calls: list[RecordedRequest]) -> RecordedRequest:
    [call] = calls
    return call


async def test_a_routed_server_reaches_its_agent(redis_url: str, redis_prefix: str) -> None:
    guild_id, channel_id = snowflake(), snowflake()
    async with discord_stack(redis_url, redis_prefix, start=False,
                             BRIDGE_ROUTES=to_b(f"discord:{guild_id}")) as s:
        s.chatbase.add_agent(AGENT_B, api_key=KEY_B)
        routed = Channel(id=channel_id, guild_id=guild_id, name="help")
        add_guild(s, guild_id, routed)
        await s.start_adapter()
        ann = s.discord.user("ann")

        s.chatbase.script(Answer(text="From agent B."))
        question = await s.discord.send_message(ann, routed, "routed?", mention_bot=True)
        await wait_text(s, question["id"], "From agent B.")
        chat = only(s.chatbase.chat_calls)
        assert chat.path == f"/agents/{AGENT_B}/chat" and chat.api_key == KEY_B
        assert chat.body["message"] == "routed?"

        # The stack's own server has no route: the default agent answers there.
        s.chatbase.script(Answer(text="From the default agent."))
        other = await s.discord.send_message(ann, s.channel, "default?", mention_bot=True)
        await wait_text(s, other["id"], "From the default agent.")
        default = only(s.chatbase.calls("chat", agent=DEFAULT))
        assert default.api_key == s.chatbase.api_key and default.body["message"] == "default?"
        assert len(s.chatbase.calls("chat", agent=AGENT_B)) == 1


async def test_a_thread_follows_its_routed_parent_channel(
    redis_url: str, redis_prefix: str
) -> None:
    guild_id, routed_id, plain_id, thread_id = (snowflake() for _ in range(4))
    async with discord_stack(redis_url, redis_prefix, start=False,
                             BRIDGE_ROUTES=to_b(f"discord:{guild_id}/{routed_id}"),
                             BRIDGE_DISCORD_MESSAGE_CONTENT="true") as s:
        s.chatbase.add_agent(AGENT_B, api_key=KEY_B)
        routed = Channel(id=routed_id, guild_id=guild_id, name="routed")
        plain = Channel(id=plain_id, guild_id=guild_id, name="plain")
        # A thread people opened in the routed channel before the bot was asked there.
        theirs = Channel(id=thread_id, guild_id=guild_id, name="their thread",
                         type=PUBLIC_THREAD, parent_id=routed_id, owner_id=snowflake())
        add_guild(s, guild_id, routed, plain, theirs)
        await s.start_adapter()
        ann, bob = s.discord.user("ann"), s.discord.user("bob")

        # A mention in the routed channel opens the bot's thread; follow-ups there stay.
        s.chatbase.script(Answer(text="B, first."))
        question = await s.discord.send_message(ann, routed, "first?", mention_bot=True)
        await wait_text(s, question["id"], "B, first.")
        opened = s.discord.channel(question["id"])
        assert opened is not None and opened.parent_id == routed_id
        s.chatbase.script(Answer(text=" B, again."))
        await s.discord.send_message(ann, opened, "and then?")
        await wait_text(s, opened.id, "B, first. B, again.")
        first, follow = s.chatbase.calls("chat", agent=AGENT_B)
        [conversation] = s.chatbase.conversations.values()
        assert conversation.agent_id == AGENT_B
        assert follow.body["conversationId"] == conversation.id
        assert {first.api_key, follow.api_key} == {KEY_B}

        # A mention in a thread the bot did not open follows the thread's parent too.
        s.chatbase.script(Answer(text="B in their thread."))
        await s.discord.send_message(bob, theirs, "me too?", mention_bot=True)
        await wait_text(s, theirs.id, "B in their thread.")
        in_theirs = s.chatbase.chat_calls[-1]
        assert in_theirs.agent_id == AGENT_B and in_theirs.body["message"] == "me too?"
        assert "conversationId" not in in_theirs.body

        # Another channel of the same server is not routed: the default agent answers.
        s.chatbase.script(Answer(text="Default here."))
        elsewhere = await s.discord.send_message(bob, plain, "here?", mention_bot=True)
        await wait_text(s, elsewhere["id"], "Default here.")
        assert only(s.chatbase.calls("chat", agent=DEFAULT)).body["message"] == "here?"
        assert len(s.chatbase.calls("chat", agent=AGENT_B)) == 3


async def test_discord_dm_routes_direct_messages(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix, BRIDGE_ROUTES=to_b("discord:dm")) as s:
        s.chatbase.add_agent(AGENT_B, api_key=KEY_B)
        carol = s.discord.user("carol")
        dm = s.discord.add_dm(carol["id"])
        s.chatbase.script(Answer(text="Private, from B."))
        await s.discord.send_message(carol, dm, "hello")
        await wait_text(s, dm.id, "Private, from B.")
        s.chatbase.script(Answer(text=" Still B."))
        await s.discord.send_message(carol, dm, "again")
        await wait_text(s, dm.id, "Private, from B. Still B.")
        first, again = s.chatbase.calls("chat", agent=AGENT_B)
        assert {first.api_key, again.api_key} == {KEY_B}
        assert first.body["userId"] == f"discord.{carol['id']}"
        assert again.body["conversationId"] == next(iter(s.chatbase.conversations))

        # A server channel is not a DM: the default agent answers there.
        s.chatbase.script(Answer(text="Public, default."))
        question = await s.discord.send_message(carol, s.channel, "in public?",
                                                mention_bot=True)
        await wait_text(s, question["id"], "Public, default.")
        assert only(s.chatbase.calls("chat", agent=DEFAULT)).body["message"] == "in public?"
