"""Slack over Socket Mode: the adapter connects to the fake's WebSocket, receives envelopes,
acknowledges them, and answers through the real RelayService; plus Bolt's own Socket Mode
dispatch (``AsyncBoltRequest(mode="socket_mode")``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.slack.adapter import SlackAdapter
from bridge.app.metrics import Metrics
from bridge.app.settings import Settings
from bridge.core.errors import ConfigError
from tests.fakes.chatbase import Answer
from tests.fakes.slack import (
    FakeSlack,
    block_action,
    event_envelope,
    mention_event,
    message_event,
    slash_command,
)
from tests.fakes.slack_stack import SlackStack, slack_stack

TS = "1700000001.000100"


@pytest.fixture
async def stack(redis_url: str, redis_prefix: str) -> AsyncIterator[SlackStack]:
    async with slack_stack(redis_url, redis_prefix, mode="socket") as built:
        yield built


async def test_socket_mode_connects_and_answers_events(stack: SlackStack) -> None:
    assert stack.adapter.is_ready()
    assert stack.slack.socket_connections == 1
    stack.chatbase.script(Answer(text="Over the socket."))
    envelope = await stack.slack.send_envelope(
        "events_api", event_envelope(mention_event(text="<@UBOT> socket?", ts=TS))
    )
    ack = await stack.slack.wait_ack(envelope)
    assert ack == {"envelope_id": envelope}
    await stack.idle()
    assert stack.slack.thread_texts("C0CHAN", TS) == ["Over the socket."]
    assert stack.chatbase.chat_calls[0].body["message"] == "socket?"


async def test_socket_mode_retries_are_answered_once(stack: SlackStack) -> None:
    body = event_envelope(message_event(text="only once", ts=TS))
    first = await stack.slack.send_envelope("events_api", body)
    again = await stack.slack.send_envelope("events_api", body, retry_attempt=1)
    await stack.slack.wait_ack(first)
    await stack.slack.wait_ack(again)
    await stack.idle()
    assert len(stack.chatbase.chat_calls) == 1
    assert len(stack.slack.thread("D0DM", None)) == 1


async def test_bolt_socket_mode_dispatch_needs_no_signature(stack: SlackStack) -> None:
    stack.chatbase.script(Answer(text="Dispatched."))
    response = await stack.dispatch_socket(
        event_envelope(mention_event(text="<@UBOT> direct", ts=TS)), retry_num=0
    )
    assert response.status == 200
    again = await stack.dispatch_socket(
        event_envelope(mention_event(text="<@UBOT> direct", ts=TS), event_id="EvSame"),
        retry_num=1,
    )
    assert again.status == 200
    await stack.idle()
    assert stack.slack.thread_texts("C0CHAN", TS)[0] == "Dispatched."


async def test_slash_command_and_button_over_the_socket(stack: SlackStack) -> None:
    stack.chatbase.script(Answer(text="Noted."))
    await stack.slack.send_envelope("events_api", event_envelope(message_event(text="hi",
                                                                               ts=TS)))
    await stack.slack.wait_for(lambda: bool(stack.slack.thread("D0DM", None)))
    await stack.idle()
    [reply] = stack.slack.thread("D0DM", None)
    pressed = await stack.slack.send_envelope(
        "interactive", block_action(value="positive", channel="D0DM", message_ts=reply.ts)
    )
    assert (await stack.slack.wait_ack(pressed))["envelope_id"] == pressed
    await stack.idle()
    assert [c.feedback for c in stack.chatbase.feedback_calls] == ["positive"]
    reset = await stack.slack.send_envelope("slash_commands", slash_command())
    ack = await stack.slack.wait_ack(reset)
    assert ack["payload"]["text"].startswith("Done.")
    assert ack["payload"]["response_type"] == "ephemeral"


async def test_stop_intake_closes_the_socket(stack: SlackStack) -> None:
    await stack.adapter.stop_intake()
    await stack.slack.wait_for(lambda: stack.slack.socket_connections == 0)
    assert not stack.adapter.is_ready()


async def test_a_wrong_app_token_is_a_clear_config_error(redis_url: str) -> None:
    async with FakeSlack() as slack:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, SLACK_BOT_TOKEN=slack.bot_token, SLACK_API_URL=slack.api_url,
            SLACK_APP_TOKEN="xapp-wrong", REDIS_URL=redis_url,
        )
        adapter = SlackAdapter(settings=settings, relay=_NoRelay(), metrics=Metrics(),
                               http_app=None)
        with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
            await adapter.start()
        await adapter.close()
        assert slack.socket_connections == 0


async def test_a_wrong_bot_token_is_a_clear_config_error(redis_url: str) -> None:
    async with FakeSlack() as slack:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, SLACK_BOT_TOKEN="xoxb-wrong", SLACK_API_URL=slack.api_url,
            SLACK_APP_TOKEN=slack.app_token, REDIS_URL=redis_url,
        )
        adapter = SlackAdapter(settings=settings, relay=_NoRelay(), metrics=Metrics(),
                               http_app=None)
        with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
            await adapter.start()
        await adapter.close()


class _NoRelay:
    """Never reached: these adapters fail to start."""

    async def handle_message(self, *args: object) -> None:
        raise AssertionError("unexpected")

    async def has_conversation(self, *args: object) -> bool:
        raise AssertionError("unexpected")

    async def handle_reaction(self, *args: object) -> None:
        raise AssertionError("unexpected")

    async def handle_feedback_button(self, *args: object) -> None:
        raise AssertionError("unexpected")

    async def reset(self, *args: object) -> bool:
        raise AssertionError("unexpected")

    async def stop(self, *args: object) -> bool:
        raise AssertionError("unexpected")
