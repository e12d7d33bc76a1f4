"""Agent sessions and suggested prompts against the fake Slack Web API, through the real SDK."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.agent import TITLE_MAX, AgentSessions, SuggestedPrompts, session_title
from adapters.slack.sink import ReplyTarget, SlackApi, SlackPacing, SlackSink
from bridge.app.metrics import Metrics
from tests.fakes.slack import FakeSlack

THREAD = "1700000000.000100"


def sink_for(api: SlackApi, sessions: AgentSessions, *, question: str = "How do refunds work?",
             thread: str = THREAD, retrying: SlackApi | None = None) -> SlackSink:
    return SlackSink(
        api=api, retrying_api=retrying or api,
        target=ReplyTarget(workspace="T0TEAM", channel="C0CHAN", thread_ts=thread,
                           asker="U0ASKER", question=question),
        stream=True, feedback_buttons=False, pacing=SlackPacing(), sessions=sessions,
    )


async def answer(sink: SlackSink, text: str = "Answer") -> None:
    await sink.working()
    ts = await sink.post(text, final=True)
    await sink.finish([ts], answered=True)


def api_for(slack: FakeSlack, session: aiohttp.ClientSession, *, retry: bool = False) -> SlackApi:
    handlers: list[AsyncRetryHandler] = (
        [AsyncRateLimitErrorRetryHandler(max_retry_count=2)] if retry else [])
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, session=session,
                            retry_handlers=handlers)
    return SlackApi(client=client, metrics=Metrics(), timeout=10.0)


def test_the_title_is_the_question_on_one_line_within_slacks_limit() -> None:
    assert session_title("  How do\n\nrefunds   work? ") == "How do refunds work?"
    long = session_title("word " * 100)
    assert long is not None and len(long) == TITLE_MAX and long.endswith("…")
    assert session_title("   ") is None and session_title(None) is None


async def test_a_reply_runs_in_a_session_processing_then_active(
    slack: FakeSlack, api: SlackApi
) -> None:
    sessions = AgentSessions()
    await answer(sink_for(api, sessions, question="How do\nrefunds work? " + "x" * 300))
    session = slack.session("C0CHAN", THREAD)
    assert session.history == ["processing", "active"]
    assert session.initiator == "U0ASKER"
    assert session.title is not None and session.title.startswith("How do refunds work? x")
    assert len(session.title) == TITLE_MAX
    assert sessions.enabled is True
    # The session shows the work: no "is thinking…" status as well.
    assert slack.calls_to("assistant.threads.setStatus") == []


async def test_an_app_that_is_not_an_agent_falls_back_once_for_the_process(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.slack")
    async with FakeSlack(agent=False) as slack:
        api = api_for(slack, session)
        sessions = AgentSessions()
        for n in range(3):
            await answer(sink_for(api, sessions, thread=f"170000000{n}.000100"))
        refused = slack.calls_to("agents.sessions.setStatus")
        assert len(refused) == 1 and refused[0].error == "missing_scope"
        assert sessions.enabled is False
        statuses = [c.args["status"] for c in slack.calls_to("assistant.threads.setStatus")]
        assert statuses == ["is thinking…", ""] * 3
        assert slack.sessions == {}
    said = [r for r in caplog.records if "not declared as an agent" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert "manifest" in said[0].getMessage()


async def test_a_throttled_session_call_decides_nothing(slack: FakeSlack, api: SlackApi) -> None:
    sessions = AgentSessions()
    slack.fail_next("agents.sessions.setStatus", "ratelimited")
    first = sink_for(api, sessions)
    await first.working()
    assert sessions.enabled is None
    assert [c.args["status"] for c in slack.calls_to("assistant.threads.setStatus")] == [
        "is thinking…"]
    await first.finish([], answered=False)
    await answer(sink_for(api, sessions, thread="1700000009.000100"))
    assert sessions.enabled is True
    assert slack.session("C0CHAN", "1700000009.000100").history == ["processing", "active"]


async def test_a_throttled_active_call_is_retried_after_retry_after(
    slack: FakeSlack, session: aiohttp.ClientSession, api: SlackApi
) -> None:
    retrying = api_for(slack, session, retry=True)
    slack.fail_next("agents.sessions.setStatus", "ratelimited", after=1)
    await answer(sink_for(api, AgentSessions(), retrying=retrying))
    assert [c.status for c in slack.calls_to("agents.sessions.setStatus")] == [200, 429, 200]
    assert slack.session("C0CHAN", THREAD).history == ["processing", "active"]


async def test_a_missing_stop_subscription_is_a_warning_said_once(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.slack")
    async with FakeSlack(stop_subscribed=False) as slack:
        api = api_for(slack, session)
        sessions = AgentSessions()
        for n in range(2):
            await answer(sink_for(api, sessions, thread=f"170000000{n}.000100"))
        assert len(slack.calls_to("agents.sessions.setStatus")) == 4
    warned = [r for r in caplog.records if "agent_session_stopped" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "event" in warned[0].getMessage()


async def test_suggested_prompts_go_to_the_messages_tab_channel(
    slack: FakeSlack, api: SlackApi
) -> None:
    prompts = [{"title": "Start", "message": "How do I start?"}]
    await SuggestedPrompts(prompts).show(api, channel="D0DM")
    [call] = slack.calls_to("assistant.threads.setSuggestedPrompts")
    assert call.args["channel_id"] == "D0DM" and call.args["prompts"] == prompts
    assert "thread_ts" not in call.args  # it makes the call fail silently for agent apps
    await SuggestedPrompts([]).show(api, channel="D0DM")
    assert len(slack.calls_to("assistant.threads.setSuggestedPrompts")) == 1


async def test_refused_suggested_prompts_are_not_tried_on_every_open(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.slack")
    async with FakeSlack(agent=False) as slack:
        prompts = SuggestedPrompts([{"title": "Start", "message": "How do I start?"}])
        api = api_for(slack, session)
        for _ in range(3):
            await prompts.show(api, channel="D0DM")
        assert len(slack.calls_to("assistant.threads.setSuggestedPrompts")) == 1
    assert len([r for r in caplog.records if "suggested prompts" in r.getMessage()]) == 1
