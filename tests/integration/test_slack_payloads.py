"""Every real Slack payload in tests/fixtures/slack_events/ (SOURCES.md names each source)
replayed through the real HTTP endpoint, signed, with the expected outcome (issue 13)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app.settings import Settings
from bridge.core import notices
from tests.fakes.slack import event_envelope
from tests.fakes.slack_stack import SlackStack, slack_stack

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slack_events"

# fixture → (outcome, source as in SOURCES.md)
CASES: dict[str, tuple[str, str]] = {
    "app_home_opened_home.json": ("ignored", "MercuryTechnologies/slack-web golden"),
    "app_home_opened_messages.json": ("prompts", "MercuryTechnologies/slack-web golden"),
    # Its bot user is also the event's user, so Bolt drops it as the app's own event.
    "app_home_opened_org_wide_install.json": ("ignored", "bolt-python test_events_org_apps"),
    "agent_session_stopped_docs_example.json": ("session", "docs.slack.dev agent_session_stopped"),
    "app_mention_docs_example.json": ("answered", "docs.slack.dev app_mention"),
    "app_mention_shared_channels_test.json": ("answered", "bolt-python shared channels"),
    "message_bot_message.json": ("ignored", "zulip/zulip slack webhook fixture"),
    "message_changed.json": ("ignored", "bolt-python test_message_changed"),
    "message_deleted.json": ("ignored", "MercuryTechnologies/slack-web golden"),
    "message_im.json": ("answered", "MercuryTechnologies/slack-web golden"),
    "message_im_file_share_thin_file.json": ("answered", "MercuryTechnologies/slack-web"),
    "message_org_wide_install_bare_mention.json": ("prompted", "bolt-python org apps"),
    "message_rich_text_user_mentions.json": ("answered", "zulip/zulip slack fixture"),
    "message_slack_connect_thread_reply.json": ("ignored", "gathertown/grapevine"),
    "message_thread_broadcast.json": ("ignored", "bolt-python thread_broadcast"),
    "message_thread_reply.json": ("ignored", "mehdigmira/basehook seed_data.sql"),
    "reaction_added_docs_example.json": ("ignored", "docs.slack.dev reaction_added"),
    "reaction_added_shared_channel.json": ("ignored", "bolt-python shared channels"),
    "reaction_removed_docs_example.json": ("ignored", "docs.slack.dev reaction_removed"),
    "url_verification.json": ("challenge", "zulip/zulip; api.slack.com url_verification"),
}


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    if loaded.get("type") not in ("event_callback", "url_verification"):
        # Published as the inner event only (SOURCES.md): delivered in Slack's envelope.
        loaded = event_envelope(loaded)
    return loaded


def test_every_fixture_has_a_case() -> None:
    assert sorted(CASES) == sorted(p.name for p in FIXTURES.glob("*.json"))


def bot_of(body: dict[str, Any]) -> str:
    auths = body.get("authorizations") or [{}]
    return str(auths[0].get("user_id") or "UBOT")


@pytest.fixture
async def make_stack(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[Any]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as exits:
        async def build(bot: str) -> SlackStack:
            return await exits.enter_async_context(
                slack_stack(redis_url, redis_prefix, fake={"bot_user_id": bot}))
        yield build


@pytest.mark.parametrize("name", sorted(CASES))
async def test_real_payload_is_handled(make_stack: Any, name: str) -> None:
    outcome, source = CASES[name]
    body = load(name)
    stack: SlackStack = await make_stack(bot_of(body))
    delivered = await stack.deliver(body)
    again = await stack.deliver(body, retry_num=1)  # Slack's redelivery: still once
    assert (delivered.status, again.status) == (200, 200), source
    await stack.idle()
    chat = stack.chatbase.chat_calls
    written = [m for m in stack.slack.messages.values() if not m.deleted]
    if outcome == "answered":
        assert len(chat) == 1, source
        assert len(written) == 1 and written[0].text.strip(), source
    elif outcome == "prompted":
        # A bare mention: a friendly prompt in a thread under it, no Chatbase call.
        assert chat == [], source
        assert [m.text for m in written] == [notices.EMPTY_MESSAGE], source
        assert written[0].thread_ts == body["event"]["ts"], source
    elif outcome == "challenge":
        assert body["challenge"] in delivered.body, source
    elif outcome == "prompts":
        # The messages tab: the suggested prompts, set on the user's DM with the app.
        assert chat == [] and written == [], source
        prompts = stack.slack.prompts_set
        assert prompts and {p["channel_id"] for p in prompts} == {body["event"]["channel"]}
        defaults = [p.model_dump() for p in
                    Settings.model_fields["slack_suggested_prompts"].default]
        assert prompts[0]["prompts"] == defaults, source
    elif outcome == "session":
        # A stop with no answer running: the session is moved away from processing.
        assert chat == [] and written == [], source
        event = body["event"]
        assert stack.slack.session(event["channel"], event["thread_ts"]).status == "active"
    else:
        assert chat == [] and written == [], source
        assert stack.slack.prompts_set == [] and stack.slack.sessions == {}, source
