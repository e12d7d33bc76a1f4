"""SlackAdapter wiring with a small in-test Relay: what reaches the core, the catch-all,
configuration errors and readiness. (The real service is in tests/integration.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.slack.adapter import EVENTS_PATH, SOMETHING_WENT_WRONG, SlackAdapter
from adapters.slack.sink import POST_MAX_CHARS
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.errors import ConfigError, PlatformError
from bridge.core.models import (
    InboundFeedbackButton,
    InboundMessage,
    InboundReaction,
    Place,
    Platform,
    ReplyRecord,
)
from bridge.core.ports import ReplySink, SinkOpener
from tests.fakes.slack import FakeSlack, event_envelope, mention_event, message_event

TS = "1700000001.000100"


@dataclass
class Relay:
    """Records what the adapter hands over; answers with a fixed text or fails."""

    answer: str = "Hi."
    fail: bool = False
    conversations: set[str] = field(default_factory=set)
    messages: list[InboundMessage] = field(default_factory=list)
    reactions: list[InboundReaction] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)

    async def handle_message(self, message: InboundMessage, sink: ReplySink) -> None:
        self.messages.append(message)
        await sink.working()
        if self.fail:
            raise RuntimeError("the core broke")
        part = await sink.post(self.answer, final=True)
        await sink.finish([part], answered=True)

    async def has_conversation(self, message: InboundMessage) -> bool:
        return message.conversation_thread in self.conversations

    async def handle_reaction(self, reaction: InboundReaction, open_sink: SinkOpener) -> None:
        self.reactions.append(reaction)

    async def handle_feedback_button(self, press: InboundFeedbackButton) -> None:
        return None

    async def reset(self, place: Place, author: str) -> bool:
        return False

    async def stop(self, handle: str) -> bool:
        self.stops.append(handle)
        return False


@dataclass
class Running:
    slack: FakeSlack
    relay: Relay
    adapter: SlackAdapter
    url: str
    session: aiohttp.ClientSession

    async def deliver(self, body: dict[str, Any]) -> int:
        raw = json.dumps(body)
        async with self.session.post(self.url, data=raw,
                                     headers=self.slack.signed_headers(raw)) as response:
            return response.status


def settings_for(slack: FakeSlack, **extra: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, SLACK_BOT_TOKEN=slack.bot_token, SLACK_API_URL=slack.api_url,
        SLACK_SIGNING_SECRET=slack.signing_secret, **extra,
    )


@pytest.fixture
async def running(slack: FakeSlack, session: aiohttp.ClientSession) -> AsyncIterator[Running]:
    relay = Relay()
    app = web.Application()
    adapter = SlackAdapter(settings=settings_for(slack), relay=relay, metrics=Metrics(),
                           http_app=app, session=session)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        assert not adapter.is_ready()
        await adapter.start()
        yield Running(slack, relay, adapter, str(server.make_url(EVENTS_PATH)), session)
    finally:
        await adapter.close()
        await server.close()


async def test_start_learns_the_bot_identity(running: Running) -> None:
    assert running.adapter.is_ready()
    identity = running.adapter.identity
    assert identity is not None
    assert (identity.user_id, identity.bot_id, identity.team_id) == ("UBOT", "BBOT", "T0TEAM")
    assert [c.method for c in running.slack.calls] == ["auth.test"]


async def test_a_follow_up_reaches_the_core_only_in_a_known_conversation(
    running: Running,
) -> None:
    def follow_up(ts: str) -> dict[str, Any]:
        return event_envelope(message_event(text="more", ts=ts, channel="C0CHAN",
                                            channel_type="channel", thread_ts=TS))

    assert await running.deliver(follow_up("1700000002.000100")) == 200
    await running.adapter.wait_idle()
    assert running.relay.messages == []
    running.relay.conversations.add(TS)
    await running.deliver(follow_up("1700000003.000100"))
    await running.adapter.wait_idle()
    assert [m.message_id for m in running.relay.messages] == ["1700000003.000100"]
    assert running.slack.thread_texts("C0CHAN", TS) == ["Hi."]


async def test_the_catch_all_tells_the_user_and_clears_the_status(running: Running) -> None:
    running.relay.fail = True
    await running.deliver(event_envelope(mention_event(text="<@UBOT> hi", ts=TS)))
    await running.adapter.wait_idle()
    assert running.slack.thread_texts("C0CHAN", TS) == [SOMETHING_WENT_WRONG]
    # The agent session shows the work and is never left processing.
    assert running.slack.session("C0CHAN", TS).history == ["processing", "active"]
    assert running.slack.calls_to("assistant.threads.setStatus") == []


async def test_only_the_bots_messages_reactions_reach_the_core(running: Running) -> None:
    ours = {"type": "reaction_added", "user": "U0ASKER", "reaction": "+1", "item_user": "UBOT",
            "item": {"type": "message", "channel": "C0CHAN", "ts": TS}, "event_ts": "1.2"}
    theirs = {**ours, "item_user": "U0OTHER"}
    await running.deliver(event_envelope(ours))
    await running.deliver(event_envelope(theirs))
    await running.adapter.wait_idle()
    assert [r.emoji for r in running.relay.reactions] == ["+1"]


async def test_open_sink_rewrites_in_place_with_post_and_update(running: Running) -> None:
    record = ReplyRecord(
        conversation_id="c", assistant_message_id="m", conversation_key="k", asker="U0ASKER",
        platform=Platform.SLACK, workspace="T0TEAM", channel="C0CHAN", thread=TS,
        part_ids=("1.1",),
    )
    sink = running.adapter.open_sink(record)
    assert sink.limits.max_chars == POST_MAX_CHARS
    assert sink.budget("post").key == "slack:T0TEAM:C0CHAN:chat.postMessage"


async def test_close_cancels_work_in_flight(running: Running) -> None:
    started = asyncio.Event()

    async def stuck(message: InboundMessage, sink: ReplySink) -> None:
        started.set()
        await asyncio.Event().wait()

    running.relay.handle_message = stuck  # type: ignore[method-assign]
    await running.deliver(event_envelope(mention_event(text="<@UBOT> hi", ts=TS)))
    await started.wait()
    assert running.adapter.in_flight == 1
    await running.adapter.close()
    assert running.adapter.in_flight == 0
    assert not running.adapter.is_ready()


async def test_http_mode_needs_a_signing_secret_and_the_http_server(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    no_secret = Settings(  # type: ignore[call-arg]
        _env_file=None, SLACK_BOT_TOKEN=slack.bot_token, SLACK_API_URL=slack.api_url,
    )
    adapter = SlackAdapter(settings=no_secret, relay=Relay(), metrics=Metrics(),
                           http_app=web.Application(), session=session)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        await adapter.start()
    no_server = SlackAdapter(settings=settings_for(slack), relay=Relay(), metrics=Metrics(),
                             http_app=None, session=session)
    with pytest.raises(ConfigError, match="HTTP server"):
        await no_server.start()
    assert slack.calls == []


async def test_an_unreachable_slack_is_a_clear_error(session: aiohttp.ClientSession) -> None:
    async with FakeSlack() as slack:
        settings = settings_for(slack)
    # The fake is gone: nothing listens at SLACK_API_URL any more.
    adapter = SlackAdapter(settings=settings, relay=Relay(), metrics=Metrics(),
                           http_app=web.Application())
    with pytest.raises(PlatformError, match="SLACK_API_URL"):
        await adapter.start()
    await adapter.close()
