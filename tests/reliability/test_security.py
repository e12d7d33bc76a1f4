"""Security properties end to end: Slack request signing on the HTTP endpoint, model text that
can never ping on either platform, allowlists, the per-user quota under a burst, and
pseudonymous Chatbase userIds as Chatbase receives them. (No secret in any log line is
checked for every test of the suite by ``tests/conftest.py``.)"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any
from urllib.parse import urlencode

from adapters.slack.adapter import RESET_NOT_HERE
from bridge.app.settings import ConversationScope
from bridge.core import notices
from bridge.core.identity import place_key
from bridge.core.models import Place, Platform
from tests.fakes.chatbase import Answer, FakeChatbase, StreamFault
from tests.fakes.discord_stack import DiscordStack, discord_stack
from tests.fakes.slack import (
    block_action,
    event_envelope,
    mention_event,
    message_event,
    reaction_event,
    slash_command,
)
from tests.reliability.rig import recording, rig
from tests.reliability.slack_rig import slack_rig

TS = "1700000001.000100"
NASTY = ("Hey <!channel> <!here> <!everyone> @everyone @here <@U0BOSS> <@&123456789012345678> "
         "<@!123456789012345678> <#C0GEN> <!subteam^S1|@team> & <https://evil.test|click>")


# --------------------------------------------------------------------------- Slack signing


async def test_forged_tampered_replayed_and_stale_slack_requests(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_rig(redis_url, redis_prefix) as r:
        # A conversation exists, so a forged reset or button would have something to hit.
        r.chatbase.script(Answer(text="The real answer."))
        await r.deliver(event_envelope(message_event(text="hello", ts=TS)))
        await r.idle()
        (reply,) = r.slack.thread("D0DM", None)
        chats = len(r.chatbase.chat_calls)

        wanted = json.dumps(event_envelope(message_event(text="secret plan zebra",
                                                         ts="1700000002.000100")))
        harmless = json.dumps(event_envelope(message_event(text="hi",
                                                           ts="1700000003.000100")))
        now = int(time.time())
        signed = r.slack.signed_headers(harmless)
        refused = []
        with recording() as logs:
            # The signature of another body.
            refused.append(await r.post(wanted, headers=signed, sign=False))
            # Signed by someone who does not know the secret.
            refused.append(await r.post(wanted, secret="guessed-signing-secret"))
            # Stale, from the future, not a number, another scheme, empty.
            refused.append(await r.post(wanted, timestamp=now - 5 * 60 - 30))
            refused.append(await r.post(wanted, timestamp=now + 5 * 60 + 30))
            for bad in ({"x-slack-request-timestamp": "soon"},
                        {"x-slack-signature": "v1=" + signed["x-slack-signature"][3:]},
                        {"x-slack-signature": ""}):
                refused.append(await r.post(wanted, headers=bad))
            # Forged interactivity and slash commands: no feedback, no reset.
            press = block_action(value="negative", channel="D0DM", message_ts=reply.ts)
            refused.append(await r.post(urlencode({"payload": json.dumps(press)}), sign=False,
                                        content_type="application/x-www-form-urlencoded"))
            refused.append(await r.post(urlencode(slash_command(channel="D0DM")),
                                        secret="guessed-signing-secret",
                                        content_type="application/x-www-form-urlencoded"))
            await r.idle()
        assert [d.status for d in refused] == [401] * len(refused)
        assert len(r.chatbase.chat_calls) == chats and r.chatbase.feedback_calls == []
        place = Place(platform=Platform.SLACK, workspace="T0TEAM", channel="D0DM", is_dm=True)
        key = place_key(place, "U0ASKER", scope=ConversationScope.USER)
        assert await r.replicas[0].store.has_conversation(key)
        assert logs.find("refused a Slack request", level=logging.INFO)
        assert not [line for line in logs.lines(logging.INFO) if "zebra" in line]

        # The same signed request sent again within its five minutes (a replay) is valid
        # on its face; it is still answered only once.
        replay = r.slack.signed_headers(harmless)
        first = await r.post(harmless, headers=replay, sign=False)
        again = await r.post(harmless, headers=replay, sign=False)
        await r.idle()
        assert (first.status, again.status) == (200, 200)
        assert len(r.chatbase.chat_calls) == chats + 1


# --------------------------------------------------------------------------- no pings


async def test_model_text_cannot_ping_on_slack_in_any_reply_shape(
    redis_url: str, redis_prefix: str
) -> None:
    long = "\n\n".join(f"{NASTY} paragraph {i} " + "filler words " * 60 for i in range(12))
    async with slack_rig(redis_url, redis_prefix) as r:
        # Streamed in a thread, long enough to continue in new messages, then cut off.
        r.chatbase.script(Answer(text=long + " unfinished", fault=StreamFault.DISCONNECT,
                                 fault_after=len(long.split(" "))),
                          Answer(text=NASTY), Answer(text=NASTY + " again"))
        await r.deliver(event_envelope(mention_event(text="<@UBOT> long", ts=TS)))
        await r.idle()
        # Posted and updated (a top-level DM), then regenerated in place.
        await r.deliver(event_envelope(message_event(text="short", ts="1700000002.000100")))
        await r.idle()
        (dm,) = r.slack.thread("D0DM", None)
        await r.deliver(event_envelope(reaction_event(reaction="arrows_counterclockwise",
                                                      channel="D0DM", ts=dm.ts)))
        await r.idle()
        parts = r.slack.thread_texts("C0CHAN", TS)
        assert len(parts) >= 2 and "".join(parts).startswith(long[:2000])
        assert parts[-1].endswith(notices.CUT_OFF.format(
            reason="the connection to the agent broke"))
        assert r.slack.thread_texts("D0DM", None) == [NASTY + " again"]
        assert r.slack.live_tokens() == []
        # Nothing sent in any call could be a live token either (history covers updates).
        for call in r.slack.calls:
            sent = json.dumps(call.args)
            assert "<!channel>" not in sent and "<@U0BOSS>" not in sent, call.method


def discord_writes(s: DiscordStack) -> list[Any]:
    return [c for c in s.discord.calls if c.method in ("POST", "PATCH")
            and (c.template.startswith("/channels/{channel_id}/messages")
                 or c.template.startswith("/webhooks/"))
            and not c.template.endswith("/threads") and isinstance(c.body, dict)
            and "content" in c.body]


async def test_model_text_cannot_ping_on_discord_in_any_reply_shape(
    redis_url: str, redis_prefix: str
) -> None:
    long = "\n\n".join(f"{NASTY} part {i} " + "words " * 50 for i in range(10))
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        inline = s.discord.add_channel(s.guild, "no-threads", threads_allowed=False)
        await s.start_adapter()
        ann = s.discord.user("ann")
        s.chatbase.script(Answer(text=long + " cut", fault=StreamFault.DISCONNECT,
                                 fault_after=len(long.split(" "))),
                          Answer(text=NASTY), Answer(text=NASTY + " regenerated"),
                          Answer(text=NASTY + " via slash"))
        await s.discord.send_message(ann, inline, "long one", mention_bot=True)
        await s.chatbase.wait_requests(1, endpoint="chat")
        await s.adapter.wait_idle()
        question = await s.discord.send_message(ann, s.channel, "short", mention_bot=True)
        await s.discord.wait_for(lambda: any(
            m["content"] == NASTY for m in s.discord.messages_in(question["id"])))
        await s.adapter.wait_idle()
        answer = next(m for m in s.discord.messages_in(question["id"]) if m["content"] == NASTY)
        await s.discord.react(ann, answer, "🔄")
        await s.discord.wait_for(
            lambda: s.discord.messages[answer["id"]]["content"] == NASTY + " regenerated")
        await s.discord.slash(ann, s.channel, "ask", question="and now?")
        await s.discord.wait_for(lambda: any(
            c.body.get("content") == NASTY + " via slash" for c in discord_writes(s)))
        await s.adapter.wait_idle()

        writes = discord_writes(s)
        assert len(writes) >= 6
        for call in writes:
            mentions = call.body.get("allowed_mentions")
            assert mentions is not None and mentions.get("parse") == [], call.template
            assert not mentions.get("users") and not mentions.get("roles")
            assert mentions.get("replied_user") in (None, False)
        shown = "".join(m["content"] for m in s.discord.messages_in(inline.id)
                        if m["author"]["id"] == s.discord.bot_id)
        assert shown.startswith(long[:1500]) and "cut off" in shown


# --------------------------------------------------------------------------- allowlists


async def test_slack_allowed_workspaces_hold_for_messages_reactions_and_reset(
    redis_url: str, redis_prefix: str
) -> None:
    async with slack_rig(redis_url, redis_prefix, BRIDGE_SLACK_ALLOWED_TEAMS="T0TEAM") as r:
        outside = event_envelope(mention_event(text="<@UBOT> let me in", ts=TS,
                                               team="T0OTHER"), team_id="T0OTHER")
        await r.deliver(outside)
        await r.deliver(event_envelope(message_event(text="dm from outside", ts=TS,
                                                     team="T0OTHER"), team_id="T0OTHER"))
        inside = event_envelope(mention_event(text="<@UBOT> hello", ts="1700000002.000100"))
        await r.deliver(inside)
        await r.idle()
        assert [c.body["message"] for c in r.chatbase.chat_calls] == ["hello"]
        reset = await r.post(urlencode(slash_command(channel="D0DM", team_id="T0OTHER")),
                             content_type="application/x-www-form-urlencoded")
        assert reset.json()["text"] == RESET_NOT_HERE


async def test_discord_allowed_guilds_and_channels_hold(
    redis_url: str, redis_prefix: str
) -> None:
    async with discord_stack(redis_url, redis_prefix, start=False) as s:
        other_guild = s.discord.add_guild("elsewhere")
        foreign = s.discord.add_channel(other_guild, "general")
        closed = s.discord.add_channel(s.guild, "staff-only")
        await s.start_adapter(discord_allowed_guilds=[s.guild.id],
                              discord_allowed_channels=[s.channel.id])
        ann = s.discord.user("ann")
        await s.discord.send_message(ann, foreign, "from another server", mention_bot=True)
        await s.discord.send_message(ann, closed, "from a closed channel", mention_bot=True)
        question = await s.discord.send_message(ann, s.channel, "allowed", mention_bot=True)
        await s.discord.wait_for(lambda: any(m["author"]["id"] == s.discord.bot_id
                                             for m in s.discord.messages_in(question["id"])))
        # A follow-up with a new mention inside the answer's thread: allowed by its parent.
        thread = s.discord.channel(question["id"])
        assert thread is not None
        await s.discord.send_message(ann, thread, "in the thread", mention_bot=True)
        await s.chatbase.wait_for(lambda: len(s.chatbase.chat_calls) == 2)
        await s.adapter.wait_idle()
        assert [c.body["message"] for c in s.chatbase.chat_calls] == ["allowed", "in the thread"]


# --------------------------------------------------------------------------- quota


async def test_per_user_quota_holds_under_a_concurrent_burst_on_two_replicas(
    redis_url: str, redis_prefix: str
) -> None:
    async with rig(redis_url, redis_prefix, replicas=2, BRIDGE_USER_QUOTA=5) as r:
        burst = [r.message(f"burst {n}", user="U1", reply_thread=f"1000.{n}")
                 for n in range(20)]
        sinks = [r.sink() for _ in burst]
        await asyncio.gather(*(r.replicas[n % 2].service.handle_message(m, s)
                               for n, (m, s) in enumerate(zip(burst, sinks, strict=True))))
        answered = [s.joined() for s in sinks if s.joined().startswith("Echo: burst")]
        refused = [s.joined() for s in sinks if "limit of 5 questions" in s.joined()]
        assert len(answered) == 5 and len(refused) == 15
        assert len(r.fake.chat_calls) == 5
        other = r.sink()
        await r.service.handle_message(r.message("me too", user="U2"), other)
        assert other.joined() == "Echo: me too"


# --------------------------------------------------------------------------- pseudonyms


def _raw_ids_on_the_wire(fake: FakeChatbase, ids: list[str]) -> list[str]:
    seen = []
    for request in fake.requests:
        wire = " ".join([request.path, json.dumps(dict(request.query)),
                         json.dumps(request.body)]).lower()
        seen += [i for i in ids if i.lower() in wire]
    return seen


async def test_pseudonymous_user_ids_never_carry_platform_ids(
    redis_url: str, redis_prefix: str
) -> None:
    secret = {"BRIDGE_USER_ID_SECRET": "pseudonym-secret-for-tests"}
    pattern = re.compile(r"^(slack|discord)\._h\.[0-9a-f]{64}$")
    async with slack_rig(redis_url, redis_prefix, fake={"enterprise_id": "E0ORG"},
                         **secret) as r:
        await r.deliver(event_envelope(mention_event(text="<@UBOT> hi", ts=TS,
                                                     user="U0ALICE"), enterprise_id="E0ORG"))
        await r.deliver(event_envelope(message_event(text="dm", ts=TS, user="U0BOB",
                                                     channel="D0BOB")))
        await r.idle()
        ids = [c.body["userId"] for c in r.chatbase.chat_calls]
        assert len(ids) == 2 and all(pattern.match(i) for i in ids) and ids[0] != ids[1]
        assert _raw_ids_on_the_wire(r.chatbase, ["U0ALICE", "U0BOB", "E0ORG", "T0TEAM"]) == []
        metrics = r.replicas[0].metrics.render().decode()
        assert not [i for i in ("U0ALICE", "U0BOB", "E0ORG", "D0BOB") if i in metrics]
    async with discord_stack(redis_url, redis_prefix + "d:", **secret) as s:
        ann = s.discord.user("ann")
        question = await s.discord.send_message(ann, s.channel, "hi", mention_bot=True)
        await s.chatbase.wait_for(lambda: bool(s.chatbase.chat_calls))
        await s.discord.wait_for(lambda: any(m["author"]["id"] == s.discord.bot_id
                                             for m in s.discord.messages_in(question["id"])))
        await s.adapter.wait_idle()
        (user_id,) = [c.body["userId"] for c in s.chatbase.chat_calls]
        assert pattern.match(user_id)
        assert _raw_ids_on_the_wire(s.chatbase, [ann["id"], s.guild.id]) == []
