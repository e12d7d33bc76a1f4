"""Several agents, black-box: ``chatbase-bridge run`` in Slack HTTP mode as a real process,
with BRIDGE_ROUTES sending one channel to a second agent of the fake Chatbase."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.fakes.chatbase import Answer, FakeChatbase
from tests.fakes.slack import FakeSlack, event_envelope, mention_event, reaction_event
from tests.integration.cli_process import run_cli
from tests.reliability.processes import Bridge, bridge_env, deliver

SECOND = "agent-second"


def _agent_of(path: str) -> str:
    return path.split("/agents/", 1)[1].split("/", 1)[0]


async def test_a_routed_channel_reaches_its_agent_and_everything_follows_it(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase() as chatbase, FakeSlack() as slack, aiohttp.ClientSession() as s:
        chatbase.add_agent(SECOND)
        env = bridge_env(tmp_path, chatbase, slack, redis_url, redis_prefix,
                         BRIDGE_ROUTES=json.dumps({"slack:T0TEAM/C0HELP": SECOND}))
        checked = await run_cli("check", env=env, cwd=tmp_path)
        assert f"agent {chatbase.agent_id} answers" in checked.line("chatbase")
        assert f"agent {SECOND} answers" in checked.line(f"chatbase:{SECOND}")
        bridge = await Bridge(env, tmp_path).start()
        try:
            asks = [("C0HELP", "1700000001.000100", "routed"),
                    ("C0CHAN", "1700000002.000100", "default")]
            for channel, ts, text in asks:
                chatbase.script(Answer(text=f"answer: {text}"))
                assert await deliver(s, bridge, slack, event_envelope(
                    mention_event(text=f"<@UBOT> {text}", ts=ts, channel=channel))) == 200
                await slack.wait_for(lambda c=channel, t=ts: any(
                    m.text.startswith("answer:") for m in slack.thread(c, t)))
            chats = chatbase.chat_calls
            assert [(c.body["message"], _agent_of(c.path)) for c in chats] == [
                ("routed", SECOND), ("default", chatbase.agent_id)]
            # A follow-up in the routed thread stays with its agent and conversation.
            chatbase.script(Answer(text="answer: again"))
            assert await deliver(s, bridge, slack, event_envelope(mention_event(
                text="<@UBOT> again", ts="1700000003.000100", channel="C0HELP",
                thread_ts="1700000001.000100"))) == 200
            await chatbase.wait_for(lambda: len(chatbase.chat_calls) == 3, within=30)
            follow = chatbase.chat_calls[-1]
            assert _agent_of(follow.path) == SECOND
            first = [c for c in chatbase.conversations.values()
                     if (c.agent_id or chatbase.agent_id) == SECOND]
            assert [c.id for c in first] == [follow.body["conversationId"]]
            # 👍 on the routed answer: feedback under the second agent.
            [routed] = [m for m in slack.thread("C0HELP", "1700000001.000100")
                        if m.text == "answer: routed"]
            assert await deliver(s, bridge, slack, event_envelope(reaction_event(
                reaction="+1", channel="C0HELP", ts=routed.ts))) == 200
            await chatbase.wait_for(lambda: bool(chatbase.feedback_calls), within=30)
            [feedback] = chatbase.calls("feedback")
            assert _agent_of(feedback.path) == SECOND
        finally:
            assert await bridge.stop() == 0


async def test_a_malformed_route_is_one_plain_error(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase() as chatbase, FakeSlack() as slack:
        env = bridge_env(tmp_path, chatbase, slack, redis_url, redis_prefix,
                         BRIDGE_ROUTES='{"teams:T0TEAM": "agent-x"}')
        done = await run_cli("run", env=env, cwd=tmp_path)
    assert done.status == 2
    [line] = [x for x in done.err.splitlines() if x.strip()][-1:]
    assert line.startswith("error: ") and "BRIDGE_ROUTES" in line
    assert "Traceback" not in done.err
