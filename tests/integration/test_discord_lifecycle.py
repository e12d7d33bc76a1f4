"""Discord adapter lifecycle: start-up errors in plain words, shards, twins, shutdown."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import yarl
from pydantic import SecretStr

from bridge.core import notices
from bridge.core.errors import ConfigError
from tests.fakes.chatbase import Answer, Gate
from tests.fakes.discord_rest import BUILT_IN_GATEWAY_HOST
from tests.fakes.discord_stack import discord_stack

MESSAGE_CONTENT = 1 << 15


async def test_start_connects_with_the_needed_intents_and_closes(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        adapter = s.adapter
        assert adapter.is_ready()
        assert adapter.name == "discord"
        (identify,) = s.discord.gateway.identifies
        intents = identify["intents"]
        guilds, guild_messages, guild_reactions, dm_messages, dm_reactions = (
            1 << 0, 1 << 9, 1 << 10, 1 << 12, 1 << 13)
        for bit in (guilds, guild_messages, guild_reactions, dm_messages, dm_reactions):
            assert intents & bit
        assert not intents & MESSAGE_CONTENT
        assert identify["token"] == s.discord.token
        # The gateway address came from the fake's GET /gateway/bot.
        assert s.discord.gateway.sessions[0].host == yarl.URL(s.discord.gateway.url).host
        await adapter.stop_intake()
        await adapter.close()
        assert not adapter.is_ready()
        await s.discord.wait_for(lambda: not s.discord.gateway.live_sessions())


async def test_a_refused_token_is_a_config_error_naming_it(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
            await s.start_adapter(discord_bot_token=SecretStr("wrong-token"))


async def test_a_refused_message_content_intent_says_what_to_do(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False,
                             BRIDGE_DISCORD_MESSAGE_CONTENT="true") as s:
        s.discord.gateway.forbid_privileged()
        with pytest.raises(ConfigError) as refused:
            await s.start_adapter()
        assert "Message Content" in str(refused.value)
        assert "BRIDGE_DISCORD_MESSAGE_CONTENT" in str(refused.value)
        assert s.discord.gateway.closed_codes == [4014]


async def test_shard_settings(redis_url: str, redis_prefix: str) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        with pytest.raises(ConfigError, match="BRIDGE_DISCORD_SHARD_COUNT"):
            await s.start_adapter(discord_shard_ids=[0])
        with pytest.raises(ConfigError, match="outside"):
            await s.start_adapter(discord_shard_ids=[2], discord_shard_count=2)
        # With a given count discord.py dials its built-in gateway (no GET /gateway/bot).
        await s.start_adapter(discord_shard_ids=[0], discord_shard_count=1)
        assert s.discord.gateway.identifies[-1]["shard"] == [0, 1]
        assert s.discord.gateway.sessions[-1].host == BUILT_IN_GATEWAY_HOST


async def test_two_processes_on_the_same_shard_still_answer_once(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        await s.start_adapter()  # a mistaken second process with the same shards
        assert len(s.discord.gateway.live_sessions()) == 2
        s.chatbase.script(Answer(text="Only once."))
        question = await s.discord.send_message(s.discord.user("ann"), s.channel, "hello?",
                                                mention_bot=True)
        await s.discord.wait_for(lambda: any(
            m["content"] == "Only once." for m in s.discord.messages_in(question["id"])))
        for adapter in s.adapters:
            await adapter.wait_idle()
        assert len(s.chatbase.chat_calls) == 1
        assert len(s.discord.message_calls(question["id"])) >= 1
        assert [m["content"] for m in s.discord.messages_in(question["id"])] == ["Only once."]
        assert len(s.discord.calls_to(
            "POST", "/channels/{channel_id}/messages/{message_id}/threads")) == 1


async def test_shutdown_mid_answer_marks_it_cut_off_before_the_gateway_closes(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix) as s:
        gate = Gate()
        s.chatbase.script(Answer(deltas=["Half ", "an ", "answer ", "never finished"],
                                 gate=gate))
        ann = s.discord.user("ann")
        question = await s.discord.send_message(ann, s.channel, "long one", mention_bot=True)
        thread_id = question["id"]
        gate.release(2)
        await s.discord.wait_for(lambda: any(
            m["content"].startswith("Half an") for m in s.discord.messages_in(thread_id)))

        # What the runtime does on SIGTERM: stop intake, drain (cutting off), then close.
        adapter = s.adapter
        await adapter.stop_intake()
        client = adapter.client
        assert client is not None
        seen = asyncio.create_task(
            client.wait_for("message", check=lambda m: m.content.endswith("too late")))
        await s.discord.send_message(ann, s.channel, "too late", mention_bot=True)
        await asyncio.wait_for(seen, 5)  # it reached the bot...
        assert adapter.in_flight == 1  # ...which still handles only the first answer
        await s.service.drain(0.2)
        (message,) = s.discord.messages_in(thread_id)
        cut = notices.CUT_OFF.format(reason=notices.SHUTTING_DOWN)
        assert message["content"] == "Half an \n\n" + cut
        assert s.discord.gateway.live_sessions()  # the answer was finished first
        await adapter.close()
        assert not adapter.is_ready()
        # ...and was not taken after stop_intake.
        assert len(s.chatbase.chat_calls) == 1
        assert len(s.discord.calls_to(
            "POST", "/channels/{channel_id}/messages/{message_id}/threads")) == 1


async def test_a_429_from_discord_is_waited_out_and_counted(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        closed = s.discord.add_channel(s.guild, "shared", threads_allowed=False)
        await s.start_adapter()
        # Another client (another bot on the same token, a script) used the channel's
        # whole window: the bridge's first post meets a 429 it knew nothing about.
        async with aiohttp.ClientSession() as session:
            for _ in range(s.discord.rate_limit):
                async with session.post(
                    f"{s.discord.api_base}/channels/{closed.id}/messages",
                    json={"content": "noise"},
                    headers={"Authorization": f"Bot {s.discord.token}"},
                ) as response:
                    assert response.status == 200
        s.chatbase.script(Answer(text="Made it."))
        await s.discord.send_message(s.discord.user("ann"), closed, "q", mention_bot=True)
        await s.discord.wait_for(lambda: any(
            m["content"] == "Made it." for m in s.discord.messages_in(closed.id)))
        assert len(s.discord.rate_limited) >= 1
        assert s.rate_limited_count() == len(s.discord.rate_limited)


async def test_another_api_base_is_refused_rather_than_bypassed(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        with pytest.raises(ConfigError, match="DISCORD_API_BASE"):
            await s.start_adapter(discord_api_base=s.discord.api_base)
        assert s.discord.calls == []
