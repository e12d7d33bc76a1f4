"""The history as a person meets it, black-box: ``chatbase-bridge run`` in Slack HTTP mode
as a real process, against the fake Chatbase and fake Slack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from adapters.slack import home
from tests.fakes.chatbase import Answer, FakeChatbase
from tests.fakes.slack import (
    FakeSlack,
    event_envelope,
    home_action,
    home_opened_event,
    mention_event,
    message_event,
)
from tests.reliability.processes import Bridge, bridge_env, deliver


async def _interact(session: aiohttp.ClientSession, bridge: Bridge, slack: FakeSlack,
                    payload: dict[str, Any]) -> None:
    body = urlencode({"payload": json.dumps(payload)})
    headers = {**slack.signed_headers(body),
               "content-type": "application/x-www-form-urlencoded"}
    async with session.post(f"{bridge.url}/slack/events", data=body.encode(),
                            headers=headers) as response:
        assert response.status == 200


async def test_home_tab_lists_two_conversations_and_continues_the_older(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeChatbase() as chatbase, FakeSlack() as slack, aiohttp.ClientSession() as s:
        bridge = await Bridge(bridge_env(tmp_path, chatbase, slack, redis_url, redis_prefix),
                              tmp_path).start()
        try:
            for n, question in enumerate(("Where is my order?", "Can I change my plan?")):
                ts = f"170000000{n}.000100"
                chatbase.script(Answer(text=f"About: {question}"))
                assert await deliver(s, bridge, slack, event_envelope(
                    mention_event(text=f"<@UBOT> {question}", ts=ts))) == 200
                await slack.wait_for(lambda ts=ts: any(
                    m.text.startswith("About:") for m in slack.thread("C0CHAN", ts)))
            older = min(chatbase.conversations.values(), key=lambda c: c.seq)
            assert await deliver(s, bridge, slack, event_envelope(home_opened_event())) == 200
            await slack.wait_for(lambda: "U0ASKER" in slack.home_views)
            listed = json.dumps(slack.home_views["U0ASKER"])
            assert "Where is my order?" in listed and "Can I change my plan?" in listed
            # Another person's Home tab does not list them.
            assert await deliver(s, bridge, slack, event_envelope(
                home_opened_event(user="U0OTHER"))) == 200
            await slack.wait_for(lambda: "U0OTHER" in slack.home_views)
            assert "Where is my order?" not in json.dumps(slack.home_views["U0OTHER"])
            # Continue on the older one: a thread in the DM; a reply there continues it.
            await _interact(s, bridge, slack, home_action(action_id=home.CONTINUE,
                                                          value=older.id))
            await slack.wait_for(lambda: bool(slack.dms) and bool(
                slack.thread(slack.dms["U0ASKER"], None)))
            dm = slack.dms["U0ASKER"]
            [heading] = slack.thread(dm, None)
            assert "Where is my order?" in heading.text
            chatbase.script(Answer(text="It ships tomorrow."))
            assert await deliver(s, bridge, slack, event_envelope(message_event(
                text="Any news?", ts="1700000009.000100", channel=dm,
                thread_ts=heading.ts))) == 200
            await chatbase.wait_for(lambda: len(chatbase.chat_calls) == 3, within=30)
            assert chatbase.chat_calls[-1].body["conversationId"] == older.id
        finally:
            assert await bridge.stop() == 0
        assert "Any news?" not in bridge.log and "Where is my order?" not in bridge.log
